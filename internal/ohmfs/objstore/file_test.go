package objstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestStore(t *testing.T) *FileStore {
	t.Helper()
	s, err := NewFile(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		url     string
		want    string // root of the file store, "" when an error is expected
		wantErr string
	}{
		{url: dir, want: dir},
		{url: "file://" + dir, want: dir},
		{url: "s3://", wantErr: "names no bucket"},
		{url: "s3:///prefix", wantErr: "names no bucket"},
		{url: "s3://bucket/a/../b", wantErr: "bad prefix"},
		{url: "gs://bucket", wantErr: "unsupported scheme"},
		{url: "", wantErr: "empty path"},
		{url: "file://", wantErr: "empty path"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			s, err := Open(context.Background(), tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.url, err)
			}
			if s.String() != tt.want {
				t.Errorf("Open(%q) store = %s, want %s", tt.url, s, tt.want)
			}
		})
	}
}

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"blocks/0a/000000000000010a", true},
		{"ohmfs.json", true},
		{"a/.hidden", true},
		{"", false},
		{"/etc/passwd", false},
		{"../escape", false},
		{"a/../../b", false},
		{"a/./b", false},
		{"a//b", false},
		{"a/", false},
		{"a/.tmp-123", false},
		{"a\x00b", false},
	}
	for _, tt := range tests {
		if err := ValidateKey(tt.key); (err == nil) != tt.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tt.key, err, tt.ok)
		}
	}
}

func TestPutGetRanges(t *testing.T) { forEachStore(t, testPutGetRanges) }

func testPutGetRanges(t *testing.T, s Store) {
	ctx := context.Background()
	data := []byte("0123456789")
	if err := s.Put(ctx, "blocks/01/x", data); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		off, length int64
		want        string
	}{
		{0, -1, "0123456789"},
		{0, 10, "0123456789"},
		{3, 4, "3456"},
		{7, -1, "789"},
		{7, 100, "789"},
		{10, -1, ""},
		{20, 5, ""},
		{0, 0, ""},
	}
	for _, tt := range tests {
		got, err := s.Get(ctx, "blocks/01/x", tt.off, tt.length)
		if err != nil {
			t.Fatalf("Get(%d, %d): %v", tt.off, tt.length, err)
		}
		if string(got) != tt.want {
			t.Errorf("Get(%d, %d) = %q, want %q", tt.off, tt.length, got, tt.want)
		}
	}
	if _, err := s.Get(ctx, "blocks/01/x", -1, 1); err == nil {
		t.Error("Get with a negative offset succeeded")
	}

	// Overwrite replaces the whole object.
	if err := s.Put(ctx, "blocks/01/x", []byte("new")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "blocks/01/x", 0, -1)
	if err != nil || string(got) != "new" {
		t.Fatalf("Get after overwrite = %q, %v", got, err)
	}
	info, err := s.Head(ctx, "blocks/01/x")
	if err != nil || info.Size != 3 || info.Key != "blocks/01/x" || info.ModTime.IsZero() {
		t.Fatalf("Head = %+v, %v", info, err)
	}
}

func TestMissingKeys(t *testing.T) { forEachStore(t, testMissingKeys) }

func testMissingKeys(t *testing.T, s Store) {
	ctx := context.Background()
	if err := s.Put(ctx, "a/file", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"nope", "a/nope", "b/c/d", "a/file/below", "a"} {
		if _, err := s.Get(ctx, key, 0, -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", key, err)
		}
		if _, err := s.Head(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Head(%q) error = %v, want ErrNotFound", key, err)
		}
	}
	if err := s.Delete(ctx, "nope/nothing"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "a/file"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, "a/file"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head after Delete error = %v, want ErrNotFound", err)
	}
}

func TestBadKeysRejected(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		testBadKeysRejected(t, s)
		if fs, ok := s.(*FileStore); ok {
			if _, err := os.Stat(filepath.Join(filepath.Dir(fs.Root()), "escaped")); err == nil {
				t.Fatal("a key escaped the store's root")
			}
		}
	})
}

func testBadKeysRejected(t *testing.T, s Store) {
	ctx := context.Background()
	for _, key := range []string{"../escaped", "/abs", "", "a/.tmp-x"} {
		if err := s.Put(ctx, key, []byte("x")); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
		if _, err := s.Get(ctx, key, 0, -1); err == nil {
			t.Errorf("Get(%q) succeeded", key)
		}
		if err := s.Delete(ctx, key); err == nil {
			t.Errorf("Delete(%q) succeeded", key)
		}
	}
}

