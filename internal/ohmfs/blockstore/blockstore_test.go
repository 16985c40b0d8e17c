package blockstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ohm/internal/ohmfs/objstore"
)

func newTestStore(t testing.TB, opts Options) (*Store, *objstore.FileStore) {
	t.Helper()
	objs, err := objstore.NewFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(objs, opts)
	t.Cleanup(s.Close)
	return s, objs
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline (a hang guard, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// compressible returns n bytes like those of the 100 GiB acceptance file:
// a SHA-256 digest repeated.
func compressible(n int) []byte {
	d := sha256.Sum256([]byte("ohm"))
	return bytes.Repeat(d[:], n/len(d)+1)[:n]
}

func text(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d: the quick brown fox jumps over the lazy dog\n", i)
	}
	return b.Bytes()[:n]
}

func TestKey(t *testing.T) {
	tests := []struct {
		id   uint64
		want string
	}{
		{0x10a, "blocks/0a/000000000000010a"},
		{1, "blocks/01/0000000000000001"},
		{0xffffffffffffffff, "blocks/ff/ffffffffffffffff"},
	}
	for _, tt := range tests {
		if got := Key(tt.id); got != tt.want {
			t.Errorf("Key(%#x) = %q, want %q", tt.id, got, tt.want)
		}
		if id, ok := parseKey(tt.want); !ok || id != tt.id {
			t.Errorf("parseKey(%q) = %#x, %v", tt.want, id, ok)
		}
	}
	for _, bad := range []string{"blocks/0b/000000000000010a", "blocks/0a/10a", "meta/meta.db", "blocks/0a/000000000000010g"} {
		if _, ok := parseKey(bad); ok {
			t.Errorf("parseKey(%q) accepted a key Key never makes", bad)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		wantCodec byte
	}{
		{"empty", []byte{}, codecNone},
		{"one byte", []byte{7}, codecNone},
		{"text", text(100 << 10), codecLZ4},
		{"digest repeated 4MiB", compressible(4 << 20), codecLZ4},
		{"random 4MiB", randomBytes(4 << 20), codecNone},
		{"zeros 4MiB", make([]byte, 4<<20), codecLZ4},
	}
	for _, compression := range []string{"lz4", "none"} {
		for _, tt := range tests {
			t.Run(compression+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				s, objs := newTestStore(t, Options{Compression: compression})
				if err := s.Put(ctx, 42, tt.data); err != nil {
					t.Fatal(err)
				}
				obj, err := objs.Get(ctx, Key(42), 0, -1)
				if err != nil {
					t.Fatal(err)
				}
				want := tt.wantCodec
				if compression == "none" {
					want = codecNone
				}
				if obj[4] != want {
					t.Errorf("stored with codec %d, want %d", obj[4], want)
				}
				// A fresh store has a cold cache: this reads the object.
				got, err := New(objs, Options{}).Get(ctx, 42)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tt.data) {
					t.Fatalf("round trip changed the data (%d bytes in, %d out)", len(tt.data), len(got))
				}
			})
		}
	}
}

