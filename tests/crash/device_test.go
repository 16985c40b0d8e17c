//go:build linux

package crash

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	"ohm/internal/ohmfs/vfs"
	"ohm/tests/internal/disktest"
	"ohm/tests/internal/ohmtest"
)

// The device-image variant of the kill -9 loop: a btrfs on a loop device
// (direct I/O) whose backing file is workspace.img in an ohmfs mount,
// made and mounted by internal/disk as a computer's workspace is
// (nobarrier: its superblock writes are the image's commit points, see
// docs/block-layout.md, "Flushes"). After every kill of the ohmfs
// processes the kernel filesystem's own check and ohm fs fsck must be
// clean, and every file the workload fsynced inside the btrfs must hold
// what it fsynced: the block device contract (a write acknowledged
// before a completed flush is durable).

// requireTools skips t unless the programs are installed.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s (make deps installs it)", n)
		}
	}
}

// run runs a command and fails t if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// kernelFS is a kernel filesystem on a loop device over an image file.
type kernelFS struct {
	typ  string // btrfs or xfs
	dir  string // where it is mounted
	loop string // the loop device, "" when detached
}

// newImage makes path a device image of size bytes in an ohmfs mount.
func newImage(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := unix.Setxattr(path, vfs.XattrLayout, []byte(vfs.LayoutImage), 0); err != nil {
		t.Fatalf("make %s a device image: %v", path, err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// attach sets up a loop device with direct I/O over img.
func (k *kernelFS) attach(t *testing.T, img string) {
	t.Helper()
	k.loop = strings.TrimSpace(run(t, "losetup", "--direct-io=on", "--find", "--show", img))
}

func (k *kernelFS) mkfs(t *testing.T) {
	t.Helper()
	switch k.typ {
	case "btrfs":
		run(t, "mkfs.btrfs", "-q", "-K", k.loop)
	default:
		run(t, "mkfs.xfs", "-q", "-K", k.loop)
	}
}

func (k *kernelFS) mount(t *testing.T) {
	t.Helper()
	run(t, "mount", "-t", k.typ, k.loop, k.dir)
}

// teardown unmounts the kernel filesystem (lazily if it must: after a
// crash of the storage below it, it has shut itself down) and detaches
// the loop device.
func (k *kernelFS) teardown() {
	if ohmtest.Mounted(k.dir) {
		if exec.Command("umount", k.dir).Run() != nil {
			exec.Command("umount", "-l", k.dir).Run()
		}
	}
	if k.loop != "" {
		exec.Command("losetup", "-d", k.loop).Run()
		k.loop = ""
	}
}

// workspaceSize is the size of a computer's workspace disk
// (internal/computer's BlockWorkspace): 1 PiB, sparse.
const workspaceSize = 1 << 50

// diskConfig is a btrfs workspace disk over workspace.img in dir, an
// ohmfs mount in a root-only directory, mounted in a root-only directory
// of the test's: internal/disk chooses everything that matters for
// durability (mkfs options, the mount options, nobarrier and the image's
// durable ranges), as it does for a computer. BlockWorkspace adds nosuid
// and nodev, which change nothing below the filesystem.
func diskConfig(t *testing.T, dir string) disk.Config {
	t.Helper()
	if err := disk.Available(disk.Btrfs); err != nil {
		t.Skip(err)
	}
	// The image directory's parent must be closed to everyone but root.
	if err := os.Chmod(filepath.Dir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	priv := t.TempDir()
	if err := os.Chmod(priv, 0o700); err != nil {
		t.Fatal(err)
	}
	return disk.Config{
		Kind:       disk.Btrfs,
		ImageDir:   dir,
		Image:      "workspace.img",
		Mountpoint: filepath.Join(priv, "workspace"),
		DevDir:     filepath.Join(priv, "dev"),
	}
}

// TestDeviceImageKillDuringWorkload is the kill -9 loop with a kernel
// filesystem on top, in the configuration a computer's workspace runs:
// internal/disk creates and opens the btrfs over workspace.img (nobarrier,
// durable superblock ranges; disktest.RequireFlushRule checks it every round).
// Each round mounts the volume, runs btrfs check on the crashed image,
// opens the disk (btrfs replays its log tree), checks every file fsynced
// in any round so far, runs the workload and kills the ohmfs processes at
// a random moment; then ohm fs fsck must be clean.
func TestDeviceImageKillDuringWorkload(t *testing.T) {
	ohmtest.RequireFUSE(t)
	requireTools(t, "btrfs")
	bin := ohmtest.Binary(t)
	v := ohmtest.NewVolume(t, bin)
	cfg := diskConfig(t, v.Dir)
	img := filepath.Join(cfg.ImageDir, cfg.Image)
	killLoop(t, bin, v, cfg, workspaceSize, iterations(), func(when string) {
		disktest.BtrfsCheck(t, img, when)
	}, func() { disktest.RequireFlushRule(t, cfg) })
}

// rootDiskRounds is the root disk's kill loop's length: fewer rounds than
// the workspace's, which is where agents' data lives, to keep the suite
// short; OHM_CRASH_ITERATIONS sets both.
func rootDiskRounds() int {
	if os.Getenv("OHM_CRASH_ITERATIONS") != "" {
		return iterations()
	}
	return 8
}

// TestRootDiskImageKillDuringWorkload is the same loop over a computer's
// root disk: ext4 in root.img, with barriers, so that its fsyncs reach
// ohmfs as FUSE FSYNCs of the image (the other flush path than the
// workspace's). e2fsck -fn replaces btrfs check.
func TestRootDiskImageKillDuringWorkload(t *testing.T) {
	ohmtest.RequireFUSE(t)
	requireTools(t, "e2fsck")
	bin := ohmtest.Binary(t)
	v := ohmtest.NewVolume(t, bin)
	cfg := diskConfig(t, v.Dir)
	// As internal/computer's root disks (rootdisk.go): what matters for
	// durability, barriers, is ext4's default and internal/disk's.
	cfg.Kind, cfg.Image, cfg.Source, cfg.Label = disk.Ext4, "root.img", "root", "root"
	cfg.MountOptions = []string{"noatime", "discard", "minixdf", "nosuid", "nodev"}
	img := filepath.Join(cfg.ImageDir, cfg.Image)
	killLoop(t, bin, v, cfg, 4<<30, rootDiskRounds(), func(when string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "e2fsck", "-fn", img)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %s: %v\n%s", when, strings.Join(cmd.Args, " "), err, out)
		}
	}, func() {
		if opts := disktest.MountOptions(cfg.Mountpoint); slices.Contains(strings.Split(opts, ","), "nobarrier") {
			t.Fatalf("the root disk at %s is mounted %q: ext4 must keep its barriers", cfg.Mountpoint, opts)
		}
	})
}

// killLoop runs rounds of the workload in the disk of cfg (size bytes)
// over an image in volume v, killing the ohmfs processes at a random
// moment in each. check runs the kernel filesystem's own check on the
// crashed image before each open; opened checks the disk as mounted.
func killLoop(t *testing.T, bin string, v *ohmtest.Volume, cfg disk.Config, size int64, rounds int, check func(when string), opened func()) {
	t.Helper()
	var d *disk.Disk
	t.Cleanup(func() { disktest.DropDisk(d) })
	ctx := context.Background()
	logDir := t.TempDir()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))

	open := func(when string) {
		t.Helper()
		check(when)
		var err error
		if d, err = disk.Open(ctx, cfg); err != nil {
			t.Fatalf("%s: open the disk: %v", when, err)
		}
		opened()
	}
	var logs []string
	for i := 0; i < rounds; i++ {
		mount := v.MountForeground(t)
		if i == 0 {
			var err error
			if d, err = disk.Create(ctx, cfg, size); err != nil {
				t.Fatalf("create the disk: %v", err)
			}
			opened()
		} else {
			when := fmt.Sprintf("after crash %d", i-1)
			open(when)
			disktest.CheckSynced(t, cfg.Mountpoint, logs, when)
			if t.Failed() {
				t.FailNow()
			}
		}
		logPath := filepath.Join(logDir, fmt.Sprintf("log-%02d", i))
		logs = append(logs, logPath)
		w := exec.Command(os.Args[0], "-test.run=^$")
		w.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", envWorkload, filepath.Join(cfg.Mountpoint, fmt.Sprintf("iter-%02d", i)), logPath, seed+int64(i)))
		var werr strings.Builder
		w.Stderr = &werr
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(300+rng.Intn(2700)) * time.Millisecond
		time.Sleep(delay) // the crash's moment, not synchronization
		mount.Kill(t)
		ohmtest.ForceUnmount(v.Dir)
		w.Process.Kill()
		w.Wait()
		disktest.DropDisk(d)
		d = nil
		entries, _ := disktest.ReadLog(logPath)
		t.Logf("crash %d: killed after %v, %d fsynced files logged", i, delay, len(entries))
		fsckClean(t, bin, v, fmt.Sprintf("after crash %d", i))
		if t.Failed() {
			t.FailNow()
		}
	}
	v.MountForeground(t)
	open("after the last crash")
	disktest.CheckSynced(t, cfg.Mountpoint, logs, "after the last crash")
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := d.Close(cctx); err != nil {
		t.Errorf("close the disk: %v", err)
	}
	d = nil
	v.Umount(t)
	fsckClean(t, bin, v, "after a clean unmount")
}

