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
