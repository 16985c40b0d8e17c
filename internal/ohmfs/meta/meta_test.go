package meta

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

var ctx = context.Background()

func newTestDB(t testing.TB) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meta.db")
	if err := Create(ctx, path, 1000, 1000, map[string]string{"uuid": "test-uuid", "capacity": "1024"}); err != nil {
		t.Fatal(err)
	}
	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(ctx) })
	return db, path
}

// checkClean fails the test if Check finds anything.
func checkClean(t testing.TB, db *DB) {
	t.Helper()
	probs, err := db.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("check: inode %d: %s", p.Ino, p.Detail)
	}
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func mkfile(t testing.TB, db *DB, parent Ino, name string) Attr {
	t.Helper()
	a, err := db.Mknod(ctx, parent, name, syscall.S_IFREG|0o644, 0, 1000, 1000)
	if err != nil {
		t.Fatalf("mknod %q: %v", name, err)
	}
	return a
}

func mkdir(t testing.TB, db *DB, parent Ino, name string) Attr {
	t.Helper()
	a, err := db.Mknod(ctx, parent, name, syscall.S_IFDIR|0o755, 0, 1000, 1000)
	if err != nil {
		t.Fatalf("mkdir %q: %v", name, err)
	}
	return a
}

func getattr(t testing.TB, db *DB, ino Ino) Attr {
	t.Helper()
	a, err := db.GetAttr(ctx, ino)
	if err != nil {
		t.Fatalf("getattr %d: %v", ino, err)
	}
	return a
}

func TestCreateOpen(t *testing.T) {
	db, path := newTestDB(t)
	root := getattr(t, db, RootIno)
	if root.Mode != syscall.S_IFDIR|0o755 || root.Nlink != 2 || root.Uid != 1000 || root.Gid != 1000 {
		t.Fatalf("root = %+v", root)
	}
	if v, err := db.Setting(ctx, "uuid"); err != nil || v != "test-uuid" {
		t.Fatalf("Setting(uuid) = %q, %v", v, err)
	}
	if v, err := db.Setting(ctx, "nope"); err != nil || v != "" {
		t.Fatalf("Setting(nope) = %q, %v", v, err)
	}
	if err := Create(ctx, path, 0, 0, nil); err == nil {
		t.Fatal("Create over an existing database succeeded")
	}
	if _, err := Open(ctx, filepath.Join(t.TempDir(), "missing.db"), Options{}); err == nil {
		t.Fatal("Open of a missing database succeeded")
	}
	checkClean(t, db)
}

