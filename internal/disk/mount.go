package disk

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultSource is what df shows as a disk's filesystem.
const DefaultSource = "ohmfs"

// mountAttrs are the options that are attributes of a mount in the new
// mount API (fsmount) rather than parameters of the filesystem.
var mountAttrs = map[string]uint64{
	"ro":          unix.MOUNT_ATTR_RDONLY,
	"nosuid":      unix.MOUNT_ATTR_NOSUID,
	"nodev":       unix.MOUNT_ATTR_NODEV,
	"noexec":      unix.MOUNT_ATTR_NOEXEC,
	"noatime":     unix.MOUNT_ATTR_NOATIME,
	"relatime":    unix.MOUNT_ATTR_RELATIME,
	"strictatime": unix.MOUNT_ATTR_STRICTATIME,
	"nodiratime":  unix.MOUNT_ATTR_NODIRATIME,
}

// splitOptions sorts mount options into mount attributes and filesystem
// parameters (key or key=value).
func splitOptions(opts []string) (attrs uint64, params [][2]string, err error) {
	for _, o := range opts {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if a, ok := mountAttrs[o]; ok {
			attrs |= a
			continue
		}
		k, v, _ := strings.Cut(o, "=")
		if k == "" || k == "source" {
			return 0, nil, fmt.Errorf("mount option %q is not allowed", o)
		}
		params = append(params, [2]string{k, v})
	}
	return attrs, params, nil
}

// mountDevice mounts the kind filesystem on the block device named source
// in devDir onto the directory open as target. source is resolved
// relative to devDir, so that the mount's source, which df prints as the
// filesystem, is the bare name (btrfs even prints the name it opened the
// device by, see docs/block-layout.md). The working directory is a
// property of the whole process, so the mount runs on a thread of its own
// that unshares it (CLONE_FS) and is thrown away afterwards.
func mountDevice(kind Kind, devDir *os.File, source string, target *os.File, opts []string) error {
	attrs, params, err := splitOptions(opts)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine's end takes the thread, with its
		// private working directory, away with it.
		runtime.LockOSThread()
		done <- func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare the working directory: %w", err)
			}
			if err := unix.Fchdir(int(devDir.Fd())); err != nil {
				return fmt.Errorf("chdir %s: %w", devDir.Name(), err)
			}
			fsfd, err := unix.Fsopen(string(kind), unix.FSOPEN_CLOEXEC)
			if err != nil {
				return fmt.Errorf("fsopen %s: %w", kind, err)
			}
			defer unix.Close(fsfd)
			fail := func(what string, err error) error {
				if msg := fsLog(fsfd); msg != "" {
					return fmt.Errorf("%s: %w (%s)", what, err, msg)
				}
				return fmt.Errorf("%s: %w", what, err)
			}
			if err := unix.FsconfigSetString(fsfd, "source", source); err != nil {
				return fail("set source", err)
			}
			for _, p := range params {
				if p[1] == "" {
					err = unix.FsconfigSetFlag(fsfd, p[0])
				} else {
					err = unix.FsconfigSetString(fsfd, p[0], p[1])
				}
				if err != nil {
					return fail("mount option "+strings.TrimSuffix(p[0]+"="+p[1], "="), err)
				}
			}
			if err := unix.FsconfigCreate(fsfd); err != nil {
				return fail("mount "+string(kind), err)
			}
			mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(attrs))
			if err != nil {
				return fail("fsmount", err)
			}
			defer unix.Close(mfd)
			if err := unix.MoveMount(mfd, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach the mount at %s: %w", target.Name(), err)
			}
			return nil
		}()
	}()
	return <-done
}

// fsLog drains the messages the kernel left in a filesystem context (the
// reason a mount failed, often).
func fsLog(fsfd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}

// unmount unmounts path without following a symlink in its last
// component; with lazy, a busy mount is detached now and goes away when
// its last user leaves.
func unmount(path string, lazy bool) error {
	flags := unix.UMOUNT_NOFOLLOW
	if lazy {
		flags |= unix.MNT_DETACH
	}
	if err := unix.Unmount(path, flags); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: %w (a process still uses it)", path, err)
		}
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}
