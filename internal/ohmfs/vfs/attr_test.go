package vfs

import (
	"context"
	"math/rand/v2"
	"testing"
)

// TestUsedNeverDipsDuringUploads stats a file while it is being written
// sequentially: full chunks move from memory to meta as their uploads
// finish, and st_blocks must never show a chunk as neither.
func TestUsedNeverDipsDuringUploads(t *testing.T) {
	fs, _ := newFS(t, Config{})
	ctx := context.Background()
	ino, fh := create(t, fs, "stream")
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1<<20)
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(done)
		for i := int64(0); i < 48; i++ {
			for j := range buf {
				buf[j] = byte(rng.Uint32())
			}
			if _, err := fs.Write(ctx, ino, fh, i<<20, buf); err != nil {
				errs <- err
				return
			}
		}
	}()
	var high uint64
	for {
		select {
		case <-done:
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			return
		default:
		}
		a, err := fs.GetAttr(ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		if a.Used < high {
			t.Fatalf("st_blocks went down from %d to %d bytes while the file only grew", high, a.Used)
		}
		high = a.Used
	}
}

// TestPunchedHoleInsideChunkFreesUse checks that st_blocks counts a hole
// punched inside one chunk, as a local filesystem does.
func TestPunchedHoleInsideChunkFreesUse(t *testing.T) {
	fs, v := newFS(t, Config{})
	ctx := context.Background()
	ino, fh := create(t, fs, "g")
	data := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(rng.Uint32() | 1) // no zero pages
	}
	write(t, fs, ino, fh, 0, data)
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	const punch = 0x03 // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
	if err := fs.Fallocate(ctx, ino, fh, 1<<20, 2<<20, punch); err != nil {
		t.Fatal(err)
	}
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	a, err := fs.GetAttr(ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 4<<20 || a.Used != 2<<20 {
		t.Fatalf("after punching 2 MiB of 4: size %d, used %d; want 4 MiB and 2 MiB", a.Size, a.Used)
	}
	checkClean(t, v)
}
