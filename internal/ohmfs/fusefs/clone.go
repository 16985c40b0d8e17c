package fusefs

import (
	"path"

	"github.com/hanwen/go-fuse/v2/fuse"

	"ohm/internal/ohmfs/meta"
)

// cloneXattr handles a write of vfs.XattrClone on src: the clone is made
// by the server, behind the kernel's back, so the kernel is told to drop
// what it cached of the new name (a negative entry) and of its directory's
// listing.
func (f *fileSystem) cloneXattr(src meta.Ino, dst string) fuse.Status {
	parent, _, err := f.fs.CloneTo(f.ctx, src, dst)
	if err != nil {
		return f.status("clone", err)
	}
	if s := f.server.Load(); s != nil {
		s.EntryNotify(uint64(parent), path.Base(dst))
		s.InodeNotify(uint64(parent), 0, 0)
	}
	return fuse.OK
}

// CopyFileRange clones whole pages of a device image (or a whole plain
// file onto an empty one) as metadata (vfs.FS.CopyRange); for anything
// else it answers EOPNOTSUPP, and the kernel copies the bytes itself.
// The kernel updates the destination's size and drops its cached pages
// in the range.
func (f *fileSystem) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if in.Flags != 0 {
		return 0, fuse.EINVAL
	}
	// The reply's count is 32 bits; keep whole pages.
	n := min(in.Len, uint64(1<<32-meta.PageSize))
	written, err := f.fs.CopyRange(f.ctx, meta.Ino(in.NodeId), in.OffIn, meta.Ino(in.NodeIdOut), in.OffOut, n)
	if err != nil {
		return 0, f.status("copy_file_range", err)
	}
	return uint32(written), fuse.OK
}
