package fusefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/volume"
)

// mountWith formats a file volume and mounts it with opts.
func mountWith(t *testing.T, opts Options) (*volume.Volume, *Mounted, string) {
	t.Helper()
	requireFUSE(t)
	ctx := context.Background()
	dir := t.TempDir()
	url, mp := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	if err := volume.Format(ctx, url, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	vol, err := volume.Open(ctx, url, volume.OpenOptions{Mountpoint: mp})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Mount(ctx, vol, mp, opts)
	if err != nil {
		vol.Close(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close(ctx)
		vol.Close(ctx)
	})
	return vol, m, m.Mountpoint()
}

func TestAfterFsync(t *testing.T) {
	var calls atomic.Int64
	var fail atomic.Bool
	_, _, mp := mountWith(t, Options{AfterFsync: func(ctx context.Context) error {
		calls.Add(1)
		if fail.Load() {
			return errors.New("replica unreachable")
		}
		return nil
	}})
	f, err := os.Create(filepath.Join(mp, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("data"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if calls.Load() == 0 {
		t.Fatal("fsync returned without running AfterFsync")
	}
	d, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	before := calls.Load()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsyncdir: %v", err)
	}
	if calls.Load() == before {
		t.Fatal("fsyncdir returned without running AfterFsync")
	}

	fail.Store(true)
	f.WriteString("more")
	if err := f.Sync(); !errors.Is(err, unix.EIO) {
		t.Fatalf("fsync with a failing AfterFsync = %v, want EIO", err)
	}
}

func TestAbort(t *testing.T) {
	_, m, mp := mountWith(t, Options{})
	f, err := os.Create(filepath.Join(mp, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.Abort(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after Abort")
	}
	if _, ok, _ := MountedAt(mp); ok {
		t.Error("still mounted after Abort")
	}
	if _, err := f.WriteString("x"); err == nil {
		if err := f.Sync(); err == nil {
			t.Error("write and fsync to an aborted mount succeeded")
		}
	}
}

// freshBootEnv makes the test binary run its tests in a mount namespace
// of its own without fusectl mounted, as on a machine just booted with an
// init that does not mount it (see TestAbortWithoutFusectl).
const freshBootEnv = "OHM_FUSEFS_FRESH_BOOT"

// runAsFreshBoot unmounts fusectl (in this process's own mount namespace:
// the host keeps its mount), runs the tests, and checks that they mounted
// it again.
func runAsFreshBoot(m *testing.M) int {
	for i := 0; i < 10; i++ {
		if ok, err := controlMounted(); err != nil || !ok {
			break
		}
		if err := unix.Unmount(ControlDir, unix.MNT_DETACH); err != nil {
			fmt.Fprintf(os.Stderr, "unmount %s: %v\n", ControlDir, err)
			return 2
		}
	}
	if ok, err := controlMounted(); err != nil || ok {
		fmt.Fprintf(os.Stderr, "fusectl still mounted at %s (%v)\n", ControlDir, err)
		return 2
	}
	if code := m.Run(); code != 0 {
		return code
	}
	if ok, _ := controlMounted(); !ok {
		fmt.Fprintf(os.Stderr, "the tests passed, but fusectl is not mounted at %s after them\n", ControlDir)
		return 1
	}
	return 0
}

// TestAbortWithoutFusectl runs TestAbort where nothing has mounted
// fusectl yet: Abort must mount it itself. It runs in a mount namespace of
// its own, so that other processes on the host keep theirs.
func TestAbortWithoutFusectl(t *testing.T) {
	requireFUSE(t)
	if os.Getenv(freshBootEnv) != "" {
		t.Skip("already in the fresh-boot namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAbort$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), freshBootEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("TestAbort without fusectl mounted: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestAbort ") {
		t.Fatalf("TestAbort did not run in the fresh-boot namespace:\n%s", out)
	}
}
