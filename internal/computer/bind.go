package computer

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/fusefs"
)

// bindAt binds the mount at src (a host directory only the host writes)
// at mountpoint, nosuid, nodev and noatime, without following a link on
// the way to mountpoint.
//
// mountpoint is the computer's /home/ohm on the host: a computer whose
// /home was once writable could have left a symlink there or at its
// /home, and a bind by path (mount(2) MS_BIND) would follow it and mount
// the computer's executable, writable workspace wherever it points. So
// mountpoint is opened with every component resolved without symlinks
// (fusefs.OpenMountpoint), src is cloned as a detached mount (open_tree),
// given its flags while detached (mount_setattr), and moved onto the open
// directory (move_mount): nothing is looked up by path after the check.
func bindAt(src, mountpoint string) error {
	dir, err := fusefs.OpenMountpoint(mountpoint)
	if err != nil {
		return fmt.Errorf("open workspace mountpoint %s: %w", mountpoint, err)
	}
	defer dir.Close()
	tfd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("clone the mount at %s: %w", src, err)
	}
	tree := os.NewFile(uintptr(tfd), src)
	defer tree.Close()
	// The clone keeps the source's flags; the file layout's FUSE mount has
	// nosuid,nodev already, the btrfs too. Made sure of here, as the bind
	// is what reaches the computer.
	attr := &unix.MountAttr{
		Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOATIME,
		Attr_clr: unix.MOUNT_ATTR__ATIME,
	}
	if err := unix.MountSetattr(tfd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("make the bind of %s nosuid,nodev: %w", src, err)
	}
	if err := unix.MoveMount(tfd, "", int(dir.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind workspace at %s: %w", mountpoint, err)
	}
	return nil
}
