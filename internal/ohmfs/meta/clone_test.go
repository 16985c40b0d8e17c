package meta

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// addPack records a pack of pages pages and returns its id.
func addPack(t *testing.T, db *DB, pages uint32) uint64 {
	t.Helper()
	id, err := db.NewBlockID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AddPacks(ctx, []Pack{{ID: id, Pages: pages}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCloneImage clones an image, overwrites pages of each side, and
// checks that the maps stay apart, that packs are counted for both, and
// that a pack is freed only when the last file mapping it is gone.
func TestCloneImage(t *testing.T) {
	db, _ := newTestDB(t)
	src := mkimage(t, db, "src")
	p1 := addPack(t, db, 100)
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: src.Ino, Size: 200 * PageSize, Extents: []Extent{
		{Page: 0, N: 50, Block: p1, BlockPage: 0}, {Page: 100, N: 50, Block: p1, BlockPage: 50},
	}}); err != nil {
		t.Fatal(err)
	}
	dst := mkfile(t, db, RootIno, "dst")
	a, err := db.CloneFile(ctx, src.Ino, dst.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if a.Layout != LayoutImage || a.Size != 200*PageSize || a.Used != 100*PageSize {
		t.Fatalf("clone attrs: layout %d size %d used %d", a.Layout, a.Size, a.Used)
	}
	if !mapsEqual(mapOf(t, db, src.Ino), mapOf(t, db, dst.Ino)) {
		t.Fatal("clone's map differs from the source's")
	}
	checkClean(t, db)

	// Overwrite page 0..9 of the source and 100..109 of the clone.
	p2 := addPack(t, db, 20)
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: src.Ino, Size: 200 * PageSize, Extents: []Extent{{Page: 0, N: 10, Block: p2}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: dst.Ino, Size: 200 * PageSize, Extents: []Extent{{Page: 100, N: 10, Block: p2, BlockPage: 10}}}); err != nil {
		t.Fatal(err)
	}
	sm, dm := mapOf(t, db, src.Ino), mapOf(t, db, dst.Ino)
	if sm[0] != (pageRef{p2, 0}) || dm[0] != (pageRef{p1, 0}) || sm[100] != (pageRef{p1, 50}) || dm[100] != (pageRef{p2, 10}) {
		t.Fatalf("writes leaked across the clone: src %v %v dst %v %v", sm[0], sm[100], dm[0], dm[100])
	}
	checkClean(t, db)

	// Delete the source: p1 stays (the clone maps it), then the clone: p1 goes.
	if _, err := db.Unlink(ctx, RootIno, "src"); err != nil {
		t.Fatal(err)
	}
	if err := db.Purge(ctx, src.Ino); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(freedIDs(t, db), p1) {
		t.Fatal("pack freed while the clone still maps it")
	}
	checkClean(t, db)
	if _, err := db.Unlink(ctx, RootIno, "dst"); err != nil {
		t.Fatal(err)
	}
	if err := db.Purge(ctx, dst.Ino); err != nil {
		t.Fatal(err)
	}
	if f := freedIDs(t, db); !slices.Contains(f, p1) || !slices.Contains(f, p2) {
		t.Fatalf("packs not freed after both files went: freed %v", f)
	}
	checkClean(t, db)
}

func TestCloneImageRange(t *testing.T) {
	db, _ := newTestDB(t)
	src := mkimage(t, db, "src")
	p := addPack(t, db, 64)
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: src.Ino, Size: 64 * PageSize, Extents: []Extent{{Page: 0, N: 64, Block: p}}}); err != nil {
		t.Fatal(err)
	}
	dst := mkfile(t, db, RootIno, "dst")
	// Two halves, the second first, at an offset of 10 pages.
	if _, err := db.CloneImageRange(ctx, src.Ino, 32, dst.Ino, 42, 32, 74*PageSize); err != nil {
		t.Fatal(err)
	}
	a, err := db.CloneImageRange(ctx, src.Ino, 0, dst.Ino, 10, 32, 42*PageSize)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 74*PageSize || a.Used != 64*PageSize {
		t.Fatalf("size %d used %d", a.Size, a.Used)
	}
	m := mapOf(t, db, dst.Ino)
	for i := uint64(0); i < 64; i++ {
		if m[10+i] != (pageRef{p, uint32(i)}) {
			t.Fatalf("page %d maps %v", 10+i, m[10+i])
		}
	}
	// Overwrite part of the range with a hole of the source's.
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: src.Ino, Size: 64 * PageSize, Holes: []PageRange{{Page: 0, N: 4}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CloneImageRange(ctx, src.Ino, 0, dst.Ino, 10, 8, 0); err != nil {
		t.Fatal(err)
	}
	m = mapOf(t, db, dst.Ino)
	if _, ok := m[10]; ok || m[14] != (pageRef{p, 4}) {
		t.Fatalf("after cloning a hole: page 10 %v, page 14 %v", m[10], m[14])
	}
	checkClean(t, db)

	plain := mkfile(t, db, RootIno, "plain")
	_, err = db.CloneImageRange(ctx, plain.Ino, 0, dst.Ino, 0, 1, 0)
	wantErr(t, "range of a plain file", err, syscall.EINVAL)
	_, err = db.CloneImageRange(ctx, src.Ino, 0, src.Ino, 0, 1, 0)
	wantErr(t, "onto itself", err, syscall.EINVAL)
	_, err = db.CloneFile(ctx, plain.Ino, dst.Ino)
	wantErr(t, "plain onto an image", err, syscall.EINVAL)
	checkClean(t, db)
}

