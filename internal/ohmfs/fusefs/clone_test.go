package fusefs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/vfs"
	"ohm/internal/ohmfs/volume"
)

// makeImageFile creates a device image at path holding data.
func makeImageFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), vfs.XattrLayout, []byte(vfs.LayoutImage), 0); err != nil {
		t.Fatalf("make %s an image: %v", path, err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func pwrite(t *testing.T, path string, off int64, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func overwrite(want []byte, off int, p []byte) { copy(want[off:], p) }

// TestCloneThroughMount clones a 100 MiB image through the mount, once
// with the clone control and once with copy_file_range, overwrites parts
// of each, deletes the source, collects garbage and checks that every
// copy reads back byte for byte and that fsck finds nothing.
func TestCloneThroughMount(t *testing.T) {
	tv := newTestVolume(t)
	const size = 100 << 20
	want := make([]byte, size)
	rand.Read(want)
	src := tv.path("src.img")
	makeImageFile(t, src, want)
	if err := os.Mkdir(tv.path("ckpt"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A cached negative entry and listing must not hide the clone.
	if _, err := os.Stat(tv.path("ckpt/a.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tv.path("ckpt")); len(ents) != 0 {
		t.Fatal("new directory not empty")
	}

	// The first clone folds what the log holds into packs first.
	start := time.Now()
	if err := unix.Setxattr(src, vfs.XattrClone, []byte("ckpt/a.img"), 0); err != nil {
		t.Fatalf("clone: %v", err)
	}
	t.Logf("clone of a %d MiB image, with its fold: %v", size>>20, time.Since(start))
	start = time.Now()
	if err := unix.Setxattr(src, vfs.XattrClone, []byte("ckpt/c.img"), 0); err != nil {
		t.Fatalf("clone: %v", err)
	}
	t.Logf("clone of a %d MiB image, folded: %v", size>>20, time.Since(start))
	err := unix.Setxattr(src, vfs.XattrClone, []byte("ckpt/a.img"), 0)
	if !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second clone onto the same name: %v, want EEXIST", err)
	}
	if ents, _ := os.ReadDir(tv.path("ckpt")); len(ents) != 2 {
		t.Fatalf("listing after the clone has %d entries", len(ents))
	}
	a := tv.path("ckpt/a.img")

	// copy_file_range: the kernel sends it in pieces of under 4 GiB.
	b := tv.path("b.img")
	start = time.Now()
	copyRange(t, src, b, size)
	t.Logf("copy_file_range of a %d MiB image: %v", size>>20, time.Since(start))

	wantA, wantB, orig := bytes.Clone(want), bytes.Clone(want), bytes.Clone(want)
	for i, off := range []int{0, 7 << 20, 50<<20 + 4096, size - 32768} {
		p := make([]byte, 4096*(i+1))
		rand.Read(p)
		pwrite(t, src, int64(off), p)
		overwrite(want, off, p)
		q := make([]byte, 8192)
		rand.Read(q)
		pwrite(t, a, int64(off), q)
		overwrite(wantA, off, q)
		rand.Read(q)
		pwrite(t, b, int64(off)/2, q)
		overwrite(wantB, off/2, q)
	}
	for name, w := range map[string][]byte{src: want, a: wantA, b: wantB} {
		if got := mustRead(t, name); !bytes.Equal(got, w) {
			i := 0
			for i < min(len(got), len(w)) && got[i] == w[i] {
				i++
			}
			t.Fatalf("%s reads back wrong after the overwrites: %d bytes, want %d, first difference at %d (matches the source there: %v)", name, len(got), len(w), i, i < len(got) && got[i] == want[i])
		}
	}

	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	if err := tv.m.FS().Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	tv.unmount()
	ctx := context.Background()
	res, err := volume.GCWith(ctx, tv.url, volume.GCOptions{})
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	t.Logf("gc: %+v", res)
	probs, err := volume.Fsck(ctx, tv.url)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("fsck: %+v", p)
	}
	tv.mount()
	c := tv.path("ckpt/c.img")
	for name, w := range map[string][]byte{a: wantA, b: wantB, c: orig} {
		if got := mustRead(t, name); !bytes.Equal(got, w) {
			t.Fatalf("%s reads back wrong after its source was deleted and collected", filepath.Base(name))
		}
	}
}

// copyRange copies n bytes of src to a new file dst with copy_file_range.
func copyRange(t *testing.T, src, dst string, n int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var off int64
	for off < n {
		offIn, offOut := off, off
		c, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, int(n-off), 0)
		if err != nil {
			t.Fatalf("copy_file_range at %d: %v", off, err)
		}
		if c == 0 {
			t.Fatalf("copy_file_range at %d copied nothing", off)
		}
		off += int64(c)
	}
}
