package mount

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/ohmfs/volume"
)

// TestServerKilledUnderDisk: the server of a volume is killed (SIGKILL)
// while a kernel filesystem on a loop device over an image in the volume
// takes fsynced writes. The keeper starts a new server on the same FUSE
// connection; the writer only waits (no error), every write reads back,
// and the filesystem and the volume check clean afterwards.
func TestServerKilledUnderDisk(t *testing.T) {
	for _, kind := range []disk.Kind{disk.Ext4, disk.Btrfs} {
		t.Run(string(kind), func(t *testing.T) { testServerKilledUnderDisk(t, kind) })
	}
}

func testServerKilledUnderDisk(t *testing.T, kind disk.Kind) {
	requireFUSE(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices")
	}
	if err := disk.Available(kind); err != nil {
		t.Skipf("needs %s: %v", kind, err)
	}
	ctx := context.Background()
	// 0700 (MkdirTemp): the image directory's parent must be root-only.
	root, err := os.MkdirTemp(t.TempDir(), "disk-")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"mnt", "dev"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c := Config{Volume: filepath.Join(root, "vol"), Mountpoint: filepath.Join(root, "ohmfs")}
	if err := volume.Format(ctx, c.Volume, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	keeper := serveProcess(t, c)
	cfg := disk.Config{
		Kind:       kind,
		ImageDir:   c.Mountpoint,
		Image:      "disk.img",
		Mountpoint: filepath.Join(root, "mnt", "disk"),
		DevDir:     filepath.Join(root, "dev", "disk"),
	}
	d, err := disk.Create(ctx, cfg, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			d.Close(ctx)
		}
	})

	// The writer: 64 KiB records, each fsynced, until told to stop.
	const recSize = 64 << 10
	record := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%07d\n", i)), recSize/8) }
	path := filepath.Join(cfg.Mountpoint, "log")
	stop := make(chan struct{})
	type result struct {
		n        int
		maxPause time.Duration
		err      error
	}
	done := make(chan result, 1)
	progress := make(chan int, 1024)
	go func() {
		var r result
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			r.err = err
			done <- r
			return
		}
		defer f.Close()
		last := time.Now()
		for {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			if _, err := f.WriteAt(record(r.n), int64(r.n)*recSize); err != nil {
				r.err = fmt.Errorf("write %d: %w", r.n, err)
				done <- r
				return
			}
			if err := f.Sync(); err != nil {
				r.err = fmt.Errorf("fsync %d: %w", r.n, err)
				done <- r
				return
			}
			now := time.Now()
			r.maxPause = max(r.maxPause, now.Sub(last))
			last = now
			r.n++
			select {
			case progress <- r.n:
			default:
			}
		}
	}()
	waitWrites := func(n int) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			select {
			case got := <-progress:
				if got >= n {
					return
				}
			case r := <-done:
				t.Fatalf("the writer stopped after %d records: %v", r.n, r.err)
			case <-deadline:
				t.Fatalf("the writer did not reach %d records in a minute", n)
			}
		}
	}
	waitWrites(50)
	rec, ok := readRecord(c.Mountpoint)
	if !ok || rec.Server == 0 {
		t.Fatalf("record of the mount: %+v, %v", rec, ok)
	}
	// Killed while it has a request of the disk in hand (the
	// connection's count of waiting requests is not zero), so that the
	// new server must have it sent again.
	inflight := inFlight(t, c.Mountpoint)
	var waiting int
	for start := time.Now(); waiting == 0 && time.Since(start) < 10*time.Second; {
		waiting = inflight()
	}
	killed := time.Now()
	if err := syscall.Kill(rec.Server, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the server %d with %d requests in flight", rec.Server, waiting)
	deadline := time.Now().Add(time.Minute)
	for {
		if r, ok := readRecord(c.Mountpoint); ok && r.Restarts == 1 && r.Server != rec.Server {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new server within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("a new server answers %v after the kill", time.Since(killed).Round(time.Millisecond))
	waitWrites(150)
	close(stop)
	r := <-done
	if r.err != nil {
		t.Fatalf("the writer saw an error: %v", r.err)
	}
	t.Logf("%s: %d fsynced records; the longest wait between two was %v", kind, r.n, r.maxPause.Round(time.Millisecond))
	// Nothing the dead server had in hand is left unanswered.
	for start := time.Now(); inflight() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d requests still unanswered with the writer stopped", inflight())
		}
	}

	// Every fsynced record reads back.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < r.n; i++ {
		if !bytes.Equal(b[i*recSize:(i+1)*recSize], record(i)) {
			t.Fatalf("record %d does not read back", i)
		}
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	closed = true
	img := filepath.Join(c.Mountpoint, cfg.Image)
	var check *exec.Cmd
	if kind == disk.Btrfs {
		check = exec.Command("btrfs", "check", "--readonly", img)
	} else {
		check = exec.Command("e2fsck", "-fn", img)
	}
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("%v: %v\n%s", check.Args, err, out)
	}
	if err := Unmount(ctx, c.Mountpoint, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := keeper.Wait(); err != nil {
		t.Errorf("keeper: %v", err)
	}
	if fr, err := volume.FsckVolume(ctx, c.Volume, volume.FsckOptions{}); err != nil || len(fr.Problems) > 0 {
		t.Fatalf("fsck after unmount: %+v, %v", fr, err)
	}
}

