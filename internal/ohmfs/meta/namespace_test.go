package meta

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

const (
	noreplace = 1
	exchange  = 2
)

func TestRenameErrors(t *testing.T) {
	db, _ := newTestDB(t)
	mkfile(t, db, RootIno, "f")
	mkfile(t, db, RootIno, "g")
	d := mkdir(t, db, RootIno, "d")
	sub := mkdir(t, db, d.Ino, "sub")
	mkdir(t, db, RootIno, "empty")
	full := mkdir(t, db, RootIno, "full")
	mkfile(t, db, full.Ino, "x")

	tests := []struct {
		name             string
		op, on           Ino
		oldName, newName string
		flags            uint32
		want             error
	}{
		{"missing source", RootIno, RootIno, "nope", "x", 0, syscall.ENOENT},
		{"source parent not dir", mustLookup(t, db, RootIno, "f").Ino, RootIno, "a", "x", 0, syscall.ENOTDIR},
		{"target parent missing", RootIno, 9999, "f", "x", 0, syscall.ENOENT},
		{"dir into itself", RootIno, d.Ino, "d", "x", 0, syscall.EINVAL},
		{"dir into own subtree", RootIno, sub.Ino, "d", "x", 0, syscall.EINVAL},
		{"dir over file", RootIno, RootIno, "d", "f", 0, syscall.ENOTDIR},
		{"file over dir", RootIno, RootIno, "f", "empty", 0, syscall.EISDIR},
		{"dir over non-empty dir", RootIno, RootIno, "d", "full", 0, syscall.ENOTEMPTY},
		{"noreplace existing", RootIno, RootIno, "f", "g", noreplace, syscall.EEXIST},
		{"exchange missing target", RootIno, RootIno, "f", "nope", exchange, syscall.ENOENT},
		{"exchange dir into own subtree", RootIno, d.Ino, "d", "sub", exchange, syscall.EINVAL},
		{"both flags", RootIno, RootIno, "f", "g", noreplace | exchange, syscall.EINVAL},
		{"too long", RootIno, RootIno, "f", string(make([]byte, 256)), 0, syscall.ENAMETOOLONG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := db.Rename(ctx, tt.op, tt.oldName, tt.on, tt.newName, tt.flags)
			wantErr(t, tt.name, err, tt.want)
		})
	}
	checkClean(t, db)
	// Nothing moved.
	for _, n := range []string{"f", "g", "d", "empty", "full"} {
		mustLookup(t, db, RootIno, n)
	}
}

