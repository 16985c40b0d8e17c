package meta

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"time"
)

func usage(t testing.TB, db *DB) Usage {
	t.Helper()
	u, err := db.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func freedIDs(t testing.TB, db *DB) []uint64 {
	t.Helper()
	fb, err := db.FreedBlocks(ctx, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, b := range fb {
		ids = append(ids, b.ID)
	}
	return ids
}

func TestFileData(t *testing.T) {
	db, _ := newTestDB(t)
	f := mkfile(t, db, RootIno, "f")
	b1, _ := db.NewBlockID(ctx)
	b2, _ := db.NewBlockID(ctx)
	b3, _ := db.NewBlockID(ctx)
	if b1 == 0 || b2 <= b1 || b3 <= b2 {
		t.Fatalf("block ids %d %d %d", b1, b2, b3)
	}
	mtime := time.Unix(5000, 5)
	a, err := db.UpdateFile(ctx, f.Ino, FileUpdate{
		Chunks: []Chunk{{Index: 0, Len: ChunkSize, BlockID: b1}, {Index: 2, Len: 100, BlockID: b2}},
		Size:   2*ChunkSize + 100,
		Mtime:  mtime,
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 2*ChunkSize+100 || a.Used != ChunkSize+100 || !a.Mtime.Equal(mtime) {
		t.Fatalf("after write: %+v", a)
	}
	if u := usage(t, db); u.UsedBytes != ChunkSize+100 || u.Inodes != 2 {
		t.Fatalf("usage %+v", u)
	}
	cs, err := db.Chunks(ctx, f.Ino, 0, ^uint64(0))
	if err != nil || len(cs) != 2 || cs[0].BlockID != b1 || cs[1].Index != 2 || cs[1].Len != 100 {
		t.Fatalf("chunks = %+v, %v", cs, err)
	}
	if cs, _ := db.Chunks(ctx, f.Ino, 1, 2); len(cs) != 0 {
		t.Fatalf("hole has chunks %+v", cs)
	}
	checkClean(t, db)

	// Overwrite chunk 0 with a new block, turn chunk 2 into a hole.
	a, err = db.UpdateFile(ctx, f.Ino, FileUpdate{
		Chunks: []Chunk{{Index: 0, Len: 10, BlockID: b3}},
		Holes:  []uint64{2},
		Size:   2*ChunkSize + 100,
	})
	if err != nil || a.Used != 10 {
		t.Fatalf("overwrite: %+v, %v", a, err)
	}
	if ids := freedIDs(t, db); len(ids) != 2 || ids[0] != b1 || ids[1] != b2 {
		t.Fatalf("freed = %v, want [%d %d]", ids, b1, b2)
	}
	checkClean(t, db)

	// Inline data.
	a, err = db.UpdateFile(ctx, f.Ino, FileUpdate{Chunks: []Chunk{{Index: 1, Len: 5, Inline: []byte("hello")}}, Size: 2*ChunkSize + 100})
	if err != nil || a.Used != 15 {
		t.Fatalf("inline: %+v, %v", a, err)
	}
	cs, _ = db.Chunks(ctx, f.Ino, 1, 2)
	if len(cs) != 1 || !bytes.Equal(cs[0].Inline, []byte("hello")) || cs[0].BlockID != 0 {
		t.Fatalf("inline chunk = %+v", cs)
	}

	// Truncate down: drop chunk 1, keep chunk 0 (caller trims it).
	a, err = db.TruncateChunks(ctx, f.Ino, 1)
	if err != nil || a.Used != 10 {
		t.Fatalf("truncate: %+v, %v", a, err)
	}
	size := uint64(10)
	if _, err := db.SetAttr(ctx, f.Ino, SetAttr{Size: &size}); err != nil {
		t.Fatal(err)
	}
	if u := usage(t, db); u.UsedBytes != 10 {
		t.Fatalf("usage %+v", u)
	}
	checkClean(t, db)

	// Unlink and purge: everything freed.
	db.Unlink(ctx, RootIno, "f")
	if u := usage(t, db); u.UsedBytes != 10 || u.Inodes != 2 {
		t.Fatalf("usage of orphan %+v", u)
	}
	if err := db.Purge(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if u := usage(t, db); u.UsedBytes != 0 || u.Inodes != 1 {
		t.Fatalf("usage after purge %+v", u)
	}
	if ids := freedIDs(t, db); len(ids) != 3 {
		t.Fatalf("freed = %v", ids)
	}
	var refs []uint64
	db.ReferencedBlocks(ctx, func(id uint64) error { refs = append(refs, id); return nil })
	if len(refs) != 0 {
		t.Fatalf("referenced = %v", refs)
	}
	if err := db.ForgetFreed(ctx, []uint64{b1, b2}); err != nil {
		t.Fatal(err)
	}
	if ids := freedIDs(t, db); len(ids) != 1 || ids[0] != b3 {
		t.Fatalf("freed after forget = %v", ids)
	}
	if fb, _ := db.FreedBlocks(ctx, time.Now().Add(-time.Hour)); len(fb) != 0 {
		t.Fatalf("freed before cutoff = %v", fb)
	}
	checkClean(t, db)

	if _, err := db.UpdateFile(ctx, RootIno, FileUpdate{}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("UpdateFile on a dir: %v", err)
	}
	if _, err := db.UpdateFile(ctx, 9999, FileUpdate{}); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("UpdateFile on missing: %v", err)
	}
}

func TestBlockIDsSurviveCrash(t *testing.T) {
	db, path := newTestDB(t)
	var last uint64
	for range 10 {
		id, err := db.NewBlockID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	// Crash without Commit: the reservation was committed anyway.
	crashCopy := crash(t, db, path)
	db2, err := Open(ctx, crashCopy, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close(ctx)
	id, err := db2.NewBlockID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id <= last {
		t.Fatalf("block id %d after crash repeats (last before: %d)", id, last)
	}
	// Many reservations in a row stay increasing.
	prev := id
	for range 3 * blockReserve {
		id, err := db2.NewBlockID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("id %d after %d", id, prev)
		}
		prev = id
	}
	checkClean(t, db2)
}

func TestReadOnly(t *testing.T) {
	db, path := newTestDB(t)
	f := mkfile(t, db, RootIno, "committed")
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mkfile(t, db, RootIno, "pending")

	// A reader while the writer holds its transaction sees the committed state.
	ro, err := Open(ctx, path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := ro.Lookup(ctx, RootIno, "committed"); err != nil || a.Ino != f.Ino {
		t.Fatalf("ro lookup committed = %+v, %v", a, err)
	}
	if _, err := ro.Lookup(ctx, RootIno, "pending"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("ro sees uncommitted entry: %v", err)
	}
	if _, err := ro.Mknod(ctx, RootIno, "x", syscall.S_IFREG, 0, 0, 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("ro mknod: %v", err)
	}
	if u := usage(t, ro); u.Inodes != 2 {
		t.Fatalf("ro usage = %+v", u)
	}
	checkClean(t, ro)
	// The writer still works while the reader is open, and the reader sees its commits.
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Lookup(ctx, RootIno, "pending"); err != nil {
		t.Fatalf("ro after commit: %v", err)
	}
	if u := usage(t, ro); u.Inodes != 3 {
		t.Fatalf("ro usage = %+v", u)
	}
	if err := ro.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Read-only open with no writer around.
	if err := db.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ro, err = Open(ctx, path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close(ctx)
	mustLookup(t, ro, RootIno, "pending")
	checkClean(t, ro)
}

// TestChunkUsed checks that a file's Used counts its chunks' used bytes,
// not their lengths, so that a hole inside a chunk takes no space.
func TestChunkUsed(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		len      uint32
		used     uint32
		wantUsed uint64
	}{
		{"whole chunk", 4 * mib, 4 * mib, 4 * mib},
		{"a hole inside", 4 * mib, 2 * mib, 2 * mib},
		{"unknown means the length", 3 * mib, 0, 3 * mib},
		{"never more than the length", mib, 2 * mib, mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := newTestDB(t)
			f := mkfile(t, db, RootIno, "f")
			id, err := db.NewBlockID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a, err := db.UpdateFile(ctx, f.Ino, FileUpdate{Chunks: []Chunk{{Index: 0, Len: tt.len, Used: tt.used, BlockID: id}}, Size: uint64(tt.len)})
			if err != nil {
				t.Fatal(err)
			}
			if a.Used != tt.wantUsed || usage(t, db).UsedBytes != tt.wantUsed {
				t.Fatalf("Used %d, volume %d; want %d", a.Used, usage(t, db).UsedBytes, tt.wantUsed)
			}
			cs, err := db.Chunks(ctx, f.Ino, 0, 1)
			if err != nil || len(cs) != 1 || uint64(cs[0].Used) != tt.wantUsed {
				t.Fatalf("chunks: %+v, %v", cs, err)
			}
			checkClean(t, db)
			// Dropping the chunk gives back exactly what it used.
			if a, err = db.UpdateFile(ctx, f.Ino, FileUpdate{Holes: []uint64{0}, Size: uint64(tt.len)}); err != nil || a.Used != 0 {
				t.Fatalf("after the hole: Used %d, %v", a.Used, err)
			}
			checkClean(t, db)
		})
	}
}
