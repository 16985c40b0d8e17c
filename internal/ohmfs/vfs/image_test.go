package vfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ohm/internal/ohmfs/meta"
)

// makeImage creates name and makes it a device image.
func makeImage(t testing.TB, fs *FS, name string) (meta.Ino, Handle) {
	t.Helper()
	ino, fh := create(t, fs, name)
	if err := fs.SetXattr(context.Background(), ino, XattrLayout, []byte(LayoutImage), 0); err != nil {
		t.Fatalf("make %s an image: %v", name, err)
	}
	return ino, fh
}

// imageModel is what an image must read back as.
type imageModel struct {
	data []byte
}

func (m *imageModel) write(off int, p []byte) {
	if end := off + len(p); end > len(m.data) {
		m.data = append(m.data, make([]byte, end-len(m.data))...)
	}
	copy(m.data[off:], p)
}

func (m *imageModel) zero(off, end int) {
	end = min(end, len(m.data))
	if off < end {
		clear(m.data[off:end])
	}
}

func (m *imageModel) resize(n int) {
	if n < len(m.data) {
		m.data = m.data[:n]
	} else {
		m.data = append(m.data, make([]byte, n-len(m.data))...)
	}
}

// checkImage reads the whole image back and compares it with the model.
func checkImage(t testing.TB, fs *FS, ino meta.Ino, fh Handle, m *imageModel, when string) {
	t.Helper()
	ctx := context.Background()
	a, err := fs.GetAttr(ctx, ino)
	if err != nil {
		t.Fatalf("%s: getattr: %v", when, err)
	}
	if a.Size != uint64(len(m.data)) {
		t.Fatalf("%s: size %d, want %d", when, a.Size, len(m.data))
	}
	got := make([]byte, len(m.data)+4096)
	n, err := fs.Read(ctx, ino, fh, 0, got)
	if err != nil {
		t.Fatalf("%s: read: %v", when, err)
	}
	if n != len(m.data) || !bytes.Equal(got[:n], m.data) {
		i := 0
		for i < min(n, len(m.data)) && got[i] == m.data[i] {
			i++
		}
		t.Fatalf("%s: read %d bytes, want %d; first difference at byte %d", when, n, len(m.data), i)
	}
}

func TestImageLayoutXattr(t *testing.T) {
	ctx := context.Background()
	fs, _ := newFS(t, Config{})
	ino, fh := create(t, fs, "f")
	if _, err := fs.GetXattr(ctx, ino, XattrLayout); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("layout of a plain file: %v, want ENODATA", err)
	}
	write(t, fs, ino, fh, 0, []byte("data"))
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	if err := fs.SetXattr(ctx, ino, XattrLayout, []byte(LayoutImage), 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("image layout on a file with data: %v, want EBUSY", err)
	}
	img, _ := makeImage(t, fs, "img")
	if v, err := fs.GetXattr(ctx, img, XattrLayout); err != nil || string(v) != LayoutImage {
		t.Errorf("layout of an image: %q, %v", v, err)
	}
	if err := fs.SetXattr(ctx, img, XattrLayout, []byte("file"), 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("layout back to file: %v, want EINVAL", err)
	}
	if err := fs.RemoveXattr(ctx, img, XattrLayout); !errors.Is(err, syscall.EPERM) {
		t.Errorf("remove the layout: %v, want EPERM", err)
	}
	names, err := fs.ListXattr(ctx, img)
	if err != nil || len(names) != 0 {
		t.Errorf("listxattr of an image: %v, %v", names, err)
	}
}