func TestRenameOverFile(t *testing.T) {
	db, _ := newTestDB(t)
	a := mkfile(t, db, RootIno, "a")
	b := mkfile(t, db, RootIno, "b")
	if _, err := db.Link(ctx, b.Ino, RootIno, "b2"); err != nil {
		t.Fatal(err)
	}
	// b has two links: replacing one leaves it alive.
	r, err := db.Rename(ctx, RootIno, "a", RootIno, "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ino != b.Ino || r.Nlink != 1 {
		t.Fatalf("replaced = %+v, want ino %d nlink 1", r, b.Ino)
	}
	if got := mustLookup(t, db, RootIno, "b"); got.Ino != a.Ino {
		t.Fatalf("b is %d, want %d", got.Ino, a.Ino)
	}
	if _, err := db.Lookup(ctx, RootIno, "a"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("a still there: %v", err)
	}
	// Now replace its last link: it becomes an orphan.
	r, err = db.Rename(ctx, RootIno, "b", RootIno, "b2", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ino != b.Ino || r.Nlink != 0 {
		t.Fatalf("replaced = %+v, want ino %d nlink 0", r, b.Ino)
	}
	if o, _ := db.Orphans(ctx); len(o) != 1 || o[0] != b.Ino {
		t.Fatalf("orphans = %v", o)
	}
	// Rename without a target returns Ino 0.
	r, err = db.Rename(ctx, RootIno, "b2", RootIno, "c", 0)
	if err != nil || r.Ino != 0 {
		t.Fatalf("rename to new name = %+v, %v", r, err)
	}
	checkClean(t, db)
}

func TestRenameSameInode(t *testing.T) {
	db, _ := newTestDB(t)
	a := mkfile(t, db, RootIno, "a")
	if _, err := db.Link(ctx, a.Ino, RootIno, "a2"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "a2"} {
		r, err := db.Rename(ctx, RootIno, "a", RootIno, n, 0)
		if err != nil || r.Ino != 0 {
			t.Fatalf("rename a -> %s = %+v, %v", n, r, err)
		}
	}
	mustLookup(t, db, RootIno, "a")
	mustLookup(t, db, RootIno, "a2")
	if got := getattr(t, db, a.Ino); got.Nlink != 2 {
		t.Fatalf("nlink = %d", got.Nlink)
	}
	checkClean(t, db)
}

func TestRenameDirs(t *testing.T) {
	db, _ := newTestDB(t)
	p1 := mkdir(t, db, RootIno, "p1")
	p2 := mkdir(t, db, RootIno, "p2")
	d := mkdir(t, db, p1.Ino, "d")
	mkfile(t, db, d.Ino, "inner")
	empty := mkdir(t, db, p2.Ino, "empty")

	// Across directories, over an empty directory.
	r, err := db.Rename(ctx, p1.Ino, "d", p2.Ino, "empty", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ino != empty.Ino || r.Nlink != 0 {
		t.Fatalf("replaced = %+v", r)
	}
	if _, err := db.GetAttr(ctx, empty.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("replaced dir still exists: %v", err)
	}
	if err := db.Purge(ctx, empty.Ino); err != nil {
		t.Fatalf("purge of replaced dir: %v", err)
	}
	if got := getattr(t, db, p1.Ino).Nlink; got != 2 {
		t.Fatalf("p1 nlink = %d, want 2", got)
	}
	if got := getattr(t, db, p2.Ino).Nlink; got != 3 {
		t.Fatalf("p2 nlink = %d, want 3", got)
	}
	if p, err := db.Parent(ctx, d.Ino); err != nil || p != p2.Ino {
		t.Fatalf("parent = %d, %v", p, err)
	}
	mustLookup(t, db, mustLookup(t, db, p2.Ino, "empty").Ino, "inner")
	checkClean(t, db)

	// Move it back up to the root.
	if _, err := db.Rename(ctx, p2.Ino, "empty", RootIno, "top", 0); err != nil {
		t.Fatal(err)
	}
	if got := getattr(t, db, RootIno).Nlink; got != 5 {
		t.Fatalf("root nlink = %d, want 5", got)
	}
	checkClean(t, db)
}

func TestRenameNoreplace(t *testing.T) {
	db, _ := newTestDB(t)
	a := mkfile(t, db, RootIno, "a")
	if _, err := db.Rename(ctx, RootIno, "a", RootIno, "b", noreplace); err != nil {
		t.Fatal(err)
	}
	if got := mustLookup(t, db, RootIno, "b"); got.Ino != a.Ino {
		t.Fatal("b is not a")
	}
	checkClean(t, db)
}

func TestRenameExchange(t *testing.T) {
	db, _ := newTestDB(t)
	p1 := mkdir(t, db, RootIno, "p1")
	p2 := mkdir(t, db, RootIno, "p2")
	f := mkfile(t, db, p1.Ino, "f")
	d := mkdir(t, db, p2.Ino, "d")
	r, err := db.Rename(ctx, p1.Ino, "f", p2.Ino, "d", exchange)
	if err != nil || r.Ino != 0 {
		t.Fatalf("exchange = %+v, %v", r, err)
	}
	if got := mustLookup(t, db, p1.Ino, "f"); got.Ino != d.Ino {
		t.Fatalf("p1/f = %d, want dir %d", got.Ino, d.Ino)
	}
	if got := mustLookup(t, db, p2.Ino, "d"); got.Ino != f.Ino {
		t.Fatalf("p2/d = %d, want file %d", got.Ino, f.Ino)
	}
	if got := getattr(t, db, p1.Ino).Nlink; got != 3 {
		t.Fatalf("p1 nlink = %d, want 3", got)
	}
	if got := getattr(t, db, p2.Ino).Nlink; got != 2 {
		t.Fatalf("p2 nlink = %d, want 2", got)
	}
	if p, _ := db.Parent(ctx, d.Ino); p != p1.Ino {
		t.Fatalf("dir parent = %d", p)
	}
	checkClean(t, db)
}

func TestHardLinks(t *testing.T) {
	db, _ := newTestDB(t)
	d := mkdir(t, db, RootIno, "d")
	f := mkfile(t, db, RootIno, "f")
	a, err := db.Link(ctx, f.Ino, d.Ino, "f2")
	if err != nil || a.Nlink != 2 {
		t.Fatalf("link = %+v, %v", a, err)
	}
	if got := mustLookup(t, db, d.Ino, "f2"); got.Ino != f.Ino || got.Nlink != 2 {
		t.Fatalf("lookup = %+v", got)
	}
	checkClean(t, db)
	a, err = db.Unlink(ctx, RootIno, "f")
	if err != nil || a.Nlink != 1 {
		t.Fatalf("unlink = %+v, %v", a, err)
	}
	if o, _ := db.Orphans(ctx); len(o) != 0 {
		t.Fatalf("orphans = %v", o)
	}
	// Purge of a linked inode is a no-op.
	if err := db.Purge(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	getattr(t, db, f.Ino)
	checkClean(t, db)
}

func TestTimes(t *testing.T) {
	db, _ := newTestDB(t)
	old := time.Unix(1000, 0)
	set := func(ino Ino) {
		t.Helper()
		if _, err := db.SetAttr(ctx, ino, SetAttr{Atime: &old, Mtime: &old, Ctime: &old}); err != nil {
			t.Fatal(err)
		}
	}
	changed := func(what string, ino Ino, mtime, ctime bool) {
		t.Helper()
		a := getattr(t, db, ino)
		if got := !a.Mtime.Equal(old); got != mtime {
			t.Errorf("%s: mtime changed = %v, want %v", what, got, mtime)
		}
		if got := !a.Ctime.Equal(old); got != ctime {
			t.Errorf("%s: ctime changed = %v, want %v", what, got, ctime)
		}
		set(ino)
	}
	d := mkdir(t, db, RootIno, "d")
	f := mkfile(t, db, d.Ino, "f")
	set(RootIno)
	set(d.Ino)
	set(f.Ino)

	mkfile(t, db, d.Ino, "g")
	changed("create: parent", d.Ino, true, true)
	if _, err := db.Link(ctx, f.Ino, d.Ino, "f2"); err != nil {
		t.Fatal(err)
	}
	changed("link: parent", d.Ino, true, true)
	changed("link: target", f.Ino, false, true)
	if _, err := db.Unlink(ctx, d.Ino, "f2"); err != nil {
		t.Fatal(err)
	}
	changed("unlink: parent", d.Ino, true, true)
	changed("unlink: target", f.Ino, false, true)
	if _, err := db.Rename(ctx, d.Ino, "f", RootIno, "f", 0); err != nil {
		t.Fatal(err)
	}
	changed("rename: old parent", d.Ino, true, true)
	changed("rename: new parent", RootIno, true, true)
	changed("rename: target", f.Ino, false, true)
	if err := db.SetXattr(ctx, f.Ino, "user.a", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	changed("setxattr", f.Ino, false, true)
	mode := uint32(0o600)
	a, err := db.SetAttr(ctx, f.Ino, SetAttr{Mode: &mode})
	if err != nil || a.Mode != syscall.S_IFREG|0o600 {
		t.Fatalf("chmod = %+v, %v", a, err)
	}
	changed("chmod", f.Ino, false, true)
	if _, err := db.Lookup(ctx, d.Ino, "g"); err != nil {
		t.Fatal(err)
	}
	changed("lookup: parent", d.Ino, false, false)

	// Nanoseconds survive.
	ns := time.Unix(1234, 567890123)
	if _, err := db.SetAttr(ctx, f.Ino, SetAttr{Mtime: &ns}); err != nil {
		t.Fatal(err)
	}
	if got := getattr(t, db, f.Ino).Mtime; !got.Equal(ns) {
		t.Fatalf("mtime = %v, want %v", got, ns)
	}
}

func TestReadDir(t *testing.T) {
	db, _ := newTestDB(t)
	d := mkdir(t, db, RootIno, "d")
	const n = 600 // more than one batch
	want := map[string]Ino{}
	for i := range n {
		name := string(rune('a'+i%26)) + string(rune('0'+i/26%10)) + string(rune('A'+i/260))
		want[name] = mkfile(t, db, d.Ino, name).Ino
	}
	sub := mkdir(t, db, d.Ino, "zsub")
	want["zsub"] = sub.Ino
	// Remove some, so cookies have gaps.
	for _, name := range []string{"a0A", "b0A"} {
		if _, err := db.Unlink(ctx, d.Ino, name); err != nil {
			t.Fatal(err)
		}
		delete(want, name)
	}
	var last uint64 = 2
	got := map[string]Ino{}
	err := db.ReadDir(ctx, d.Ino, 0, true, func(e DirEntry) bool {
		if e.Cookie <= last {
			t.Fatalf("cookie %d after %d", e.Cookie, last)
		}
		last = e.Cookie
		if e.Attr == nil || e.Attr.Ino != e.Ino || e.Mode != e.Attr.Mode {
			t.Fatalf("entry %+v", e)
		}
		got[e.Name] = e.Ino
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("entry %q = %d, want %d", k, got[k], v)
		}
	}
	// Resume from an offset: stop after 10, continue from the 10th cookie.
	var first []DirEntry
	db.ReadDir(ctx, d.Ino, 0, false, func(e DirEntry) bool {
		first = append(first, e)
		return len(first) < 10
	})
	if len(first) != 10 || first[0].Attr != nil {
		t.Fatalf("first = %d entries", len(first))
	}
	count := 10
	db.ReadDir(ctx, d.Ino, first[9].Cookie, false, func(e DirEntry) bool {
		if e.Cookie <= first[9].Cookie {
			t.Fatalf("resumed at cookie %d", e.Cookie)
		}
		count++
		return true
	})
	if count != len(want) {
		t.Fatalf("resumed listing has %d entries, want %d", count, len(want))
	}
	// fn may call back into the DB.
	db.ReadDir(ctx, d.Ino, 0, false, func(e DirEntry) bool {
		getattr(t, db, e.Ino)
		return true
	})
	// Empty directory.
	db.ReadDir(ctx, sub.Ino, 0, false, func(e DirEntry) bool {
		t.Fatalf("entry %q in empty dir", e.Name)
		return true
	})
	checkClean(t, db)
}

func TestXattrs(t *testing.T) {
	db, _ := newTestDB(t)
	f := mkfile(t, db, RootIno, "f")
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"get absent", func() error { _, err := db.GetXattr(ctx, f.Ino, "user.a"); return err }, syscall.ENODATA},
		{"remove absent", func() error { return db.RemoveXattr(ctx, f.Ino, "user.a") }, syscall.ENODATA},
		{"replace absent", func() error { return db.SetXattr(ctx, f.Ino, "user.a", []byte("x"), 2) }, syscall.ENODATA},
		{"create", func() error { return db.SetXattr(ctx, f.Ino, "user.a", []byte("x"), 1) }, nil},
		{"create existing", func() error { return db.SetXattr(ctx, f.Ino, "user.a", []byte("y"), 1) }, syscall.EEXIST},
		{"replace", func() error { return db.SetXattr(ctx, f.Ino, "user.a", []byte("z"), 2) }, nil},
		{"set", func() error { return db.SetXattr(ctx, f.Ino, "user.b", nil, 0) }, nil},
		{"set on missing inode", func() error { return db.SetXattr(ctx, 9999, "user.b", nil, 0) }, syscall.ENOENT},
		{"get on missing inode", func() error { _, err := db.GetXattr(ctx, 9999, "user.b"); return err }, syscall.ENOENT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.name, tt.op(), tt.want) })
	}
	if v, err := db.GetXattr(ctx, f.Ino, "user.a"); err != nil || string(v) != "z" {
		t.Fatalf("get = %q, %v", v, err)
	}
	if v, err := db.GetXattr(ctx, f.Ino, "user.b"); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("get empty = %q (nil %v), %v", v, v == nil, err)
	}
	names, err := db.ListXattr(ctx, f.Ino)
	if err != nil || len(names) != 2 || names[0] != "user.a" || names[1] != "user.b" {
		t.Fatalf("list = %v, %v", names, err)
	}
	if err := db.RemoveXattr(ctx, f.Ino, "user.a"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetXattr(ctx, f.Ino, "user.a"); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("get after remove: %v", err)
	}
	// Purge takes xattrs along.
	db.Unlink(ctx, RootIno, "f")
	if err := db.Purge(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	checkClean(t, db)
}

// A failed call leaves nothing behind, in the rows or in the counters.
func TestFailedCallIsAtomic(t *testing.T) {
	db, _ := newTestDB(t)
	mkdir(t, db, RootIno, "d")
	full := mkdir(t, db, RootIno, "full")
	mkfile(t, db, full.Ino, "x")
	before, _ := db.Usage(ctx)
	// The rename removes the target entry before it finds it non-empty.
	if _, err := db.Rename(ctx, RootIno, "d", RootIno, "full", 0); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rename: %v", err)
	}
	mustLookup(t, db, RootIno, "full")
	mustLookup(t, db, RootIno, "d")
	if _, err := db.Mknod(ctx, RootIno, "d", syscall.S_IFREG, 0, 0, 0); !errors.Is(err, syscall.EEXIST) {
		t.Fatal(err)
	}
	after, _ := db.Usage(ctx)
	if before != after {
		t.Fatalf("usage %+v -> %+v", before, after)
	}
	checkClean(t, db)
}
