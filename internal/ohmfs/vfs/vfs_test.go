package vfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	out, err := readFile(fs, ino, fh)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// createFile and readFile are create and readAll for goroutines, which
// must not fail the test themselves: they return what went wrong.
func createFile(fs *FS, name string) (meta.Ino, Handle, error) {
	a, fh, err := fs.Create(context.Background(), root, meta.RootIno, name, 0o644, syscall.O_RDWR)
	if err != nil {
		return 0, 0, fmt.Errorf("create %s: %w", name, err)
	}
	return a.Ino, fh, nil
}

func readFile(fs *FS, ino meta.Ino, fh Handle) ([]byte, error) {
	a, err := fs.GetAttr(context.Background(), ino)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, a.Size+100)
	var out []byte
	off := int64(0)
	for {
		// Read in odd-sized pieces to cross chunk boundaries.
		piece := buf[:min(len(buf), 1<<20+7)]
		n, err := fs.Read(context.Background(), ino, fh, off, piece)
		if err != nil {
			return nil, fmt.Errorf("read at %d: %w", off, err)
		}
		if n == 0 {
			break
		}
		out = append(out, piece[:n]...)
		off += int64(n)
	}
	if uint64(len(out)) != a.Size {
		return nil, fmt.Errorf("read %d bytes, size %d", len(out), a.Size)
	}
	return out, nil
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

