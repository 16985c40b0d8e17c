package vfs

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
)

// volume is a real meta database and block store in a directory.
type volume struct {
	dir  string
	meta *meta.DB
	objs *objstore.FileStore
	bs   *blockstore.Store
}

func openVolume(t testing.TB, dir string, create bool) *volume {
	t.Helper()
	ctx := context.Background()
	mp := filepath.Join(dir, "meta.db")
	if create {
		if err := meta.Create(ctx, mp, 0, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	m, err := meta.Open(ctx, mp, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := objstore.NewFile(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	return &volume{dir: dir, meta: m, objs: objs, bs: blockstore.New(objs, blockstore.Options{})}
}

func newFS(t testing.TB, cfg Config) (*FS, *volume) {
	t.Helper()
	v := openVolume(t, t.TempDir(), true)
	fs, err := New(context.Background(), v.meta, v.bs, 1<<50, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := fs.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := v.meta.Close(ctx); err != nil {
			t.Errorf("close meta: %v", err)
		}
	})
	return fs, v
}

var root = Caller{Uid: 0, Gid: 0}

func create(t testing.TB, fs *FS, name string) (meta.Ino, Handle) {
	t.Helper()
	a, fh, err := fs.Create(context.Background(), root, meta.RootIno, name, 0o644, syscall.O_RDWR)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return a.Ino, fh
}

func write(t testing.TB, fs *FS, ino meta.Ino, fh Handle, off int64, data []byte) {
	t.Helper()
	n, err := fs.Write(context.Background(), ino, fh, off, data)
	if err != nil || n != len(data) {
		t.Fatalf("write %d bytes at %d: n=%d err=%v", len(data), off, n, err)
	}
}

func readAll(t testing.TB, fs *FS, ino meta.Ino, fh Handle) []byte {
	t.Helper()
	a, err := fs.GetAttr(context.Background(), ino)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, a.Size+100)
	var out []byte
	off := int64(0)
	for {
		// Read in odd-sized pieces to cross chunk boundaries.
		piece := buf[:min(len(buf), 1<<20+7)]
		n, err := fs.Read(context.Background(), ino, fh, off, piece)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if n == 0 {
			break
		}
		out = append(out, piece[:n]...)
		off += int64(n)
	}
	if uint64(len(out)) != a.Size {
		t.Fatalf("read %d bytes, size %d", len(out), a.Size)
	}
	return out
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// model applies a write to the expected content.
func model(want []byte, off int, data []byte) []byte {
	if end := off + len(data); end > len(want) {
		want = append(want, make([]byte, end-len(want))...)
	}
	copy(want[off:], data)
	return want
}

func TestWriteReadRoundTrip(t *testing.T) {
	const cs = meta.ChunkSize
	type w struct {
		off, n int
	}
	tests := []struct {
		name   string
		writes []w
	}{
		{"empty", nil},
		{"tiny", []w{{0, 10}}},
		{"inline max", []w{{0, 64 << 10}}},
		{"just past inline", []w{{0, 64<<10 + 1}}},
		{"grow past inline", []w{{0, 1000}, {1000, 64 << 10}}},
		{"one chunk", []w{{0, cs}}},
		{"across a boundary", []w{{cs - 100, 300}}},
		{"sequential 1MiB", []w{{0, 1 << 20}, {1 << 20, 1 << 20}, {2 << 20, 1 << 20}, {3 << 20, 1 << 20}, {4 << 20, 1 << 20}, {5 << 20, 123}}},
		{"overwrite middle", []w{{0, 3 * cs}, {cs + 5, 1000}}},
		{"sparse far", []w{{5*cs + 17, 4096}}},
		{"big unaligned", []w{{12345, 2*cs + 999}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := newFS(t, Config{})
			ino, fh := create(t, fs, "f")
			var want []byte
			for j, wr := range tt.writes {
				d := randBytes(wr.n, uint64(i*100+j))
				write(t, fs, ino, fh, int64(wr.off), d)
				want = model(want, wr.off, d)
			}
			if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
				t.Fatalf("before flush: content differs")
			}
			if err := fs.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
				t.Fatalf("after flush: content differs")
			}
			if err := fs.Release(context.Background(), ino, fh); err != nil {
				t.Fatal(err)
			}
			fh2, err := fs.Open(context.Background(), ino, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, fs, ino, fh2); !bytes.Equal(got, want) {
				t.Fatalf("reopened: content differs")
			}
		})
	}
}

var _ = errors.Is
var _ = time.Second