// TestCloneChunks clones a plain file and checks that a block is freed
// only when no chunk of either file names it.
func TestCloneChunks(t *testing.T) {
	db, _ := newTestDB(t)
	src := mkfile(t, db, RootIno, "src")
	b1, _ := db.NewBlockID(ctx)
	b2, _ := db.NewBlockID(ctx)
	if _, err := db.UpdateFile(ctx, src.Ino, FileUpdate{Size: 2 * ChunkSize, Chunks: []Chunk{
		{Index: 0, Len: ChunkSize, BlockID: b1}, {Index: 1, Len: ChunkSize, BlockID: b2},
	}}); err != nil {
		t.Fatal(err)
	}
	dst := mkfile(t, db, RootIno, "dst")
	a, err := db.CloneFile(ctx, src.Ino, dst.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 2*ChunkSize || a.Used != 2*ChunkSize || a.Layout != LayoutFile {
		t.Fatalf("clone attrs %+v", a)
	}
	checkClean(t, db)
	// The source rewrites chunk 0: b1 stays, the clone names it.
	b3, _ := db.NewBlockID(ctx)
	if _, err := db.UpdateFile(ctx, src.Ino, FileUpdate{Size: 2 * ChunkSize, Chunks: []Chunk{{Index: 0, Len: ChunkSize, BlockID: b3}}}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(freedIDs(t, db), b1) {
		t.Fatal("block freed while the clone names it")
	}
	// The clone truncates to nothing: b1 goes, b2 stays (the source's).
	if _, err := db.TruncateChunks(ctx, dst.Ino, 0); err != nil {
		t.Fatal(err)
	}
	f := freedIDs(t, db)
	if !slices.Contains(f, b1) || slices.Contains(f, b2) {
		t.Fatalf("freed %v, want %d and not %d", f, b1, b2)
	}
	checkClean(t, db)
}

// TestCloneTiming measures CloneFile of a 1 PiB sparse image holding 10
// GiB, as extents of whole packs (written in order) and of 64 KiB (written
// at random). OHM_MEASURE=1 runs it; docs/checkpoints.md has the numbers.
func TestCloneTiming(t *testing.T) {
	if os.Getenv("OHM_MEASURE") == "" {
		t.Skip("a measurement: set OHM_MEASURE=1")
	}
	for _, extPages := range []uint32{MaxExtentPages, 16} {
		db, _ := newTestDB(t)
		src := mkimage(t, db, "src")
		const data = 10 << 30
		n := data / (int(extPages) * PageSize)
		const span = (1 << 50) / PageSize // pages in 1 PiB
		stride := uint64(span / n)
		var u ImageUpdate
		u.Ino, u.Size = src.Ino, 1<<50
		perPack := MaxExtentPages / extPages
		var packs []Pack
		for i := 0; i < n; i++ {
			if i%int(perPack) == 0 {
				id, err := db.NewBlockID(ctx)
				if err != nil {
					t.Fatal(err)
				}
				packs = append(packs, Pack{ID: id, Pages: MaxExtentPages})
			}
			u.Extents = append(u.Extents, Extent{Page: uint64(i) * stride, N: extPages, Block: packs[len(packs)-1].ID, BlockPage: uint32(i%int(perPack)) * extPages})
		}
		if err := db.AddPacks(ctx, packs); err != nil {
			t.Fatal(err)
		}
		if _, err := db.UpdateImage(ctx, u); err != nil {
			t.Fatal(err)
		}
		if err := db.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		dst := mkfile(t, db, RootIno, "dst")
		start := time.Now()
		if _, err := db.CloneFile(ctx, src.Ino, dst.Ino); err != nil {
			t.Fatal(err)
		}
		if err := db.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("clone of a 1 PiB image holding 10 GiB in %d extents of %d KiB (%d packs): %v", n, extPages*4, len(packs), time.Since(start))
	}
}

// TestExclusiveBytesAndSnapshot checks what a directory of clones alone
// holds, and that a snapshot is a database with the same files.
func TestExclusiveBytesAndSnapshot(t *testing.T) {
	db, path := newTestDB(t)
	src := mkimage(t, db, "src")
	p1, p2 := addPack(t, db, 10), addPack(t, db, 20)
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: src.Ino, Size: 30 * PageSize, Extents: []Extent{
		{Page: 0, N: 10, Block: p1}, {Page: 10, N: 20, Block: p2},
	}}); err != nil {
		t.Fatal(err)
	}
	ck := mkdir(t, db, RootIno, "ck")
	dst := mkfile(t, db, ck.Ino, "img")
	if _, err := db.CloneFile(ctx, src.Ino, dst.Ino); err != nil {
		t.Fatal(err)
	}
	excl := func() uint64 {
		t.Helper()
		n, err := db.ExclusiveBytes(ctx, ck.Ino)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := excl(); n != 0 {
		t.Fatalf("a fresh clone alone holds %d bytes, want 0", n)
	}
	// The source drops its pages of p2: the clone alone holds p2.
	if _, err := db.UpdateImage(ctx, ImageUpdate{Ino: src.Ino, Size: 30 * PageSize, Holes: []PageRange{{Page: 10, N: 20}}}); err != nil {
		t.Fatal(err)
	}
	if n := excl(); n != 20*PageSize {
		t.Fatalf("exclusive bytes %d, want %d", n, 20*PageSize)
	}

	snap := filepath.Join(filepath.Dir(path), "snap.db")
	if err := db.SnapshotTo(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := db.SetSetting(ctx, "uuid", "changed-after"); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if _, err := s.Lookup(ctx, ck.Ino, "img"); err != nil {
		t.Fatalf("snapshot lacks the clone: %v", err)
	}
	if u, _ := s.Setting(ctx, "uuid"); u != "test-uuid" {
		t.Fatalf("snapshot's uuid %q: it has a change made after it", u)
	}
	checkClean(t, s)
	checkClean(t, db)
}