// TestImageModel drives an image with the requests a kernel filesystem on
// a loop device sends (writes of 512 bytes to 1 MiB at any alignment,
// punched holes, zeroed ranges, size changes, flushes) mixed with folds
// and remounts, and reads it back byte for byte against a model.
func TestImageModel(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := openVolume(t, dir, true)
	open := func() *FS {
		fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{CommitInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	fs := open()
	ino, fh := makeImage(t, fs, "img")
	const span = 48 << 20
	var sz uint64 = span
	if _, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &sz}); err != nil {
		t.Fatal(err)
	}
	m := &imageModel{data: make([]byte, span)}
	rng := rand.New(rand.NewPCG(7, 8))
	for step := 0; step < 1500; step++ {
		switch op := rng.IntN(100); {
		case op < 60:
			sizes := []int{512, 4096, 4096, 8192, 16384, 65536, 131072, 1 << 20, 3000}
			n := sizes[rng.IntN(len(sizes))]
			off := rng.IntN(span - n)
			if rng.IntN(4) > 0 {
				off &^= 4095
			}
			p := randBytes(n, uint64(step))
			if rng.IntN(10) == 0 {
				clear(p) // zeros: folded as holes
			}
			write(t, fs, ino, fh, int64(off), p)
			m.write(off, p)
		case op < 68:
			off, n := rng.IntN(span), 1+rng.IntN(2<<20)
			mode := uint32(fallocPunchHole | fallocKeepSize)
			if rng.IntN(2) == 0 {
				mode = fallocZeroRange | fallocKeepSize
			}
			if err := fs.Fallocate(ctx, ino, fh, int64(off), int64(n), mode); err != nil {
				t.Fatalf("step %d: fallocate: %v", step, err)
			}
			m.zero(off, off+n)
		case op < 71:
			n := uint64(rng.IntN(span))
			if rng.IntN(2) == 0 {
				n = span
			}
			if _, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &n}); err != nil {
				t.Fatalf("step %d: truncate: %v", step, err)
			}
			m.resize(int(n))
		case op < 85:
			if err := fs.Fsync(ctx, ino, fh, false); err != nil {
				t.Fatalf("step %d: fsync: %v", step, err)
			}
		case op < 95:
			if err := fs.Sync(ctx); err != nil {
				t.Fatalf("step %d: sync: %v", step, err)
			}
		case op < 97:
			checkImage(t, fs, ino, fh, m, fmt.Sprintf("step %d", step))
		default:
			checkImage(t, fs, ino, fh, m, fmt.Sprintf("step %d, before a remount", step))
			fs.Release(ctx, ino, fh)
			if err := fs.Close(ctx); err != nil {
				t.Fatal(err)
			}
			fs = open()
			var err error
			if fh, err = fs.Open(ctx, ino, syscall.O_RDWR); err != nil {
				t.Fatal(err)
			}
			checkImage(t, fs, ino, fh, m, fmt.Sprintf("step %d, after a remount", step))
		}
	}
	checkImage(t, fs, ino, fh, m, "the end")
	fs.Release(ctx, ino, fh)
	if err := fs.Close(ctx); err != nil {
		t.Fatal(err)
	}
	probs, err := v.meta.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("check: inode %d: %s", p.Ino, p.Detail)
	}
	a, err := v.meta.GetAttr(ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	var used uint64
	for i := 0; i < len(m.data); i += pageSize {
		if !allZero(m.data[i:min(i+pageSize, len(m.data))]) {
			used += pageSize
		}
	}
	if a.Used != used {
		t.Errorf("used %d bytes, want %d (the pages that are not zeros)", a.Used, used)
	}
	v.meta.Close(ctx)
}