func chunksOf(t testing.TB, v *volume, ino meta.Ino) []meta.Chunk {
	t.Helper()
	cs, err := v.meta.Chunks(context.Background(), ino, 0, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func freedIDs(t testing.TB, v *volume) map[uint64]bool {
	t.Helper()
	fb, err := v.meta.FreedBlocks(context.Background(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint64]bool{}
	for _, b := range fb {
		ids[b.ID] = true
	}
	return ids
}

func checkClean(t testing.TB, v *volume) {
	t.Helper()
	probs, err := v.meta.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("meta check: inode %d: %s", p.Ino, p.Detail)
	}
}

func TestOverwriteMakesNewBlock(t *testing.T) {
	ctx := context.Background()
	fs, v := newFS(t, Config{})
	ino, fh := create(t, fs, "f")
	data := randBytes(2*meta.ChunkSize, 1)
	write(t, fs, ino, fh, 0, data)
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	before := chunksOf(t, v, ino)
	if len(before) != 2 || before[0].BlockID == 0 || before[1].BlockID == 0 {
		t.Fatalf("chunks after first write: %+v", before)
	}
	patch := randBytes(1000, 2)
	write(t, fs, ino, fh, meta.ChunkSize+100, patch)
	data = model(data, meta.ChunkSize+100, patch)
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	after := chunksOf(t, v, ino)
	if after[0].BlockID != before[0].BlockID {
		t.Errorf("untouched chunk 0 got a new block")
	}
	if after[1].BlockID == before[1].BlockID {
		t.Fatalf("overwritten chunk 1 kept its block %d", before[1].BlockID)
	}
	if !freedIDs(t, v)[before[1].BlockID] {
		t.Errorf("old block %d of chunk 1 is not on the freed list", before[1].BlockID)
	}
	if got := readAll(t, fs, ino, fh); !bytes.Equal(got, data) {
		t.Fatal("content differs after overwrite")
	}
	checkClean(t, v)
}

func TestSparseAndHoles(t *testing.T) {
	ctx := context.Background()
	fs, v := newFS(t, Config{})
	ino, fh := create(t, fs, "sparse")
	const cs = meta.ChunkSize
	d := randBytes(4096, 3)
	write(t, fs, ino, fh, 10*cs, d)
	write(t, fs, ino, fh, 2*cs, make([]byte, cs)) // a whole chunk of zeros: a hole
	check := func(stage string) {
		a, err := fs.GetAttr(ctx, ino)
		if err != nil {
			t.Fatal(err)
		}
		if a.Size != 10*cs+4096 {
			t.Errorf("%s: size %d", stage, a.Size)
		}
		// While dirty, a chunk of zeros may still count until the
		// flush finds it is a hole.
		if a.Used != 4096 && (stage != "dirty" || a.Used != 4096+cs) {
			t.Errorf("%s: used %d, want 4096", stage, a.Used)
		}
		buf := make([]byte, 8192)
		n, err := fs.Read(ctx, ino, fh, 10*cs-4096, buf)
		if err != nil || n != 8192 {
			t.Fatalf("%s: read n=%d err=%v", stage, n, err)
		}
		if !allZero(buf[:4096]) || !bytes.Equal(buf[4096:], d) {
			t.Errorf("%s: hole or data wrong", stage)
		}
		off, err := fs.Lseek(ctx, ino, fh, 0, 3)
		if err != nil || (off != 10*cs && (stage != "dirty" || off != 2*cs)) {
			t.Errorf("%s: SEEK_DATA = %d, %v", stage, off, err)
		}
		off, err = fs.Lseek(ctx, ino, fh, 10*cs, 4)
		if err != nil || off != 10*cs+4096 {
			t.Errorf("%s: SEEK_HOLE = %d, %v", stage, off, err)
		}
		if _, err := fs.Lseek(ctx, ino, fh, 10*cs+4096, 3); !errors.Is(err, syscall.ENXIO) {
			t.Errorf("%s: SEEK_DATA at EOF: %v", stage, err)
		}
	}
	check("dirty")
	if err := fs.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check("flushed")
	if cs := chunksOf(t, v, ino); len(cs) != 1 || cs[0].Index != 10 {
		t.Errorf("stored chunks %+v, want only chunk 10", cs)
	}
	// Punch the data away.
	if err := fs.Fallocate(ctx, ino, fh, 10*cs, 4096, fallocPunchHole|fallocKeepSize); err != nil {
		t.Fatal(err)
	}
	if err := fs.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := fs.GetAttr(ctx, ino)
	if a.Used != 0 || a.Size != 10*cs+4096 {
		t.Errorf("after punch: used %d size %d", a.Used, a.Size)
	}
	checkClean(t, v)
}

func TestTruncate(t *testing.T) {
	const cs = meta.ChunkSize
	tests := []struct {
		name       string
		size       int
		cut, grow  int
		flushFirst bool
	}{
		{"small inline", 5000, 100, 9000, true},
		{"small dirty", 5000, 100, 9000, false},
		{"block mid chunk", 2*cs + 500, cs + 77, 3 * cs, true},
		{"block mid chunk dirty", 2*cs + 500, cs + 77, 3 * cs, false},
		{"block to inline size", 2 * cs, 1000, cs, true},
		{"on boundary", 3 * cs, cs, 2 * cs, true},
		{"to zero", cs + 5, 0, 10, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			fs, v := newFS(t, Config{})
			ino, fh := create(t, fs, "f")
			want := randBytes(tt.size, uint64(i))
			write(t, fs, ino, fh, 0, want)
			if tt.flushFirst {
				if err := fs.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range []int{tt.cut, tt.grow} {
				sz := uint64(n)
				a, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &sz})
				if err != nil {
					t.Fatal(err)
				}
				if a.Size != sz {
					t.Fatalf("size %d after truncate to %d", a.Size, sz)
				}
				if n < len(want) {
					want = want[:n]
				} else {
					want = append(want, make([]byte, n-len(want))...)
				}
				if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
					t.Fatalf("after truncate to %d: content differs", n)
				}
				if err := fs.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
					t.Fatalf("after truncate to %d and sync: content differs", n)
				}
				checkClean(t, v)
			}
			// Re-extend by writing past the end: the gap reads as zeros.
			tail := randBytes(10, 99)
			write(t, fs, ino, fh, int64(len(want))+3000, tail)
			want = model(want, len(want)+3000, tail)
			if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
				t.Fatal("after re-extend: content differs")
			}
		})
	}
}