func listKeys(t *testing.T, s Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(context.Background(), prefix, func(oi ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	slices.Sort(keys)
	return keys
}

func TestList(t *testing.T) { forEachStore(t, testList) }

func testList(t *testing.T, s Store) {
	ctx := context.Background()
	if got := listKeys(t, s, ""); len(got) != 0 {
		t.Fatalf("List of a new store = %v", got)
	}
	for _, k := range []string{"blocks/00/a", "blocks/00/b", "blocks/01/c", "blocksx", "meta/m", "top"} {
		if err := s.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	// A crash leftover must never show up.
	if fs, ok := s.(*FileStore); ok {
		if err := os.WriteFile(filepath.Join(fs.Root(), "blocks/00/.tmp-123"), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"blocks/00/a", "blocks/00/b", "blocks/01/c", "blocksx", "meta/m", "top"}},
		{"blocks/", []string{"blocks/00/a", "blocks/00/b", "blocks/01/c"}},
		{"blocks", []string{"blocks/00/a", "blocks/00/b", "blocks/01/c", "blocksx"}},
		{"blocks/0", []string{"blocks/00/a", "blocks/00/b", "blocks/01/c"}},
		{"blocks/00/", []string{"blocks/00/a", "blocks/00/b"}},
		{"blocks/00/b", []string{"blocks/00/b"}},
		{"blocks/02/", nil},
		{"nothing/here/", nil},
	}
	for _, tt := range tests {
		if got := listKeys(t, s, tt.prefix); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %v, want %v", tt.prefix, got, tt.want)
		}
	}

	stop := errors.New("stop")
	n := 0
	err := s.List(ctx, "", func(ObjectInfo) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("List with fn returning an error = %v after %d calls", err, n)
	}
}

// TestFailedPutLeavesNothing injects a write error half way through an
// object and checks that neither the object nor its temp file is visible.
func TestFailedPutLeavesNothing(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	if err := s.Put(ctx, "k/obj", []byte("old")); err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected: no space left on device")
	s.write = func(f *os.File, data []byte) error {
		if _, err := f.Write(data[:len(data)/2]); err != nil {
			return err
		}
		return injected
	}
	if err := s.Put(ctx, "k/new", bytes.Repeat([]byte("x"), 1<<20)); !errors.Is(err, injected) {
		t.Fatalf("Put error = %v, want the injected one", err)
	}
	if err := s.Put(ctx, "k/obj", []byte("replacement")); !errors.Is(err, injected) {
		t.Fatalf("Put error = %v, want the injected one", err)
	}
	if _, err := s.Head(ctx, "k/new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("half-written object is visible: %v", err)
	}
	if got, err := s.Get(ctx, "k/obj", 0, -1); err != nil || string(got) != "old" {
		t.Errorf("failed overwrite changed the object: %q, %v", got, err)
	}
	ents, err := os.ReadDir(filepath.Join(s.Root(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

// TestPutOnUnwritableRoot uses a root below a regular file, which fails
// even for root (unlike a read-only directory).
func TestPutOnUnwritableRoot(t *testing.T) {
	base := t.TempDir()
	if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewFile(filepath.Join(base, "file", "store"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), "a/b", []byte("x")); err == nil {
		t.Fatal("Put below a regular file succeeded")
	}
}

func TestCleanTemp(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	if err := s.Put(ctx, "blocks/00/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(s.Root(), "blocks/00/.tmp-old")
	young := filepath.Join(s.Root(), "blocks/00/.tmp-young")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	n, err := CleanTemp(ctx, s, 10*time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("CleanTemp = %d, %v; want 1, nil", n, err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Error("old temp file survived")
	}
	if _, err := os.Stat(young); err != nil {
		t.Error("young temp file (maybe a Put in progress) was removed")
	}
	if got := listKeys(t, s, ""); !slices.Equal(got, []string{"blocks/00/a"}) {
		t.Errorf("objects after CleanTemp = %v", got)
	}
}

func TestConcurrentPuts(t *testing.T) { forEachStore(t, testConcurrentPuts) }

func testConcurrentPuts(t *testing.T, s Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Same fan-out directory, created concurrently.
			key := "blocks/07/" + strings.Repeat("x", i+1)
			if err := s.Put(ctx, key, []byte(key)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := listKeys(t, s, "blocks/"); len(got) != 16 {
		t.Errorf("got %d objects, want 16", len(got))
	}
}

func TestSplitURL(t *testing.T) {
	for _, tt := range []struct {
		url, scheme, rest, wantErr string
	}{
		{url: "/var/lib/v", scheme: SchemeFile, rest: "/var/lib/v"},
		{url: "rel/dir", scheme: SchemeFile, rest: "rel/dir"},
		{url: "file:///var/lib/v", scheme: SchemeFile, rest: "/var/lib/v"},
		{url: "s3://bucket/p", scheme: SchemeS3, rest: "bucket/p"},
		{url: "", wantErr: "empty path"},
		{url: "file://", wantErr: "empty path"},
		{url: "gs://bucket", wantErr: "unsupported scheme"},
	} {
		scheme, rest, err := SplitURL(tt.url)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SplitURL(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
			}
			continue
		}
		if err != nil || scheme != tt.scheme || rest != tt.rest {
			t.Errorf("SplitURL(%q) = %q, %q, %v; want %q, %q", tt.url, scheme, rest, err, tt.scheme, tt.rest)
		}
	}
}
