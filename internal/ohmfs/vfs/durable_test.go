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

	"ohm/internal/ohmfs/meta"
)

func TestParseDurableRanges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []byteRange
		ok   bool
	}{
		{"65536+4096", []byteRange{{65536, 69632}}, true},
		{"65536+4096, 67108864+4096", []byteRange{{65536, 69632}, {67108864, 67112960}}, true},
		{"", nil, false},
		{"65536", nil, false},
		{"65536+0", nil, false},
		{"-1+4096", nil, false},
		{"x+4096", nil, false},
		{"9223372036854775807+4096", nil, false},
		{"0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1,0+1", nil, false},
	} {
		got, err := parseDurableRanges(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parse %q: %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && !equalRanges(got, tc.want) {
			t.Errorf("parse %q = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func equalRanges(a, b []byteRange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDurableRangesXattr(t *testing.T) {
	ctx := context.Background()
	fs, _ := newFS(t, Config{})
	plain, _ := create(t, fs, "plain")
	if err := fs.SetXattr(ctx, plain, XattrDurableRanges, []byte("65536+4096"), 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("durable ranges on a plain file: %v, want EINVAL", err)
	}
	img, _ := makeImage(t, fs, "img")
	if err := fs.SetXattr(ctx, img, XattrDurableRanges, []byte("65536"), 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("malformed durable ranges: %v, want EINVAL", err)
	}
	if err := fs.SetXattr(ctx, img, XattrDurableRanges, []byte("65536+4096"), 0); err != nil {
		t.Fatal(err)
	}
	if v, err := fs.GetXattr(ctx, img, XattrDurableRanges); err != nil || string(v) != "65536+4096" {
		t.Errorf("read back: %q, %v", v, err)
	}
	if err := fs.RemoveXattr(ctx, img, XattrDurableRanges); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.GetXattr(ctx, img, XattrDurableRanges); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("after removal: %v, want ENODATA", err)
	}
}

// TestDurableRangesAreFlushes runs an image whose only flushes are writes
// to its durable range (a filesystem mounted without flush requests, whose
// commit record has a fixed place) over a disk that loses or tears every
// write it was not asked to flush, with folds in between: everything
// acknowledged up to the last commit-record write is there, and of the
// writes after it, a prefix, each one whole. The copy, mounted anew, knows
// the range from meta.
func TestDurableRangesAreFlushes(t *testing.T) {
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
	const commitAt, commitLen = 64 << 10, 4096
	var sz uint64 = span
	if _, err := fs.SetAttr(ctx, ino, meta.SetAttr{Size: &sz}); err != nil {
		t.Fatal(err)
	}
	if err := fs.SetXattr(ctx, ino, XattrDurableRanges, []byte("65536+4096"), 0); err != nil {
		t.Fatal(err)
	}
	// Any write outside the commit record.
	other := func(rng *rand.Rand, n int) int {
		for {
			off := rng.IntN(span-n) &^ 511
			if off+n <= commitAt || off >= commitAt+commitLen {
				return off
			}
		}
	}
	m := &imageModel{data: make([]byte, span)}
	rng := rand.New(rand.NewPCG(7, 8))
	type op struct {
		off  int
		data []byte
	}
	for round := 0; round < 20; round++ {
		for range 20 {
			n := []int{512, 4096, 4096, 65536, 300000}[rng.IntN(5)]
			off := other(rng, n)
			p := randBytes(n, rng.Uint64())
			write(t, fs, ino, fh, int64(off), p)
			m.write(off, p)
		}
		if rng.IntN(3) == 0 {
			if _, err := fs.fold(ctx); err != nil {
				t.Fatal(err)
			}
		}
		rec := randBytes(commitLen, rng.Uint64())
		write(t, fs, ino, fh, commitAt, rec)
		m.write(commitAt, rec)
		flushed := bytes.Clone(m.data)
		var after []op
		for range 1 + rng.IntN(12) {
			n := []int{512, 4096, 8192, 65536}[rng.IntN(4)]
			o := op{other(rng, n), randBytes(n, rng.Uint64())}
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
		if v, err := cfs.GetXattr(ctx, ino, XattrDurableRanges); err != nil || string(v) != "65536+4096" {
			t.Fatalf("round %d: durable ranges of the copy: %q, %v", round, v, err)
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
			t.Fatalf("round %d: the image after losing unflushed writes is neither the state at the last commit-record write nor it plus a prefix of the %d later writes", round, len(after))
		}
		cfs.Release(ctx, ino, cfh)
		if err := cfs.Close(ctx); err != nil {
			t.Fatal(err)
		}
		cv.meta.Close(ctx)
	}
}
