package vfs

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestImageLogSparesGiveSpaceBack checks that the write-ahead log keeps
// recycled segments as spares only while the host has room to spare:
// once the host is short of space, a fold removes them, so that the space
// of deleted data comes back whole (a disk's space guard waits for it).
func TestImageLogSparesGiveSpaceBack(t *testing.T) {
	ctx := context.Background()
	var free atomic.Uint64
	free.Store(1 << 40)
	walDir := t.TempDir()
	fs, _ := newFS(t, Config{
		CommitInterval: time.Hour,
		GCInterval:     time.Hour,
		WALDir:         walDir,
		Reserve:        1 << 20,
		FreeSpace:      func() (uint64, error) { return free.Load(), nil },
	})
	ino, fh := makeImage(t, fs, "img")
	p := randBytes(1<<20, 7)
	// Four segments' worth: the folds retire the first ones.
	for i := range 4 * walSegmentSize / len(p) {
		write(t, fs, ino, fh, int64(i*len(p)), p)
		if (i+1)%(walSegmentSize/len(p)) == 0 {
			if err := fs.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := fs.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countSpares(t, walDir); n == 0 || n > walSpares {
		t.Fatalf("with room on the host the log keeps %d spares, want 1 to %d", n, walSpares)
	}
	free.Store(walSpareRoom / 2)
	if err := fs.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countSpares(t, walDir); n != 0 {
		t.Fatalf("with the host short of space the log keeps %d spares, want none", n)
	}
	// The log goes on working without them.
	write(t, fs, ino, fh, 0, p)
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
}

func countSpares(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), walSparePrefix) {
			n++
		}
	}
	return n
}
