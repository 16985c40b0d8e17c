package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

// CreateDisk makes the root disk of spec: a sparse ext4 image of exactly
// DiskSizeMB under StateDir. It fails if there is not enough free space on
// the host for the image to be filled.
func CreateDisk(ctx context.Context, spec Spec) error {
	if spec.DiskSizeMB <= 0 {
		return fmt.Errorf("create disk: size must be positive, not %d MB", spec.DiskSizeMB)
	}
	p := spec.paths()
	if err := os.MkdirAll(p.state, 0o700); err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	size := int64(spec.DiskSizeMB) << 20
	var st unix.Statfs_t
	if err := unix.Statfs(p.state, &st); err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < size {
		return fmt.Errorf("create disk: %d MB requested but the host has only %d MB free", spec.DiskSizeMB, free>>20)
	}
	f, err := os.OpenFile(p.image, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Lazy init and no discard keep mkfs instant on any size: the
		// image stays sparse and the kernel initializes inode tables in
		// the background on first mount.
		var out []byte
		cmd, merr := hostCommand(ctx, "mkfs.ext4", "-F", "-q", "-m", "0",
			"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
			"-L", "root", p.image)
		if merr == nil {
			out, merr = cmd.CombinedOutput()
		}
		if merr != nil {
			err = fmt.Errorf("mkfs.ext4: %v: %s", merr, strings.TrimSpace(string(out)))
		}
	}
	if err != nil {
		os.Remove(p.image)
		return fmt.Errorf("create disk: %w", err)
	}
	return nil
}

// mountDisk loop-mounts the root disk with discard, so that space freed
// inside goes back to the host. mount(8) sets the loop device to clear
// itself when unmounted. minixdf makes statfs report the image's whole
// size (ext4 otherwise subtracts its metadata, and a 10 GiB disk shows as
// 9.8G in df); the metadata counts as used instead.
func mountDisk(ctx context.Context, p paths) error {
	if err := os.MkdirAll(p.disk, 0o700); err != nil {
		return err
	}
	// A resize while it was stopped (or one the kernel would not do
	// online) grew the image: the filesystem grows to it first. If that
	// fails the computer starts at its old size rather than not at all;
	// info shows the two sizes.
	GrowExt4Image(ctx, p.image)
	cmd, err := hostCommand(ctx, "mount", "-t", "ext4", "-o", "loop,discard,noatime,minixdf,nosuid,nodev", p.image, p.disk)
	if err != nil {
		return fmt.Errorf("mount root disk: %w", err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount root disk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return prepareDisk(p)
}

// prepareDisk makes the overlay's upper and work directories on the
// mounted root disk.
func prepareDisk(p paths) error {
	for _, d := range []string{"upper", "work"} {
		if err := os.MkdirAll(filepath.Join(p.disk, d), 0o755); err != nil {
			return fmt.Errorf("root disk: %w", err)
		}
	}
	return nil
}

func mountOverlay(lower string, p paths) error {
	if lower == "" {
		return errors.New("no template root")
	}
	if fi, err := os.Stat(lower); err != nil || !fi.IsDir() {
		return fmt.Errorf("template root %s is not a directory", lower)
	}
	if err := os.MkdirAll(p.rootfs, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		lower, filepath.Join(p.disk, "upper"), filepath.Join(p.disk, "work"))
	// The source is what df and /proc/mounts show for the computer's /:
	// /dev/root, as on a machine booted from a disk, which is what the
	// computer is meant to look like (not "overlay").
	if err := unix.Mount("/dev/root", p.rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

// unmountAll unmounts the overlay then (with disk) the root disk, lazily
// when busy (an open file somewhere must not make stop fail).
func unmountAll(p paths, disk bool) error {
	var errs []error
	dirs := []string{p.rootfs}
	if disk {
		dirs = append(dirs, p.disk)
	}
	for _, dir := range dirs {
		for mountinfo.IsMountpoint(dir) {
			err := unix.Unmount(dir, 0)
			if err == unix.EBUSY {
				err = unix.Unmount(dir, unix.MNT_DETACH)
			}
			if err != nil && err != unix.EINVAL {
				errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

func usedBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return (st.Blocks - st.Bfree) * uint64(st.Bsize), nil
}

func numCPU() int { return runtime.NumCPU() }
