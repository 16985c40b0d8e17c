// Package disk gives a computer its disks as kernel filesystems on loop
// devices whose backing files are device images in an ohmfs volume.
//
// A disk is an image file (sparse, created at its full size) in a
// directory that is normally the root of an ohmfs FUSE mount. The image is
// attached to a loop device with direct I/O (so that the image's data is
// not cached twice, once above the loop and once in the FUSE mount's page
// cache), a logical block size of 4096 and autoclear (the device goes away
// by itself when the last user closes it), formatted (mkfs without a
// discard pass: a 1 PiB discard takes minutes over FUSE) and mounted on a
// host directory. The kernel filesystem does the namespace work in the
// kernel's own caches; ohmfs only sees block reads, writes, flushes and
// discards. docs/block-layout.md says why the workspace is btrfs and what
// was measured.
//
// The host never follows a path a computer can write: the image directory,
// the mountpoint's parent and the directory holding the device node df
// names are opened component by component without following symlinks and
// must belong to root and be closed to everyone else. The mount itself is
// made with the new mount API (fsopen, fsmount, move_mount onto a
// directory file descriptor), so no path is resolved after those checks.
//
// Everything that can be done with a system call is: loop devices
// (LOOP_CTL_GET_FREE, LOOP_CONFIGURE, LOOP_SET_CAPACITY), growing
// (BTRFS_IOC_RESIZE, XFS_IOC_FSGROWFSDATA, EXT4_IOC_RESIZE_FS), freezing
// (FIFREEZE, FITHAW), trimming (FITRIM) and btrfs quotas. Only mkfs runs a
// program, by absolute path.
package disk
