package vfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"syscall"
	"testing"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
)

// packSums returns the hash of every stored pack or block that ino maps.
func packSums(t *testing.T, v *volume, ino meta.Ino) map[uint64][32]byte {
	t.Helper()
	ctx := context.Background()
	ids := map[uint64]bool{}
	es, err := v.meta.Extents(ctx, ino, 0, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		ids[e.Block] = true
	}
	for _, c := range chunksOf(t, v, ino) {
		if c.BlockID != 0 {
			ids[c.BlockID] = true
		}
	}
	out := map[uint64][32]byte{}
	for id := range ids {
		data, err := v.bs.Get(ctx, id)
		if err != nil {
			t.Fatalf("pack %d: %v", id, err)
		}
		out[id] = sha256.Sum256(data)
	}
	return out
}

// TestClone clones an image and a plain file, with writes still in the
// log or in memory, overwrites parts of both sides, checks that each
// reads back its own bytes and that no shared pack changed, then deletes
// the sources, collects garbage and reads the clones back from a fresh
// store.
func TestClone(t *testing.T) {
	for _, image := range []bool{true, false} {
		name := map[bool]string{true: "image", false: "file"}[image]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			v := openVolume(t, dir, true)
			fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{GCGrace: -1, GCInterval: time.Hour, CommitInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			const size = 24 << 20
			var src meta.Ino
			var sfh Handle
			if image {
				src, sfh = makeImage(t, fs, "src")
			} else {
				src, sfh = create(t, fs, "src")
			}
			want := randBytes(size, 1)
			write(t, fs, src, sfh, 0, want[:size/2])
			if err := fs.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			write(t, fs, src, sfh, size/2, want[size/2:]) // not flushed yet

			if err := fs.SetXattr(ctx, src, XattrClone, []byte("dst"), 0); err != nil {
				t.Fatal(err)
			}
			err = fs.SetXattr(ctx, src, XattrClone, []byte("dst"), 0)
			if !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("clone onto an existing name: %v, want EEXIST", err)
			}
			err = fs.SetXattr(ctx, src, XattrClone, []byte("nodir/dst"), 0)
			if !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("clone into a missing directory: %v, want ENOENT", err)
			}
			da, err := fs.Lookup(ctx, meta.RootIno, "dst")
			if err != nil {
				t.Fatal(err)
			}
			dfh, err := fs.Open(ctx, da.Ino, syscall.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, fs, da.Ino, dfh); !bytes.Equal(got, want) {
				t.Fatal("clone reads back different bytes")
			}
			shared := packSums(t, v, da.Ino)

			// Overwrite different parts of each.
			srcWant, dstWant := bytes.Clone(want), bytes.Clone(want)
			for i, off := range []int{0, 5<<20 + 4096, 12 << 20, size - 8192} {
				p := randBytes(8192+i*3000, uint64(10+i))
				write(t, fs, src, sfh, int64(off), p)
				srcWant = model(srcWant, off, p)
				q := randBytes(4096+i*5000, uint64(20+i))
				write(t, fs, da.Ino, dfh, int64(off+1000), q)
				dstWant = model(dstWant, off+1000, q)
			}
			if err := fs.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, fs, src, sfh); !bytes.Equal(got, srcWant) {
				t.Fatal("source reads back wrong after overwrites")
			}
			if got := readAll(t, fs, da.Ino, dfh); !bytes.Equal(got, dstWant) {
				t.Fatal("clone reads back wrong after overwrites")
			}
			for id, sum := range packSums(t, v, da.Ino) {
				if old, ok := shared[id]; ok && old != sum {
					t.Fatalf("shared pack %d changed", id)
				}
			}
			checkClean(t, v)

			// Delete the source, collect, read the clone from a fresh store.
			fs.Release(ctx, src, sfh)
			if err := fs.Unlink(ctx, meta.RootIno, "src"); err != nil {
				t.Fatal(err)
			}
			if err := fs.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := fs.GC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// An image's overwrites share packs with the clone's (a fold
			// packs the pages of every image together); a plain file's
			// new blocks are its own.
			if !image && res.DeletedBlocks == 0 {
				t.Error("gc deleted nothing: the source's own blocks should go")
			}
			fs.Release(ctx, da.Ino, dfh)
			if err := fs.Close(ctx); err != nil {
				t.Fatal(err)
			}
			checkClean(t, v)
			res2, err := Collect(ctx, v.meta, blockstore.New(v.objs, blockstore.Options{}), GCOptions{Offline: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("online gc deleted %d blocks, offline %d", res.DeletedBlocks, res2.DeletedBlocks)
			fs2, err := New(ctx, v.meta, blockstore.New(v.objs, blockstore.Options{}), 1<<50, Config{GCInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				fs2.Close(ctx)
				v.meta.Close(ctx)
			}()
			dfh, err = fs2.Open(ctx, da.Ino, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, fs2, da.Ino, dfh); !bytes.Equal(got, dstWant) {
				t.Fatal("clone reads back wrong after its source was deleted and collected")
			}
			checkClean(t, v)
		})
	}
}

// TestCopyRange clones pages of an image with copy_file_range's
// semantics, and refuses what it cannot clone as whole pages.
func TestCopyRange(t *testing.T) {
	ctx := context.Background()
	fs, v := newFS(t, Config{CommitInterval: time.Hour})
	src, sfh := makeImage(t, fs, "src")
	want := randBytes(3<<20+100, 2)
	write(t, fs, src, sfh, 0, want)
	dst, dfh := create(t, fs, "dst")
	// The second half first, then the first: two calls, as for a file
	// larger than one reply can count.
	half := uint64(1 << 20)
	n, err := fs.CopyRange(ctx, src, half, dst, half, 1<<40)
	if err != nil || n != uint64(len(want))-half {
		t.Fatalf("copy the tail: %d, %v", n, err)
	}
	if n, err = fs.CopyRange(ctx, src, 0, dst, 0, half); err != nil || n != half {
		t.Fatalf("copy the head: %d, %v", n, err)
	}
	if got := readAll(t, fs, dst, dfh); !bytes.Equal(got, want) {
		t.Fatal("range clone reads back different bytes")
	}
	if _, err := fs.CopyRange(ctx, src, 100, dst, 0, 4096); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("unaligned copy: %v, want EOPNOTSUPP", err)
	}
	if n, err := fs.CopyRange(ctx, src, 1<<30, dst, 0, 4096); err != nil || n != 0 {
		t.Fatalf("copy past the end: %d, %v", n, err)
	}
	checkClean(t, v)
}
