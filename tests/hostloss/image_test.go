package hostloss

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/vfs"
	"ohm/tests/internal/ohmtest"
)

// imageWriter writes random blocks into a device image in a mount and
// keeps what it must read back.
type imageWriter struct {
	f     *os.File
	model []byte
	rng   *rand.Rand
}

const imageSpan = 32 << 20

func newImageWriter(t *testing.T, mp string) *imageWriter {
	t.Helper()
	path := filepath.Join(mp, "workspace.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(path, vfs.XattrLayout, []byte(vfs.LayoutImage), 0); err != nil {
		t.Fatalf("make the image: %v", err)
	}
	if err := f.Truncate(imageSpan); err != nil {
		t.Fatal(err)
	}
	return &imageWriter{f: f, model: make([]byte, imageSpan), rng: rand.New(rand.NewSource(1))}
}

// burst writes n blocks of 4 KiB to 128 KiB at random 4 KiB offsets, as a
// kernel filesystem does, and flushes.
func (w *imageWriter) burst(t *testing.T, n int) {
	t.Helper()
	for range n {
		size := 4096 << w.rng.Intn(6)
		off := w.rng.Intn(imageSpan-size) &^ 4095
		p := make([]byte, size)
		w.rng.Read(p)
		if _, err := w.f.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(w.model[off:], p)
	}
	if err := w.f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// check reads the image at mp back and compares it with the model.
func (w *imageWriter) check(t *testing.T, mp, when string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(mp, "workspace.img"))
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if !bytes.Equal(got, w.model) {
		i := 0
		for i < min(len(got), len(w.model)) && got[i] == w.model[i] {
			i++
		}
		t.Fatalf("%s: the image differs from what was flushed (%d bytes, want %d; first difference at %d)", when, len(got), len(w.model), i)
	}
}

// hostLoss kills the mount and deletes every local file of the volume (its
// metadata cache and the images' write-ahead log with it).
func (v *s3Volume) hostLoss(t *testing.T, p *mountProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	ohmtest.KillServer(t, v.mp)
	ohmtest.ForceUnmount(v.mp)
	if err := os.RemoveAll(v.cache); err != nil {
		t.Fatal(err)
	}
}

// TestImageFsyncReplicaSurvivesHostLoss: with --fsync=replica, a flush of
// a device image returns once its data is in the store and the metadata
// naming it in the replica, so the host can be lost the moment after.
func TestImageFsyncReplicaSurvivesHostLoss(t *testing.T) {
	v := newS3Volume(t)
	p := v.mount(t, "--fsync", "replica")
	w := newImageWriter(t, v.mp)
	for range 5 {
		w.burst(t, 40)
	}
	v.hostLoss(t, p) // at once: no time for the background to ship anything
	w.f.Close()

	p = v.mount(t)
	w.check(t, v.mp, "after the host loss")
	p.stop(t)
	v.fsckClean(t)
}

// TestImageFsyncLocal: with --fsync=local (the default), a flush is
// durable on the host at once (a kill of the mount loses nothing), and
// shipped to the store within about 2 s (then the host can be lost).
func TestImageFsyncLocal(t *testing.T) {
	v := newS3Volume(t)
	p := v.mount(t)
	w := newImageWriter(t, v.mp)
	w.burst(t, 100)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	ohmtest.KillServer(t, v.mp)
	ohmtest.ForceUnmount(v.mp)
	w.f.Close()

	p = v.mount(t)
	w.check(t, v.mp, "after a kill of the mount")
	f, err := os.OpenFile(filepath.Join(v.mp, "workspace.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.f = f
	w.burst(t, 100)
	// The contract's bound, not a speed measurement: a fold (commit
	// interval, 1 s) and the replica's shipping (1 s).
	time.Sleep(3 * time.Second)
	v.hostLoss(t, p)
	w.f.Close()

	p = v.mount(t)
	w.check(t, v.mp, "after a host loss 3 s after the flush")
	p.stop(t)
	v.fsckClean(t)
}