func TestCorruptionDetected(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		data   []byte
		damage func(obj []byte) []byte
	}{
		{"flipped byte in lz4 payload", text(64 << 10), func(o []byte) []byte { o[len(o)/2] ^= 0x40; return o }},
		{"flipped byte in raw payload", randomBytes(64 << 10), func(o []byte) []byte { o[len(o)/2] ^= 0x01; return o }},
		{"truncated", randomBytes(64 << 10), func(o []byte) []byte { return o[:len(o)-100] }},
		{"truncated header", text(1000), func(o []byte) []byte { return o[:10] }},
		{"bad magic", text(1000), func(o []byte) []byte { o[0] = 'X'; return o }},
		{"bad codec", text(1000), func(o []byte) []byte { o[4] = 9; return o }},
		{"bad checksum", text(1000), func(o []byte) []byte { o[12] ^= 0xff; return o }},
		{"bad length", text(1000), func(o []byte) []byte { o[8]++; return o }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, objs := newTestStore(t, Options{})
			const id = 0xabc
			if err := s.Put(ctx, id, tt.data); err != nil {
				t.Fatal(err)
			}
			obj, err := objs.Get(ctx, Key(id), 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			if err := objs.Put(ctx, Key(id), tt.damage(obj)); err != nil {
				t.Fatal(err)
			}
			fresh := New(objs, Options{})
			_, err = fresh.Get(ctx, id)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Get of a damaged block: error = %v, want ErrCorrupt", err)
			}
			if want := fmt.Sprint("block ", id); !bytes.Contains([]byte(err.Error()), []byte(want)) {
				t.Errorf("error %q does not name the block", err)
			}
			if err := fresh.Verify(ctx, id); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Verify = %v, want ErrCorrupt", err)
			}
			if _, err := New(objs, Options{}).ReadAt(ctx, id, make([]byte, 100), 0); !errors.Is(err, ErrCorrupt) {
				t.Errorf("ReadAt = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestReadAtReusesBuffers reads blocks through a cache too small to keep
// them, so that their buffers are reused for the next loads, from
// concurrent readers, and checks every byte each read returns; Gets in
// between keep their blocks' buffers from reuse.
func TestReadAtReusesBuffers(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		cache int64
	}{
		{"no cache", -1},
		{"a two-block cache", 2 * (256 << 10)},
	}
	const n = 12
	blocks := make([][]byte, n)
	for i := range blocks {
		if i%2 == 0 {
			blocks[i] = randomBytes(256 << 10) // stored raw
		} else {
			blocks[i] = text(256 << 10) // stored lz4
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, objs := newTestStore(t, Options{})
			for i, data := range blocks {
				if err := objs.Put(ctx, Key(uint64(i)), mustEncode(t, data)); err != nil {
					t.Fatal(err)
				}
			}
			s := New(objs, Options{CacheBytes: tt.cache})
			var wg sync.WaitGroup
			var gets sync.Map // id -> what Get returned
			for w := range 4 {
				wg.Go(func() {
					dst := make([]byte, 100<<10)
					for r := range 20 {
						id := (w*7 + r*5) % n
						off := (r * 37 << 10) % (256 << 10)
						k, err := s.ReadAt(ctx, uint64(id), dst, off)
						if err != nil {
							t.Errorf("ReadAt(%d, %d): %v", id, off, err)
							return
						}
						want := blocks[id][off:min(off+len(dst), len(blocks[id]))]
						if !bytes.Equal(dst[:k], want) {
							t.Errorf("ReadAt(%d, %d) returned wrong bytes", id, off)
							return
						}
						if r%6 == 0 {
							got, err := s.Get(ctx, uint64(id))
							if err != nil {
								t.Errorf("Get(%d): %v", id, err)
								return
							}
							gets.Store(r*100+w, [2]any{id, got})
						}
					}
				})
			}
			wg.Wait()
			gets.Range(func(_, v any) bool {
				p := v.([2]any)
				if id, got := p[0].(int), p[1].([]byte); !bytes.Equal(got, blocks[id]) {
					t.Errorf("what Get returned for block %d changed after later loads", id)
				}
				return true
			})
			if k, err := s.ReadAt(ctx, 0, make([]byte, 10), 256<<10); err != nil || k != 0 {
				t.Errorf("ReadAt at the end = %d, %v; want 0, nil", k, err)
			}
		})
	}
}

func TestMissingBlock(t *testing.T) {
	s, _ := newTestStore(t, Options{})
	_, err := s.Get(context.Background(), 99)
	if !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get of a missing block: %v, want ErrNotFound", err)
	}
}

func TestCacheBound(t *testing.T) {
	ctx := context.Background()
	const blockSize = 64 << 10
	const limit = 5*blockSize + blockSize/2
	s, objs := newTestStore(t, Options{CacheBytes: limit})
	for id := uint64(1); id <= 20; id++ {
		if err := s.Put(ctx, id, randomBytes(blockSize)); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.CacheBytes > limit {
			t.Fatalf("after Put %d the cache holds %d bytes, bound %d", id, st.CacheBytes, limit)
		}
	}
	// Cold reads through a fresh store.
	s = New(objs, Options{CacheBytes: limit})
	for id := uint64(1); id <= 20; id++ {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.CacheBytes > limit {
			t.Fatalf("after Get %d the cache holds %d bytes, bound %d", id, st.CacheBytes, limit)
		}
	}
	st := s.Stats()
	if st.CacheMisses != 20 || st.CacheHits != 0 || st.CacheBytes != 5*blockSize {
		t.Fatalf("stats after 20 cold reads = %+v", st)
	}
	// The five most recent are cached, the oldest are not.
	if _, err := s.Get(ctx, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, 1); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()
	if st.CacheHits != 1 || st.CacheMisses != 21 {
		t.Fatalf("stats = %+v, want 1 hit (block 20) and 21 misses (block 1 was evicted)", st)
	}

	// A block larger than the whole cache is served but not kept.
	big := New(objs, Options{CacheBytes: blockSize / 2})
	if _, err := big.Get(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if st := big.Stats(); st.CacheBytes != 0 {
		t.Fatalf("cache holds %d bytes, bound %d", st.CacheBytes, blockSize/2)
	}
}

func TestDeleteAndList(t *testing.T) {
	ctx := context.Background()
	s, objs := newTestStore(t, Options{})
	want := map[uint64]bool{}
	for _, id := range []uint64{1, 2, 0x100, 0x1ff, 1 << 40} {
		if err := s.Put(ctx, id, text(1000)); err != nil {
			t.Fatal(err)
		}
		want[id] = true
	}
	// Not a block: ignored by List.
	if err := objs.Put(ctx, "blocks/stray", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, 2); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	delete(want, 2)
	if _, err := s.Get(ctx, 2); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get after Delete (the cache must forget it too): %v", err)
	}
	got := map[uint64]bool{}
	err := s.List(ctx, func(id uint64, size int64, mtime time.Time) error {
		if size <= headerLen || mtime.IsZero() {
			t.Errorf("block %d: size %d, mtime %v", id, size, mtime)
		}
		got[id] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
}

// TestSharedFetch checks that concurrent Gets of one block load it once.
func TestSharedFetch(t *testing.T) {
	ctx := context.Background()
	_, objs := newTestStore(t, Options{})
	slow := &slowStore{Store: objs, gate: make(chan struct{})}
	s := New(slow, Options{})
	data := text(1 << 20)
	if err := objs.Put(ctx, Key(5), mustEncode(t, data)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.Get(ctx, 5)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("Get = %d bytes, %v", len(got), err)
			}
		}()
	}
	// Let the other seven join the first's load before releasing it.
	waitFor(t, "seven Gets to join the first one's load", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		f, loading := s.inflight[5]
		return loading && f.waiters == 7
	})
	close(slow.gate)
	wg.Wait()
	if n := slow.gets.Load(); n != 1 {
		t.Errorf("8 concurrent Gets loaded the block %d times, want 1", n)
	}
}

