package disk

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/vfs"
)

// btrfsSuperblocks are where btrfs keeps its superblock and its mirrors
// (64 KiB, 64 MiB, 256 GiB; 4 KiB each): the commit records of its
// transactions and of its fsync log tree. Every other block a commit
// names is written, and its completion awaited, before the superblock
// that names it.
var btrfsSuperblocks = []int64{64 << 10, 64 << 20, 256 << 30}

// flushOptions returns what to add to a disk's mount options so that
// it sends no flush requests, and marks the image to make that safe;
// none if the filesystem or the image's filesystem does not allow it.
//
// A btrfs fsync otherwise costs two flushes of the device (one before the
// superblock write, one for its forced unit access, which the loop device
// turns into a flush after it), each a FUSE FSYNC and an fdatasync of
// ohmfs's log. On an ohmfs image whose superblock ranges are durable when
// acknowledged (vfs.XattrDurableRanges), and whose log keeps writes in
// the order they were acknowledged, the superblock write is the flush:
// btrfs mounted nobarrier gets the same durability from one fdatasync per
// commit (docs/block-layout.md, "Flushes").
func flushOptions(kind Kind, img *os.File) []string {
	if kind != Btrfs || !onOhmfs(img) {
		return nil
	}
	var rs []string
	for _, off := range btrfsSuperblocks {
		rs = append(rs, fmt.Sprintf("%d+%d", off, sectorSize))
	}
	// setxattr returns once the ranges are committed; an image that is
	// not on ohmfs, or an ohmfs without the rule, refuses the name and
	// keeps its flushes.
	if err := unix.Fsetxattr(int(img.Fd()), vfs.XattrDurableRanges, []byte(strings.Join(rs, ",")), 0); err != nil {
		return nil
	}
	return []string{"nobarrier"}
}

// onOhmfs reports whether img is a device image in an ohmfs mount: a
// file of a FUSE filesystem that answers ohmfs's layout attribute. Any
// other filesystem would store the durable ranges as a plain attribute
// and honour none of them.
func onOhmfs(img *os.File) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(img.Fd()), &st); err != nil || st.Type != unix.FUSE_SUPER_MAGIC {
		return false
	}
	buf := make([]byte, 64)
	n, err := unix.Fgetxattr(int(img.Fd()), vfs.XattrLayout, buf)
	return err == nil && string(buf[:n]) == vfs.LayoutImage
}
