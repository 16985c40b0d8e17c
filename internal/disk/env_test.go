package disk

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/ohmfs/volume"
)

// helperEnv makes the test binary a helper process (see TestMain).
const helperEnv = "OHM_DISK_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		if err := runHelper(h); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// requireDisks skips a test that needs root, FUSE, loop devices and
// kind's mkfs.
func requireDisks(t *testing.T, kinds ...Kind) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mounts and FUSE")
	}
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	for _, k := range kinds {
		if err := Available(k); err != nil {
			t.Skipf("needs %s: %v", k, err)
		}
	}
}

// env is an ohmfs volume mounted in a root-only temporary directory, with
// the places a disk needs beside it:
//
//	root/          0700
//	  vol/         the volume's store
//	  ohmfs/       its mount: the image directory
//	  mnt/         0700, parent of disk mountpoints
//	  dev/         0700, parent of device directories
type env struct {
	t    *testing.T
	root string
	vol  *volume.Volume
	m    *fusefs.Mounted
}

type envOptions struct {
	base string     // directory to make root in; default a temp dir
	vfs  vfs.Config // the mount's vfs settings
}

func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	base := opts.base
	if base == "" {
		base = t.TempDir()
	}
	root, err := os.MkdirTemp(base, "disk-")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"mnt", "dev"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	url := filepath.Join(root, "vol")
	if err := volume.Format(ctx, url, volume.FormatOptions{}); err != nil {
		t.Fatalf("format: %v", err)
	}
	e := &env{t: t, root: root}
	vol, err := volume.Open(ctx, url, volume.OpenOptions{Mountpoint: e.imageDir()})
	if err != nil {
		t.Fatalf("open volume: %v", err)
	}
	m, err := fusefs.Mount(ctx, vol, e.imageDir(), fusefs.Options{VFS: opts.vfs})
	if err != nil {
		vol.Close(ctx)
		t.Fatalf("mount volume: %v", err)
	}
	e.vol, e.m = vol, m
	t.Cleanup(e.close)
	return e
}

func (e *env) imageDir() string { return filepath.Join(e.root, "ohmfs") }

// config is a disk named name in the environment.
func (e *env) config(kind Kind, name string) Config {
	return Config{
		Kind:       kind,
		ImageDir:   e.imageDir(),
		Image:      name + ".img",
		Mountpoint: filepath.Join(e.root, "mnt", name),
		DevDir:     filepath.Join(e.root, "dev", name),
	}
}

// close unmounts everything left under root (disks a failed test did not
// close first), then the volume.
func (e *env) close() {
	ctx := context.Background()
	if ms, err := os.ReadDir(filepath.Join(e.root, "mnt")); err == nil {
		for _, m := range ms {
			p := filepath.Join(e.root, "mnt", m.Name())
			if unix.Unmount(p, unix.UMOUNT_NOFOLLOW) == nil {
				e.t.Errorf("%s was still mounted at the end of the test", p)
			}
		}
	}
	if err := e.m.Close(ctx); err != nil {
		e.t.Errorf("unmount volume: %v", err)
	}
	if err := e.vol.Close(ctx); err != nil {
		e.t.Errorf("close volume: %v", err)
	}
}

// create makes a disk and registers its Close.
func (e *env) create(cfg Config, size int64) *Disk {
	e.t.Helper()
	d, err := Create(context.Background(), cfg, size)
	if err != nil {
		e.t.Fatalf("create %s: %v", cfg.Image, err)
	}
	e.t.Cleanup(func() { d.Close(context.Background()) })
	return d
}

// helper runs the test binary as a helper process with args, and returns
// its combined output.
func helper(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, "\x1f"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// runHelper is the helper process's work.
func runHelper(spec string) error {
	args := strings.Split(spec, "\x1f")
	ctx := context.Background()
	switch args[0] {
	case "create":
		// create KIND IMAGEDIR IMAGE MOUNTPOINT DEVDIR SIZE: make a disk
		// and exit without closing it, as a crashed daemon would.
		var size int64
		fmt.Sscan(args[6], &size)
		cfg := Config{Kind: Kind(args[1]), ImageDir: args[2], Image: args[3], Mountpoint: args[4], DevDir: args[5]}
		d, err := Create(ctx, cfg, size)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d.Mountpoint(), "left"), []byte("by a crashed process"), 0o644); err != nil {
			return err
		}
		fmt.Print(d.Device())
		return nil
	case "attach":
		// attach IMAGE KEY: attach a loop device tagged as this package
		// does, hand it to a sleeping child, and exit: a device whose
		// owner is gone that nothing mounted.
		img, err := os.OpenFile(args[1], os.O_RDWR, 0)
		if err != nil {
			return err
		}
		dev, l, err := attachLoop(img, loopTag(args[2]))
		if err != nil {
			return err
		}
		sleeper := exec.Command("sleep", "300")
		sleeper.ExtraFiles = []*os.File{dev}
		if err := sleeper.Start(); err != nil {
			return err
		}
		fmt.Printf("%s %d", l.path(), sleeper.Process.Pid)
		return nil
	}
	return fmt.Errorf("unknown helper %q", args[0])
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