func TestUnlinkOpenFile(t *testing.T) {
	ctx := context.Background()
	for _, how := range []string{"unlink", "rename over"} {
		t.Run(how, func(t *testing.T) {
			fs, v := newFS(t, Config{})
			ino, fh := create(t, fs, "victim")
			data := randBytes(meta.ChunkSize+10, 5)
			write(t, fs, ino, fh, 0, data)
			if err := fs.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			blocks := chunksOf(t, v, ino)
			switch how {
			case "unlink":
				if err := fs.Unlink(ctx, meta.RootIno, "victim"); err != nil {
					t.Fatal(err)
				}
			default:
				other, ofh := create(t, fs, "other")
				write(t, fs, other, ofh, 0, []byte("new"))
				if err := fs.Rename(ctx, meta.RootIno, "other", meta.RootIno, "victim", 0); err != nil {
					t.Fatal(err)
				}
			}
			if got := readAll(t, fs, ino, fh); !bytes.Equal(got, data) {
				t.Fatal("open unlinked file: content differs")
			}
			// Still writable.
			write(t, fs, ino, fh, 0, []byte("xyz"))
			if err := fs.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if o, _ := v.meta.Orphans(ctx); len(o) != 1 || o[0] != ino {
				t.Fatalf("orphans %v, want [%d]", o, ino)
			}
			if err := fs.Release(ctx, ino, fh); err != nil {
				t.Fatal(err)
			}
			if _, err := fs.GetAttr(ctx, ino); !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("getattr after last close: %v", err)
			}
			freed := freedIDs(t, v)
			for _, c := range blocks {
				if c.BlockID != 0 && !freed[c.BlockID] {
					t.Errorf("block %d of the purged file not freed", c.BlockID)
				}
			}
			checkClean(t, v)
		})
	}
}