// inFlight returns a function that reads how many requests the FUSE
// connection of the mount at mp has sent and not had answered, or queued.
func inFlight(t *testing.T, mp string) func() int {
	t.Helper()
	if err := fusefs.EnsureControl(); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(fusefs.ControlDir, strconv.Itoa(int(unix.Minor(st.Dev))), "waiting")
	return func() int {
		b, _ := os.ReadFile(p)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
}

// TestServerKilledUnderOpenFiles: files and directories a process has
// open on the file layout stay usable across a new server: their node ids
// and handles mean the same to it.
func TestServerKilledUnderOpenFiles(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	c := newVolume(t)
	keeper := serveProcess(t, c)
	if err := os.Mkdir(filepath.Join(c.Mountpoint, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(c.Mountpoint, "d", name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(c.Mountpoint, "d", "f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("before "); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(filepath.Join(c.Mountpoint, "d"))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	rec, ok := readRecord(c.Mountpoint)
	if !ok {
		t.Fatal("no record of the mount")
	}
	if err := syscall.Kill(rec.Server, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// No waiting for the new server: the calls below wait in the kernel.
	if _, err := f.WriteString("after"); err != nil {
		t.Fatalf("write on a file opened before the kill: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync of a file opened before the kill: %v", err)
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		t.Fatalf("readdir of a directory opened before the kill: %v", err)
	}
	if len(names) != 3 {
		t.Errorf("directory opened before the kill lists %v", names)
	}
	b := make([]byte, 64)
	n, err := f.ReadAt(b, 0)
	if string(b[:n]) != "before after" {
		t.Errorf("read back %q, %v", b[:n], err)
	}
	// The new server answers before its keeper records it (the keeper
	// writes the record once the server says it is ready): poll.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		r, ok := Info(c.Mountpoint)
		if ok && r.Restarts == 1 && r.Server != rec.Server {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("record a minute after the kill: %+v, %v", r, ok)
			break
		}
	}
	f.Close()
	dir.Close()
	if err := Unmount(ctx, c.Mountpoint, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := keeper.Wait(); err != nil {
		t.Errorf("keeper: %v", err)
	}
	if fr, err := volume.FsckVolume(ctx, c.Volume, volume.FsckOptions{}); err != nil || len(fr.Problems) > 0 {
		t.Fatalf("fsck after unmount: %+v, %v", fr, err)
	}
}
