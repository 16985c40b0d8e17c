package fusefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

// A mountpoint is often in a directory that something less trusted can
// write: a computer's workspace is mounted at <computer>/mnt/ohm on the
// host, and mnt is the computer's /home. Root in the computer could put a
// symlink there while the workspace is not mounted, and a host that
// resolved the path would mount the workspace (executable, writable by the
// computer) wherever the link points. So the host never follows a link on
// the way: the mountpoint is opened with every component resolved without
// symlinks (openat2 RESOLVE_NO_SYMLINKS), missing directories are made
// one at a time below a directory already open, and the filesystem is
// attached to that open directory (move_mount), not to a path looked up
// again. See SECURITY.md.

// ErrSymlink is returned (wrapped) for a mountpoint that is a symlink or
// has one among the directories above it.
var ErrSymlink = errors.New("the path has a symlink in it")

// OpenMountpoint opens the directory at path (absolute) as an O_PATH
// descriptor without following any symlink, making it and any missing
// parents (0755) if need be. A symlink at path or above it fails with
// ErrSymlink. A filesystem is then attached to the descriptor
// (move_mount MOVE_MOUNT_T_EMPTY_PATH), never to path looked up again.
func OpenMountpoint(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s is not an absolute path", path)
	}
	path = filepath.Clean(path)
	f, err := openNoSymlinks(unix.AT_FDCWD, path)
	if !errors.Is(err, unix.ENOENT) {
		return f, err
	}
	// Walk down from the root, making what is missing below what is open.
	dir, err := openNoSymlinks(unix.AT_FDCWD, "/")
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		next, err := openNoSymlinks(int(dir.Fd()), name)
		if errors.Is(err, unix.ENOENT) {
			// mkdirat never follows a symlink at name: one planted
			// meanwhile makes it fail with EEXIST, and the open below
			// refuses it.
			if err := unix.Mkdirat(int(dir.Fd()), name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				dir.Close()
				return nil, fmt.Errorf("make %s: %w", name, err)
			}
			next, err = openNoSymlinks(int(dir.Fd()), name)
		}
		dir.Close()
		if err != nil {
			return nil, err
		}
		dir = next
	}
	return dir, nil
}

// openNoSymlinks opens the directory at path (relative to dirfd) as an
// O_PATH descriptor, refusing a symlink anywhere on the way, the last
// component included (RESOLVE_NO_SYMLINKS: ELOOP, where O_NOFOLLOW with
// O_DIRECTORY would say ENOTDIR).
func openNoSymlinks(dirfd int, path string) (*os.File, error) {
	fd, err := unix.Openat2(dirfd, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	for errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		fd, err = unix.Openat2(dirfd, path, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, ErrSymlink
	case errors.Is(err, unix.ENOTDIR):
		return nil, errors.New("not a directory (or a directory above it is not)")
	case err != nil:
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// mountedOn reports whether dir (an open descriptor) is the root of a
// mount, and that mount's filesystem type, without looking the path up
// again.
func mountedOn(dir *os.File) (fstype string, ok bool, err error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(dir.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil {
		return "", false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return "", false, errors.New("the kernel does not tell mount roots (statx)")
	}
	if stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return "", false, nil
	}
	fstype = "a filesystem"
	if m, ok, _ := mountinfo.ByID(int(stx.Mnt_id)); ok {
		fstype = m.FSType
	}
	return fstype, true, nil
}

// mountFUSE attaches a new FUSE filesystem served through fuseFD to the
// directory dir (an O_PATH descriptor), with the new mount API: the
// filesystem is made detached (fsopen, fsmount) and moved onto the open
// directory, so nothing is looked up by path.
// It returns the new mount's device.
func mountFUSE(fuseFD int, dir *os.File, opts Options) (dev uint64, err error) {
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(key, value string) error {
		if err := unix.FsconfigSetString(fsfd, key, value); err != nil {
			return fmt.Errorf("fuse option %s=%s: %w", key, value, err)
		}
		return nil
	}
	flag := func(key string) error {
		if err := unix.FsconfigSetFlag(fsfd, key); err != nil {
			return fmt.Errorf("fuse option %s: %w", key, err)
		}
		return nil
	}
	steps := []func() error{
		func() error { return set("source", FSName) },
		func() error { return set("subtype", FSName) },
		func() error { return set("fd", strconv.Itoa(fuseFD)) },
		func() error { return set("rootmode", strconv.FormatUint(unix.S_IFDIR, 8)) },
		func() error { return set("user_id", strconv.Itoa(os.Geteuid())) },
		func() error { return set("group_id", strconv.Itoa(os.Getegid())) },
		func() error { return set("max_read", strconv.Itoa(maxWrite)) },
		func() error { return flag("default_permissions") },
	}
	if !opts.NoAllowOther {
		steps = append(steps, func() error { return flag("allow_other") })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return 0, err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return 0, fmt.Errorf("create the fuse filesystem: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return 0, fmt.Errorf("fsmount: %w", err)
	}
	mnt := os.NewFile(uintptr(mfd), "fsmount")
	defer mnt.Close()
	if dev, _, err = rootDev(mnt); err != nil {
		return 0, err
	}
	if err := unix.MoveMount(mfd, "", int(dir.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return 0, fmt.Errorf("move_mount: %w", err)
	}
	return dev, nil
}

// rootDev returns the device of the filesystem f (an open descriptor) is
// on, and whether f is the root of a mount. It asks the kernel's cache
// only (AT_STATX_DONT_SYNC): a FUSE filesystem's server is not asked,
// which matters before it serves or after it died.
func rootDev(f *os.File) (dev uint64, mountRoot bool, err error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &stx); err != nil {
		return 0, false, fmt.Errorf("statx: %w", err)
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor), stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}