// copyTree copies the regular files under src to dst.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, "-shm") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestImageReplay takes copies of a volume's files while an image is
// being written (the state a crash with the host's page cache intact
// leaves: everything written, only part of it committed or folded) and
// checks that each copy mounts with exactly the image's content at the
// moment of the copy: the log's records past meta's checkpoint replay
// over the extents.
func TestImageReplay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := openVolume(t, dir, true)
	defer v.meta.Close(ctx)
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{CommitInterval: time.Hour, GCInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close(ctx)
	ino, fh := makeImage(t, fs, "img")
	if err := fs.Fsync(ctx, ino, fh, false); err != nil {
		t.Fatal(err)
	}
	const span = 16 << 20
	m := &imageModel{}
	rng := rand.New(rand.NewPCG(3, 4))
	replayed := 0
	defer func() {
		if replayed == 0 {
			t.Error("no copy replayed any record: the test tests nothing")
		}
	}()
	for round := 0; round < 12; round++ {
		for step := 0; step < 60; step++ {
			switch op := rng.IntN(20); {
			case op < 14:
				n := []int{4096, 4096, 16384, 131072, 1 << 20, 700}[rng.IntN(6)]
				off := rng.IntN(span-n) &^ 511
				p := randBytes(n, uint64(round*1000+step))
				write(t, fs, ino, fh, int64(off), p)
				m.write(off, p)
			case op < 16:
				off, n := rng.IntN(span), rng.IntN(1<<20)+1
				if err := fs.Fallocate(ctx, ino, fh, int64(off), int64(n), fallocPunchHole|fallocKeepSize); err != nil {
					t.Fatal(err)
				}
				m.zero(off, off+n)
			case op < 17:
				n := uint64(rng.IntN(span))
				if _, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &n}); err != nil {
					t.Fatal(err)
				}
				m.resize(int(n))
			case op < 19:
				if err := fs.Fsync(ctx, ino, fh, false); err != nil {
					t.Fatal(err)
				}
			default:
				// A fold whose commit has not happened yet, or has.
				if rng.IntN(2) == 0 {
					if _, err := fs.fold(ctx); err != nil {
						t.Fatal(err)
					}
				} else if err := fs.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		snap := filepath.Join(t.TempDir(), "copy")
		copyTree(t, dir, snap)
		cv := openVolume(t, snap, false)
		cfs, err := New(ctx, cv.meta, cv.bs, 1<<50, Config{CommitInterval: time.Hour})
		if err != nil {
			t.Fatalf("round %d: mount the copy: %v", round, err)
		}
		cfh, err := cfs.Open(ctx, ino, syscall.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		cfs.mu.Lock()
		if f := cfs.files[ino]; f != nil {
			replayed += f.spans.len()
		}
		cfs.mu.Unlock()
		checkImage(t, cfs, ino, cfh, m, fmt.Sprintf("copy %d", round))
		cfs.Release(ctx, ino, cfh)
		if err := cfs.Close(ctx); err != nil {
			t.Fatal(err)
		}
		probs, err := cv.meta.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range probs {
			t.Errorf("copy %d: check: inode %d: %s", round, p.Ino, p.Detail)
		}
		cv.meta.Close(ctx)
	}
}

// loseUnflushed makes the copy of a log in dir look like a disk that lost
// what was never flushed: in each segment, every page past what the last
// fdatasync covered is kept, zeroed or filled with garbage at random (a
// host's writeback persists some pages and not others, in any order, and
// may tear one).
func loseUnflushed(t *testing.T, w *wal, dir string, rng *rand.Rand) {
	t.Helper()
	w.mu.Lock()
	type seg struct {
		name   string
		synced uint64
	}
	var segs []seg
	for _, s := range w.segs {
		segs = append(segs, seg{filepath.Base(s.f.Name()), s.synced})
	}
	w.mu.Unlock()
	for _, s := range segs {
		p := filepath.Join(dir, s.name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for off := int(s.synced) &^ (pageSize - 1); off < len(b); off += pageSize {
			page := b[off:min(off+pageSize, len(b))]
			lo := max(0, int(s.synced)-off) // bytes of the page that were flushed
			switch rng.IntN(3) {
			case 0: // kept
			case 1:
				clear(page[lo:])
			default:
				for i := lo; i < len(page); i++ {
					page[i] = byte(rng.Uint32())
				}
			}
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImageLosesOnlyUnflushedWrites runs an image over a disk that loses
// (or tears) every write it was not asked to flush, and checks the block
// device contract: everything acknowledged before the last completed
// flush is there, and of the writes after it, what survived is a prefix,
// each one whole (a record is applied whole or not at all).
func TestImageLosesOnlyUnflushedWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := openVolume(t, dir, true)
	defer v.meta.Close(ctx)
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{CommitInterval: time.Hour, GCInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close(ctx)
	ino, fh := makeImage(t, fs, "img")
	const span = 8 << 20
	var sz uint64 = span
	if _, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &sz}); err != nil {
		t.Fatal(err)
	}
	m := &imageModel{data: make([]byte, span)}
	rng := rand.New(rand.NewPCG(5, 6))
	type op struct {
		off  int
		data []byte
	}
	for round := 0; round < 25; round++ {
		// Flushed writes, with folds now and then.
		for range 20 {
			n := []int{512, 4096, 4096, 65536, 300000}[rng.IntN(5)]
			off := rng.IntN(span - n)
			p := randBytes(n, rng.Uint64())
			write(t, fs, ino, fh, int64(off), p)
			m.write(off, p)
		}
		if rng.IntN(3) == 0 {
			if _, err := fs.fold(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := fs.Fsync(ctx, ino, fh, false); err != nil {
			t.Fatal(err)
		}
		flushed := bytes.Clone(m.data)
		// Writes nobody flushed.
		var after []op
		for range 1 + rng.IntN(12) {
			n := []int{512, 4096, 8192, 65536}[rng.IntN(4)]
			o := op{rng.IntN(span - n), randBytes(n, rng.Uint64())}
			write(t, fs, ino, fh, int64(o.off), o.data)
			m.write(o.off, o.data)
			after = append(after, o)
		}

		snap := filepath.Join(t.TempDir(), "copy")
		copyTree(t, dir, snap)
		loseUnflushed(t, fs.log(), filepath.Join(snap, "wal"), rng)
		cv := openVolume(t, snap, false)
		cfs, err := New(ctx, cv.meta, cv.bs, 1<<50, Config{CommitInterval: time.Hour})
		if err != nil {
			t.Fatalf("round %d: mount the copy: %v", round, err)
		}
		cfh, err := cfs.Open(ctx, ino, syscall.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, span)
		if n, err := cfs.Read(ctx, ino, cfh, 0, got); err != nil || n != span {
			t.Fatalf("round %d: read the copy: %d, %v", round, n, err)
		}
		want := bytes.Clone(flushed)
		match := bytes.Equal(got, want)
		for j := 0; j < len(after) && !match; j++ {
			copy(want[after[j].off:], after[j].data)
			match = bytes.Equal(got, want)
		}
		if !match {
			t.Fatalf("round %d: the image after losing unflushed writes is neither the flushed state nor it plus a prefix of the %d later writes", round, len(after))
		}
		cfs.Release(ctx, ino, cfh)
		if err := cfs.Close(ctx); err != nil {
			t.Fatal(err)
		}
		cv.meta.Close(ctx)
	}
}