// status returns `ohm fs status --json` of the volume.
func status(t *testing.T, bin, vol string) map[string]any {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal([]byte(ohmtest.Ohm(t, bin, "fs", "status", "--json", vol)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDeviceImageDiscardFreesStore writes 1 GiB into a kernel filesystem
// on an image, deletes it and trims the filesystem: the discards punch
// holes in the image, the packs nothing references any more are freed,
// and gc gives their space back in the store.
func TestDeviceImageDiscardFreesStore(t *testing.T) {
	ohmtest.RequireFUSE(t)
	requireTools(t, "losetup", "mkfs.btrfs", "fstrim")
	bin := ohmtest.Binary(t)
	v := ohmtest.NewVolume(t, bin)
	k := &kernelFS{typ: "btrfs", dir: t.TempDir()}
	t.Cleanup(k.teardown)
	v.Mount(t)
	img := filepath.Join(v.Dir, "workspace.img")
	newImage(t, img, 1<<40)
	k.attach(t, img)
	k.mkfs(t)
	k.mount(t)

	const size = 1 << 30
	f, err := os.Create(filepath.Join(k.dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < size; n += len(buf) {
		rng.Read(buf) // incompressible: the store holds what was written
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Unmounting everything folds the image's log into the store.
	k.teardown()
	v.Umount(t)
	full := status(t, bin, v.Path)["stored_bytes"].(float64)
	if full < size {
		t.Fatalf("the store holds %.0f bytes after 1 GiB was written, want at least that", full)
	}

	v.Mount(t)
	k.attach(t, img)
	k.mount(t)
	if err := os.Remove(filepath.Join(k.dir, "big")); err != nil {
		t.Fatal(err)
	}
	run(t, "sync", "-f", k.dir)
	run(t, "fstrim", k.dir)
	k.teardown()
	v.Umount(t)
	ohmtest.Ohm(t, bin, "fs", "gc", "--grace", "0s", v.Path)
	after := status(t, bin, v.Path)["stored_bytes"].(float64)
	t.Logf("store: %.0f MiB with the file, %.0f MiB after delete, fstrim and gc", full/(1<<20), after/(1<<20))
	if after > 128<<20 {
		t.Errorf("the store still holds %.0f MiB after the file was deleted and trimmed, want it back under 128 MiB", after/(1<<20))
	}
	fsckClean(t, bin, v, "after gc")
}