func TestPrefetch(t *testing.T) {
	ctx := context.Background()
	s, objs := newTestStore(t, Options{})
	if err := objs.Put(ctx, Key(9), mustEncode(t, text(4096))); err != nil {
		t.Fatal(err)
	}
	if !s.Prefetch(9) {
		t.Fatal("Prefetch dropped the only request")
	}
	waitFor(t, "the prefetch to fill the cache", func() bool { return s.Stats().CacheBytes > 0 })
	if _, err := s.Get(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.CacheHits != 1 || st.CacheMisses != 1 {
		t.Fatalf("stats = %+v, want the prefetch's miss and the Get's hit", st)
	}
	s.Prefetch(12345) // missing: must not panic or block
}

func TestConcurrentPutGet(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t, Options{CacheBytes: 1 << 20}) // small: forces evictions
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				id := uint64(w*1000 + i)
				data := []byte(fmt.Sprintf("block %d ", id))
				data = bytes.Repeat(data, 10000)
				if err := s.Put(ctx, id, data); err != nil {
					t.Error(err)
					return
				}
				for _, j := range []uint64{id, uint64(w*1000 + i/2), uint64(((w+1)%4)*1000 + i/3)} {
					got, err := s.Get(ctx, j)
					if errors.Is(err, objstore.ErrNotFound) {
						continue // another writer has not got there yet
					}
					if err != nil {
						t.Error(err)
						return
					}
					if want := fmt.Sprintf("block %d ", j); !bytes.HasPrefix(got, []byte(want)) {
						t.Errorf("block %d starts with %q", j, got[:20])
					}
				}
				s.Prefetch(id / 2)
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.CacheBytes > 1<<20 {
		t.Fatalf("cache holds %d bytes, bound %d", st.CacheBytes, 1<<20)
	}
	if st.StoredBytes >= st.RawBytes {
		t.Errorf("repetitive data did not compress: stored %d of %d", st.StoredBytes, st.RawBytes)
	}
}

func TestCrashLeftoversIgnored(t *testing.T) {
	ctx := context.Background()
	s, objs := newTestStore(t, Options{})
	if err := s.Put(ctx, 1, text(100)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(objs.Root(), "blocks/01/.tmp-999"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.List(ctx, func(uint64, int64, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("List saw %d blocks, want 1", n)
	}
}

func mustEncode(t testing.TB, data []byte) []byte {
	t.Helper()
	obj, err := New(nil, Options{}).encode(data)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// TestCloseStopsPrefetch checks that Close cancels a background load that
// is stuck in the object store and returns only after it has, and that
// Prefetch starts nothing afterwards.
func TestCloseStopsPrefetch(t *testing.T) {
	_, objs := newTestStore(t, Options{})
	stuck := &stuckStore{Store: objs, started: make(chan struct{}, 1)}
	s := New(stuck, Options{})
	if !s.Prefetch(3) {
		t.Fatal("Prefetch dropped the only request")
	}
	<-stuck.started
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return: it does not cancel the background load")
	}
	if n := stuck.returned.Load(); n != 1 {
		t.Fatalf("Close returned with %d of 1 background loads finished", n)
	}
	if s.Prefetch(4) {
		t.Fatal("Prefetch after Close accepted a request")
	}
	if n := stuck.gets.Load(); n != 1 {
		t.Fatalf("the object store saw %d Gets, want only the one from before Close", n)
	}
	s.Close() // twice is fine
}

// stuckStore holds every Get until its context ends, counting those that
// start and return.
type stuckStore struct {
	objstore.Store
	started        chan struct{}
	gets, returned atomic.Int64
}

func (s *stuckStore) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	s.gets.Add(1)
	select {
	case s.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	s.returned.Add(1)
	return nil, ctx.Err()
}

// slowStore holds every Get until gate is closed, counting them.
type slowStore struct {
	objstore.Store
	gate chan struct{}
	gets atomic.Int64
}

func (s *slowStore) Get(ctx context.Context, key string, off, length int64) ([]byte, error) {
	s.gets.Add(1)
	<-s.gate
	return s.Store.Get(ctx, key, off, length)
}
