package vfs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
)

// failingDeletes is an object store whose deletes fail while failing is set.
type failingDeletes struct {
	objstore.Store
	failing atomic.Bool
}

var errInjected = errors.New("injected delete failure")

func (f *failingDeletes) Delete(ctx context.Context, key string) error {
	if f.failing.Load() {
		return errInjected
	}
	return f.Store.Delete(ctx, key)
}

// syncBuffer is a log destination tests can read while the FS writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGCLoopReportsErrors checks that a failing background collection is
// not silent: it is logged, passed to OnError, counted and kept as the
// last error, and the freed block stays listed so that a later collection deletes it.
func TestGCLoopReportsErrors(t *testing.T) {
	ctx := context.Background()
	v := openVolume(t, t.TempDir(), true)
	objs := &failingDeletes{Store: v.objs}
	objs.failing.Store(true)
	var logs syncBuffer
	hooked := make(chan error, 1)
	onError := func(op string, err error) {
		if op != "gc" {
			return
		}
		select {
		case hooked <- err:
		default:
		}
	}
	fs, err := New(ctx, v.meta, blockstore.New(objs, blockstore.Options{}), 1<<50,
		Config{GCGrace: -1, GCInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil)), OnError: onError})
	if err != nil {
		t.Fatal(err)
	}
	defer v.meta.Close(ctx)
	defer fs.Close(ctx)

	ino, fh := create(t, fs, "f")
	write(t, fs, ino, fh, 0, randBytes(meta.ChunkSize, 3))
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	id := chunksOf(t, v, ino)[0].BlockID
	fs.Release(ctx, ino, fh)
	if err := fs.Unlink(ctx, meta.RootIno, "f"); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "the gc loop to report its failure", func() bool { return fs.Stats().BackgroundErrors > 0 })
	st := fs.Stats()
	if !strings.Contains(st.LastError, errInjected.Error()) {
		t.Errorf("last error %q, want the injected failure", st.LastError)
	}
	if !strings.Contains(logs.String(), errInjected.Error()) {
		t.Errorf("log %q does not name the failure", logs.String())
	}
	select {
	case err := <-hooked:
		if !errors.Is(err, errInjected) {
			t.Errorf("OnError got %v, want the injected failure", err)
		}
	default:
		t.Error("OnError was not called for the failed collection")
	}
	if !freedIDs(t, v)[id] {
		t.Fatalf("block %d left the freed list although its delete failed", id)
	}

	objs.failing.Store(false)
	waitFor(t, "a later collection to delete the block", func() bool { return !freedIDs(t, v)[id] })
	if _, err := v.objs.Head(ctx, blockstore.Key(id)); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("block %d still stored: %v", id, err)
	}
}
