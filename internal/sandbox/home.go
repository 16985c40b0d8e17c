package sandbox

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

// ShareHome makes dir (a computer's /home on the host, Spec.HomeMount) a
// read-only, nosuid, nodev, noexec bind mount of itself in a peer group of
// its own, holding the empty directory ohm the workspace is mounted on.
// The computer gets it as a slave (see homeMount), so a workspace mounted
// again at dir/ohm on the host reaches the running computer, while nothing
// the computer does reaches the host. Read-only: between a dead workspace
// mount and the next, nothing the computer writes to /home lands on the
// host's disk, and no link can replace dir/ohm.
//
// A dir mounted already (the daemon restarted while the computer ran) is
// kept only if it is as ShareHome leaves it (sharedHome); anything else is
// unmounted and shared again from the directory under it.
func ShareHome(dir string) error {
	if mountinfo.IsMountpoint(dir) {
		if sharedHome(dir) == nil {
			return nil
		}
		if err := UnshareHome(dir); err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
	}
	if err := mkdirNoFollow(dir, "ohm"); err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	steps := []struct {
		src   string
		flags uintptr
	}{
		{dir, unix.MS_BIND},
		// Private first: a bind of a directory of a shared mount (the
		// host's / usually is) would join that mount's peer group, and
		// mount events of every namespace holding a copy of it would
		// reach the workspace.
		{"", unix.MS_PRIVATE},
		{"", unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"", unix.MS_SHARED},
	}
	for _, st := range steps {
		if err := unix.Mount(st.src, dir, "", st.flags, ""); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
			return fmt.Errorf("workspace: share %s: %w", dir, err)
		}
	}
	return nil
}

// sharedHome checks that the mount at dir is one ShareHome made: dir not
// a link, the root of a read-only, nosuid, nodev, noexec, shared mount,
// with a directory (not a link) at ohm. Checked through a descriptor, as
// everything the host does in a computer's /home.
func sharedHome(dir string) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil {
		return fmt.Errorf("statx %s: %w", dir, err)
	}
	if stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return fmt.Errorf("%s is not the root of a mount", dir)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	const want = unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC
	if fs.Flags&want != want {
		return fmt.Errorf("%s is not mounted read-only, nosuid, nodev, noexec", dir)
	}
	mnt, ok, err := mountinfo.ByID(int(stx.Mnt_id))
	if err != nil || !ok || !strings.Contains(mnt.Optional, "shared:") {
		return fmt.Errorf("%s is not a shared mount (%v)", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "ohm", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s/ohm: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s/ohm is not a directory", dir)
	}
	return nil
}

// UnshareHome undoes ShareHome.
func UnshareHome(dir string) error {
	for mountinfo.IsMountpoint(dir) {
		if err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return nil
}

// mkdirNoFollow makes directory name in dir unless it exists, and fails
// if what is there is not a directory: a symlink left at dir/name (by a
// computer whose /home was once writable) is never followed.
func mkdirNoFollow(dir, name string) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Mkdirat(fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("make %s/%s: %w", dir, name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s/%s: %w", dir, name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s/%s is not a directory (a symlink left by the computer?)", dir, name)
	}
	return nil
}

// HardenWorkspace adds nosuid and nodev to the mount at path (a
// workspace mounted at HomeMount/ohm on the host), keeping its other
// flags. The computer's /home/ohm is that mount propagated, with its
// flags: without these, root in the computer could leave setuid binaries
// and device nodes that work on the host, and inside its workspace. The
// mount is changed through a descriptor opened without following a link,
// as everything the host does in a computer's /home.
func HardenWorkspace(path string) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("harden workspace mount: %w", err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("harden workspace mount %s: %w", path, err)
	}
	return nil
}