func TestMknodLookupUnlink(t *testing.T) {
	db, _ := newTestDB(t)
	f := mkfile(t, db, RootIno, "a")
	if f.Ino <= RootIno || f.Nlink != 1 || f.Mode != syscall.S_IFREG|0o644 {
		t.Fatalf("mknod = %+v", f)
	}
	got, err := db.Lookup(ctx, RootIno, "a")
	if err != nil || got.Ino != f.Ino {
		t.Fatalf("lookup = %+v, %v", got, err)
	}
	d := mkdir(t, db, RootIno, "d")
	if d.Nlink != 2 {
		t.Fatalf("mkdir nlink = %d", d.Nlink)
	}
	if r := getattr(t, db, RootIno); r.Nlink != 3 {
		t.Fatalf("root nlink after mkdir = %d", r.Nlink)
	}
	longName := strings.Repeat("x", 256)
	tests := []struct {
		name string
		err  error
		op   func() error
	}{
		{"mknod existing", syscall.EEXIST, func() error { _, err := db.Mknod(ctx, RootIno, "a", syscall.S_IFREG|0o644, 0, 0, 0); return err }},
		{"mkdir over file", syscall.EEXIST, func() error { _, err := db.Mknod(ctx, RootIno, "a", syscall.S_IFDIR|0o755, 0, 0, 0); return err }},
		{"mknod in file", syscall.ENOTDIR, func() error { _, err := db.Mknod(ctx, f.Ino, "x", syscall.S_IFREG, 0, 0, 0); return err }},
		{"mknod in missing", syscall.ENOENT, func() error { _, err := db.Mknod(ctx, 9999, "x", syscall.S_IFREG, 0, 0, 0); return err }},
		{"mknod name too long", syscall.ENAMETOOLONG, func() error { _, err := db.Mknod(ctx, RootIno, longName, syscall.S_IFREG, 0, 0, 0); return err }},
		{"mknod 255 bytes", nil, func() error { _, err := db.Mknod(ctx, RootIno, longName[:255], syscall.S_IFREG, 0, 0, 0); return err }},
		{"lookup missing", syscall.ENOENT, func() error { _, err := db.Lookup(ctx, RootIno, "zz"); return err }},
		{"lookup in file", syscall.ENOTDIR, func() error { _, err := db.Lookup(ctx, f.Ino, "zz"); return err }},
		{"lookup too long", syscall.ENAMETOOLONG, func() error { _, err := db.Lookup(ctx, RootIno, longName); return err }},
		{"getattr missing", syscall.ENOENT, func() error { _, err := db.GetAttr(ctx, 9999); return err }},
		{"unlink dir", syscall.EISDIR, func() error { _, err := db.Unlink(ctx, RootIno, "d"); return err }},
		{"unlink missing", syscall.ENOENT, func() error { _, err := db.Unlink(ctx, RootIno, "zz"); return err }},
		{"unlink in file", syscall.ENOTDIR, func() error { _, err := db.Unlink(ctx, f.Ino, "zz"); return err }},
		{"rmdir file", syscall.ENOTDIR, func() error { return db.Rmdir(ctx, RootIno, "a") }},
		{"rmdir missing", syscall.ENOENT, func() error { return db.Rmdir(ctx, RootIno, "zz") }},
		{"symlink", nil, func() error { _, err := db.Symlink(ctx, RootIno, "l", "a/b", 0, 0); return err }},
		{"symlink existing", syscall.EEXIST, func() error { _, err := db.Symlink(ctx, RootIno, "l", "a/b", 0, 0); return err }},
		{"readlink file", syscall.EINVAL, func() error { _, err := db.Readlink(ctx, f.Ino); return err }},
		{"link dir", syscall.EPERM, func() error { _, err := db.Link(ctx, d.Ino, RootIno, "d2"); return err }},
		{"link existing name", syscall.EEXIST, func() error { _, err := db.Link(ctx, f.Ino, RootIno, "d"); return err }},
		{"link missing", syscall.ENOENT, func() error { _, err := db.Link(ctx, 9999, RootIno, "x"); return err }},
		{"parent of file", syscall.ENOTDIR, func() error { _, err := db.Parent(ctx, f.Ino); return err }},
		{"readdir file", syscall.ENOTDIR, func() error { return db.ReadDir(ctx, f.Ino, 0, false, func(DirEntry) bool { return true }) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.name, tt.op(), tt.err) })
	}
	checkClean(t, db)

	u, err := db.Unlink(ctx, RootIno, "a")
	if err != nil || u.Ino != f.Ino || u.Nlink != 0 {
		t.Fatalf("unlink = %+v, %v", u, err)
	}
	if _, err := db.Lookup(ctx, RootIno, "a"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup after unlink: %v", err)
	}
	orph, err := db.Orphans(ctx)
	if err != nil || len(orph) != 1 || orph[0] != f.Ino {
		t.Fatalf("orphans = %v, %v", orph, err)
	}
	checkClean(t, db)
	if err := db.Purge(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetAttr(ctx, f.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("getattr after purge: %v", err)
	}
	if err := db.Rmdir(ctx, RootIno, "d"); err != nil {
		t.Fatal(err)
	}
	if r := getattr(t, db, RootIno); r.Nlink != 2 {
		t.Fatalf("root nlink after rmdir = %d", r.Nlink)
	}
	if tg, err := db.Readlink(ctx, mustLookup(t, db, RootIno, "l").Ino); err != nil || tg != "a/b" {
		t.Fatalf("readlink = %q, %v", tg, err)
	}
	checkClean(t, db)
}

func mustLookup(t testing.TB, db *DB, parent Ino, name string) Attr {
	t.Helper()
	a, err := db.Lookup(ctx, parent, name)
	if err != nil {
		t.Fatalf("lookup %q: %v", name, err)
	}
	return a
}

func TestSchemaVersion(t *testing.T) {
	db, path := newTestDB(t)
	if v, err := schemaVersion(db.c); err != nil || v != len(migrations) {
		t.Fatalf("schema version = %d, %v; want %d", v, err, len(migrations))
	}
	db.Close(ctx)
	c, err := openConn(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.execScript("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	c.close()
	for _, ro := range []bool{false, true} {
		if db, err := Open(ctx, path, Options{ReadOnly: ro}); err == nil {
			db.Close(ctx)
			t.Fatalf("read-only %v: Open of a newer schema succeeded", ro)
		}
	}
}

// Calls from many goroutines are serialized; run with -race.
func TestConcurrentCalls(t *testing.T) {
	db, _ := newTestDB(t)
	done := make(chan error)
	for g := range 4 {
		go func() {
			d, err := db.Mknod(ctx, RootIno, "g"+strconv.Itoa(g), syscall.S_IFDIR|0o755, 0, 0, 0)
			for i := 0; err == nil && i < 200; i++ {
				name := strconv.Itoa(i)
				if _, err = db.Mknod(ctx, d.Ino, name, syscall.S_IFREG|0o644, 0, 0, 0); err != nil {
					break
				}
				if i%50 == 0 {
					err = db.Commit(ctx)
				}
				if i%2 == 0 && err == nil {
					var a Attr
					if a, err = db.Unlink(ctx, d.Ino, name); err == nil {
						err = db.Purge(ctx, a.Ino)
					}
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if u := usage(t, db); u.Inodes != 1+4+4*100 {
		t.Fatalf("usage = %+v", u)
	}
	checkClean(t, db)
}
