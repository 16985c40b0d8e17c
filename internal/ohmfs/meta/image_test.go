package meta

import (
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
)

// pageRef is where a page of a model image lives.
type pageRef struct {
	block uint64
	bpage uint32
}

// mapOf reads image ino's extents into a page map.
func mapOf(t testing.TB, db *DB, ino Ino) map[uint64]pageRef {
	t.Helper()
	es, err := db.Extents(ctx, ino, 0, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[uint64]pageRef)
	for _, e := range es {
		for i := uint32(0); i < e.N; i++ {
			m[e.Page+uint64(i)] = pageRef{e.Block, e.BlockPage + i}
		}
	}
	return m
}

func mkimage(t testing.TB, db *DB, name string) Attr {
	t.Helper()
	a := mkfile(t, db, RootIno, name)
	a, err := db.SetLayout(ctx, a.Ino, LayoutImage)
	if err != nil {
		t.Fatal(err)
	}
	if a.Layout != LayoutImage {
		t.Fatalf("layout %d after SetLayout", a.Layout)
	}
	return a
}

func TestSetLayout(t *testing.T) {
	db, _ := newTestDB(t)
	img := mkimage(t, db, "img")
	if got := getattr(t, db, img.Ino); got.Layout != LayoutImage {
		t.Errorf("layout %d, want image", got.Layout)
	}
	_, err := db.SetLayout(ctx, img.Ino, LayoutFile)
	wantErr(t, "image back to file", err, syscall.EINVAL)
	d := mkdir(t, db, RootIno, "d")
	_, err = db.SetLayout(ctx, d.Ino, LayoutImage)
	wantErr(t, "directory", err, syscall.EINVAL)

	f := mkfile(t, db, RootIno, "f")
	if _, err := db.UpdateFile(ctx, f.Ino, FileUpdate{Chunks: []Chunk{{Index: 0, Len: 3, Inline: []byte("abc")}}, Size: 3}); err != nil {
		t.Fatal(err)
	}
	_, err = db.SetLayout(ctx, f.Ino, LayoutImage)
	wantErr(t, "file with data", err, syscall.EBUSY)
	_, err = db.UpdateFile(ctx, img.Ino, FileUpdate{Chunks: []Chunk{{Index: 0, Len: 3, Inline: []byte("abc")}}, Size: 3})
	wantErr(t, "chunks into an image", err, syscall.EINVAL)
	checkClean(t, db)
}

// TestUpdateImageModel applies random folds (extents over extents, holes,
// size changes) to two images and checks the extent map, the packs' live
// counts and the used bytes against a model after each step, then purges
// both and checks that every pack was freed.
func TestUpdateImageModel(t *testing.T) {
	db, _ := newTestDB(t)
	rng := rand.New(rand.NewPCG(1, 2))
	imgs := []Ino{mkimage(t, db, "a").Ino, mkimage(t, db, "b").Ino}
	model := map[Ino]map[uint64]pageRef{}
	size := map[Ino]uint64{}
	for _, ino := range imgs {
		model[ino] = map[uint64]pageRef{}
	}
	var allPacks []uint64
	const maxPages = 3000
	for step := 0; step < 300; step++ {
		ino := imgs[rng.IntN(len(imgs))]
		m := model[ino]
		u := ImageUpdate{Ino: ino, Size: size[ino]}
		id, err := db.NewBlockID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		packPages := uint32(1 + rng.IntN(MaxExtentPages))
		if err := db.AddPacks(ctx, []Pack{{ID: id, Pages: packPages}}); err != nil {
			t.Fatal(err)
		}
		allPacks = append(allPacks, id)
		for range rng.IntN(4) {
			h := PageRange{Page: uint64(rng.IntN(maxPages)), N: uint64(1 + rng.IntN(300))}
			u.Holes = append(u.Holes, h)
			for p := h.Page; p < h.Page+h.N; p++ {
				delete(m, p)
			}
		}
		used := uint32(0)
		for used < packPages && rng.IntN(5) > 0 {
			n := uint32(1 + rng.IntN(int(packPages-used)))
			e := Extent{Page: uint64(rng.IntN(maxPages)), N: n, Block: id, BlockPage: used}
			used += n
			u.Extents = append(u.Extents, e)
			for i := uint32(0); i < n; i++ {
				m[e.Page+uint64(i)] = pageRef{id, e.BlockPage + i}
			}
			u.Size = max(u.Size, e.End()*PageSize)
		}
		if rng.IntN(6) == 0 { // a truncation
			u.Size = uint64(rng.IntN(maxPages)) * PageSize
			for p := range m {
				if p >= u.Size/PageSize {
					delete(m, p)
				}
			}
		}
		size[ino] = u.Size
		a, err := db.UpdateImage(ctx, u)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if err := db.FreeIdlePacks(ctx, []uint64{id}); err != nil {
			t.Fatal(err)
		}
		if got := mapOf(t, db, ino); !mapsEqual(got, m) {
			t.Fatalf("step %d: extent map of %d differs from the model (%d pages vs %d)", step, ino, len(got), len(m))
		}
		if a.Used != uint64(len(m))*PageSize || a.Size != u.Size {
			t.Fatalf("step %d: used %d size %d, want %d and %d", step, a.Used, a.Size, len(m)*PageSize, u.Size)
		}
		if step%50 == 0 {
			checkClean(t, db)
		}
	}
	checkClean(t, db)
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Packs nothing references are freed, the others are not.
	live := map[uint64]bool{}
	for _, m := range model {
		for _, r := range m {
			live[r.block] = true
		}
	}
	freed := freedIDs(t, db)
	for _, id := range allPacks {
		if live[id] == slices.Contains(freed, id) {
			t.Errorf("pack %d: referenced %v, freed %v", id, live[id], !live[id])
		}
	}
	for i, ino := range imgs {
		if _, err := db.Unlink(ctx, RootIno, string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
		if err := db.Purge(ctx, ino); err != nil {
			t.Fatal(err)
		}
	}
	freed = freedIDs(t, db)
	for _, id := range allPacks {
		if !slices.Contains(freed, id) {
			t.Errorf("pack %d not freed after both images were purged", id)
		}
	}
	if u := usage(t, db); u.UsedBytes != 0 {
		t.Errorf("used bytes %d after purging everything", u.UsedBytes)
	}
	checkClean(t, db)
}

func mapsEqual(a, b map[uint64]pageRef) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