func TestOrphanPurgedOnNew(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := openVolume(t, dir, true)
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ino, fh := create(t, fs, "f")
	write(t, fs, ino, fh, 0, []byte("hello"))
	if err := fs.Unlink(ctx, meta.RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	// A "crash" with the file still open: close without Release.
	if err := fs.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.meta.Close(ctx); err != nil {
		t.Fatal(err)
	}
	v = openVolume(t, dir, false)
	defer v.meta.Close(ctx)
	if o, _ := v.meta.Orphans(ctx); len(o) != 1 {
		t.Fatalf("orphans before New: %v", o)
	}
	fs, err = New(ctx, v.meta, v.bs, 1<<50, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close(ctx)
	if o, _ := v.meta.Orphans(ctx); len(o) != 0 {
		t.Fatalf("orphans after New: %v", o)
	}
}

func TestCommitInterval(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := openVolume(t, dir, true)
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{CommitInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { fs.Close(ctx); v.meta.Close(ctx) }()
	ino, fh := create(t, fs, "f")
	data := randBytes(meta.ChunkSize+5000, 7)
	write(t, fs, ino, fh, 0, data)
	// Poll a read-only view of the committed database.
	ro, err := meta.Open(ctx, filepath.Join(dir, "meta.db"), meta.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, err := ro.Lookup(ctx, meta.RootIno, "f")
		if err == nil && a.Size == uint64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write not committed: %+v %v", a, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cs, err := ro.Chunks(ctx, ino, 0, 10)
	if err != nil || len(cs) != 2 {
		t.Fatalf("committed chunks %+v %v", cs, err)
	}
	for _, c := range cs {
		got, err := v.bs.Get(ctx, c.BlockID)
		if err != nil {
			t.Fatal(err)
		}
		want := data[c.Index*meta.ChunkSize:]
		want = want[:min(len(want), meta.ChunkSize)]
		if !bytes.Equal(got[:c.Len], want) {
			t.Errorf("chunk %d differs", c.Index)
		}
	}
}

func TestGCDeletesFreedBlocks(t *testing.T) {
	ctx := context.Background()
	fs, v := newFS(t, Config{GCGrace: -1, GCInterval: time.Hour})
	ino, fh := create(t, fs, "f")
	write(t, fs, ino, fh, 0, randBytes(meta.ChunkSize, 8))
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	id := chunksOf(t, v, ino)[0].BlockID
	if _, err := v.bs.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
	fs.Release(ctx, ino, fh)
	if err := fs.Unlink(ctx, meta.RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	res, err := fs.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.DeletedBlocks != 1 {
		t.Errorf("GC deleted %d blocks, want 1", res.DeletedBlocks)
	}
	if _, err := v.objs.Head(ctx, blockstore.Key(id)); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("block %d still stored after GC: %v", id, err)
	}
	if len(freedIDs(t, v)) != 0 {
		t.Fatal("freed list not emptied")
	}
}

func TestSetgidDirectory(t *testing.T) {
	ctx := context.Background()
	fs, _ := newFS(t, Config{})
	d, err := fs.Mkdir(ctx, root, meta.RootIno, "d", 0o2775)
	if err != nil {
		t.Fatal(err)
	}
	gid := uint32(50)
	if _, err := fs.SetAttr(ctx, d.Ino, meta.SetAttr{Gid: &gid}); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o2775)
	if _, err := fs.SetAttr(ctx, d.Ino, meta.SetAttr{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	user := Caller{Uid: 1000, Gid: 1000}
	sub, err := fs.Mkdir(ctx, user, d.Ino, "sub", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Gid != gid || sub.Mode&syscall.S_ISGID == 0 {
		t.Errorf("subdir gid %d mode %o", sub.Gid, sub.Mode)
	}
	f, fh, err := fs.Create(ctx, user, d.Ino, "f", 0o644, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	fs.Release(ctx, f.Ino, fh)
	if f.Gid != gid {
		t.Errorf("file gid %d", f.Gid)
	}
}

// TestSyncBetweenWrites flushes between the writes, so that later writes
// meet stored chunks (inline, then blocks) rather than dirty buffers.
func TestSyncBetweenWrites(t *testing.T) {
	const cs = meta.ChunkSize
	type op struct {
		off, n int
		punch  bool
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"inline one byte grows into a block", []op{{0, 1, false}, {100000, 10, false}}},
		{"inline grows by append", []op{{0, 5000, false}, {5000, 70000, false}}},
		{"block partial overwrite", []op{{0, cs + 10, false}, {10, 10, false}, {cs + 5, 1, false}}},
		{"punch partial stored chunk", []op{{0, 2*cs + 10, false}, {100, 5000, true}, {cs - 10, 30, true}}},
		{"punch whole chunk", []op{{0, 3 * cs, false}, {cs, cs, true}}},
		{"punch inline", []op{{0, 3000, false}, {1000, 100, true}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			fs, v := newFS(t, Config{})
			ino, fh := create(t, fs, "f")
			var want []byte
			for j, o := range tt.ops {
				if o.punch {
					if err := fs.Fallocate(ctx, ino, fh, int64(o.off), int64(o.n), fallocPunchHole|fallocKeepSize); err != nil {
						t.Fatal(err)
					}
					want = model(want, o.off, make([]byte, min(o.n, len(want)-o.off)))
				} else {
					d := randBytes(o.n, uint64(i*10+j))
					write(t, fs, ino, fh, int64(o.off), d)
					want = model(want, o.off, d)
				}
				if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
					t.Fatalf("op %d: content differs before sync", j)
				}
				if err := fs.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, fs, ino, fh); !bytes.Equal(got, want) {
					t.Fatalf("op %d: content differs after sync", j)
				}
				checkClean(t, v)
			}
			if len(want) > 64<<10 {
				for _, c := range chunksOf(t, v, ino) {
					if c.BlockID == 0 {
						t.Errorf("file of %d bytes has inline chunk %d", len(want), c.Index)
					}
				}
			}
		})
	}
}

// TestDirtyMemoryBounded streams a file much larger than MaxDirty and
// checks the dirty data held in memory stays bounded.
func TestDirtyMemoryBounded(t *testing.T) {
	ctx := context.Background()
	const maxDirty = 16 << 20
	fs, _ := newFS(t, Config{MaxDirty: maxDirty, CommitInterval: time.Hour})
	ino, fh := create(t, fs, "big")
	buf := randBytes(1<<20, 4)
	peak := int64(0)
	for off := int64(0); off < 256<<20; off += 1 << 20 {
		write(t, fs, ino, fh, off, buf)
		peak = max(peak, fs.mem.load())
	}
	// One write may add a chunk buffer past the bound before the next waits.
	if peak > maxDirty+2*meta.ChunkSize {
		t.Fatalf("dirty memory peaked at %d bytes, bound %d", peak, maxDirty)
	}
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	if n := fs.mem.load(); n != 0 {
		t.Fatalf("%d dirty bytes accounted after fsync", n)
	}
}

// TestConcurrentStress runs random writes, truncates, punches and fsyncs
// on several files at once, with a fast commit loop and a small dirty
// bound, and compares each file with a model.
func TestConcurrentStress(t *testing.T) {
	ctx := context.Background()
	const cs = meta.ChunkSize
	fs, v := newFS(t, Config{CommitInterval: 5 * time.Millisecond, MaxDirty: 16 << 20})
	iters := 150
	if testing.Short() {
		iters = 40
	}
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			errs <- func() error {
				r := rand.New(rand.NewPCG(uint64(g), 3))
				ino, fh, err := createFile(fs, fmt.Sprintf("f%d", g))
				if err != nil {
					return err
				}
				var want []byte
				for i := range iters {
					switch op := r.IntN(10); {
					case op < 6:
						off := r.IntN(3 * cs)
						n := r.IntN(cs + cs/2)
						if r.IntN(3) == 0 {
							n = r.IntN(5000)
						}
						d := randBytes(n, uint64(g*100000+i))
						if _, err := fs.Write(ctx, ino, fh, int64(off), d); err != nil {
							return err
						}
						want = model(want, off, d)
					case op < 8:
						n := r.IntN(3 * cs)
						if r.IntN(2) == 0 {
							n = r.IntN(70000)
						}
						sz := uint64(n)
						if _, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &sz}); err != nil {
							return err
						}
						if n < len(want) {
							want = want[:n]
						} else {
							want = append(want, make([]byte, n-len(want))...)
						}
					case op < 9:
						if len(want) == 0 {
							continue
						}
						off, n := r.IntN(len(want)), r.IntN(2*cs)
						if err := fs.Fallocate(ctx, ino, fh, int64(off), int64(n), fallocPunchHole|fallocKeepSize); err != nil {
							return err
						}
						want = model(want, off, make([]byte, min(n, len(want)-off)))
					default:
						if err := fs.Fsync(ctx, ino, fh, false); err != nil {
							return err
						}
					}
					if r.IntN(8) == 0 {
						got, err := readFile(fs, ino, fh)
						if err != nil {
							return fmt.Errorf("file %d op %d: %w", g, i, err)
						}
						if !bytes.Equal(got, want) {
							return fmt.Errorf("file %d op %d: content differs", g, i)
						}
					}
				}
				if err := fs.Fsync(ctx, ino, fh, false); err != nil {
					return err
				}
				got, err := readFile(fs, ino, fh)
				if err != nil {
					return fmt.Errorf("file %d: %w", g, err)
				}
				if !bytes.Equal(got, want) {
					return fmt.Errorf("file %d: final content differs", g)
				}
				return fs.Release(ctx, ino, fh)
			}()
		}()
	}
	for range 4 { // all of them, so that none runs on past the test
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	if err := fs.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkClean(t, v)
	if n := fs.mem.load(); n != 0 {
		t.Errorf("%d dirty bytes accounted after sync", n)
	}
}
