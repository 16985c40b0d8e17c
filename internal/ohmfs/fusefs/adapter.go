package fusefs

import (
	"context"
	"errors"
	"log"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/vfs"
)

// The mount is the volume's only writer, so nothing changes behind the
// kernel's back: every change goes through the kernel, which updates or
// invalidates what it cached. Long timeouts turn repeated lookups and stats
// into no round trip at all.
const (
	entryTTL = time.Hour
	attrTTL  = time.Hour

	// generation is fixed: inode numbers are never reused within a volume.
	generation = 1

	// blksize is st_blksize, the I/O size that stdio and cp use. The
	// writeback cache batches small writes anyway, so it only needs to
	// avoid tiny read(2)s.
	blksize = 128 << 10
)

// fileSystem adapts vfs.FS to go-fuse's raw protocol API. Node ids are
// meta.Ino values, so it keeps no per-node state of its own: Forget has
// nothing to free.
type fileSystem struct {
	fuse.RawFileSystem // ENOSYS for what is not implemented below

	fs     *vfs.FS
	ctx    context.Context
	logger *log.Logger

	// wantWriteback is whether the mount asks for the writeback cache;
	// writeback is whether the kernel granted it: it then keeps i_size and
	// O_APPEND itself and may read from write-only files.
	wantWriteback bool
	writeback     atomic.Bool

	// afterFsync runs after each successful fsync and fsyncdir (Options.AfterFsync).
	afterFsync func(ctx context.Context) error

	// server is set by Init; it sends invalidations to the kernel.
	server atomic.Pointer[fuse.Server]
}

func newFileSystem(ctx context.Context, fs *vfs.FS, logger *log.Logger) *fileSystem {
	return &fileSystem{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		fs:            fs,
		ctx:           ctx,
		logger:        logger,
	}
}

func (f *fileSystem) String() string { return "ohmfs" }

func (f *fileSystem) Init(s *fuse.Server) {
	f.server.Store(s)
	// The negotiated flags are not exported; the kernel's offer is, and
	// what we asked for is granted when offered.
	if ks := s.KernelSettings(); f.wantWriteback && ks != nil && ks.Flags64()&fuse.CAP_WRITEBACK_CACHE != 0 {
		f.writeback.Store(true)
		f.fs.SetKernelTimes(true)
	}
}

// status turns an error from vfs into what the kernel gets: the errno it
// carries, or EIO (logged) for anything else.
func (f *fileSystem) status(op string, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return fuse.Status(errno)
	}
	if errors.Is(err, context.Canceled) {
		return fuse.EINTR
	}
	f.logger.Printf("ohmfs: %s: %v", op, err)
	return fuse.EIO
}

func caller(h *fuse.InHeader) vfs.Caller {
	return vfs.Caller{Uid: h.Uid, Gid: h.Gid, Pid: h.Pid}
}

func timeParts(t time.Time) (uint64, uint32) {
	if t.IsZero() {
		return 0, 0
	}
	return uint64(t.Unix()), uint32(t.Nanosecond())
}

func fillAttr(a *meta.Attr, out *fuse.Attr) {
	out.Ino = uint64(a.Ino)
	out.Size = a.Size
	out.Blocks = (a.Used + 511) / 512
	out.Atime, out.Atimensec = timeParts(a.Atime)
	out.Mtime, out.Mtimensec = timeParts(a.Mtime)
	out.Ctime, out.Ctimensec = timeParts(a.Ctime)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid = a.Uid
	out.Gid = a.Gid
	out.Rdev = a.Rdev
	out.Blksize = blksize
	out.Flags = 0
}

func fillEntry(a *meta.Attr, out *fuse.EntryOut) {
	out.NodeId = uint64(a.Ino)
	out.Generation = generation
	out.SetEntryTimeout(entryTTL)
	out.SetAttrTimeout(attrTTL)
	fillAttr(a, &out.Attr)
}

func fillAttrOut(a *meta.Attr, out *fuse.AttrOut) {
	out.SetTimeout(attrTTL)
	fillAttr(a, &out.Attr)
}

// openFlags adapts open(2) flags for vfs. With the writeback cache the
// kernel applies O_APPEND itself (it sends the end-of-file offset) and
// may read pages of a write-only file to fill partial writes.
func (f *fileSystem) openFlags(flags uint32) uint32 {
	if !f.writeback.Load() {
		return flags
	}
	flags &^= syscall.O_APPEND
	if flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		flags = flags&^syscall.O_ACCMODE | syscall.O_RDWR
	}
	return flags
}

func (f *fileSystem) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.fs.Lookup(f.ctx, meta.Ino(h.NodeId), name)
	if errors.Is(err, syscall.ENOENT) {
		// A zero node id with a timeout is a cached negative entry; an
		// ENOENT reply would not be cached.
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(entryTTL)
		return fuse.OK
	}
	if err != nil {
		return f.status("lookup", err)
	}
	fillEntry(&a, out)
	return fuse.OK
}

func (f *fileSystem) Forget(nodeid, nlookup uint64) {}

func (f *fileSystem) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	a, err := f.fs.GetAttr(f.ctx, meta.Ino(in.NodeId))
	if err != nil {
		return f.status("getattr", err)
	}
	fillAttrOut(&a, out)
	return fuse.OK
}

// timeBits are the SETATTR fields of a timestamp write-back.
const timeBits = fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_CTIME |
	fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER

func (f *fileSystem) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	var set meta.SetAttr
	v := in.Valid
	if v&fuse.FATTR_MODE != 0 {
		mode := in.Mode & 07777
		set.Mode = &mode
	}
	if v&fuse.FATTR_UID != 0 {
		uid := in.Uid
		set.Uid = &uid
	}
	if v&fuse.FATTR_GID != 0 {
		gid := in.Gid
		set.Gid = &gid
	}
	if v&fuse.FATTR_SIZE != 0 {
		size := in.Size
		set.Size = &size
	}
	now := time.Now()
	if v&(fuse.FATTR_ATIME|fuse.FATTR_ATIME_NOW) != 0 {
		t := now
		if v&fuse.FATTR_ATIME_NOW == 0 {
			t = time.Unix(int64(in.Atime), int64(in.Atimensec))
		}
		set.Atime = &t
	}
	if v&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
		t := now
		if v&fuse.FATTR_MTIME_NOW == 0 {
			t = time.Unix(int64(in.Mtime), int64(in.Mtimensec))
		}
		set.Mtime = &t
	}
	if v&fuse.FATTR_CTIME != 0 {
		t := time.Unix(int64(in.Ctime), int64(in.Ctimensec))
		set.Ctime = &t
	}
	a, err := f.fs.SetAttr(f.ctx, meta.Ino(in.NodeId), set)
	if errors.Is(err, syscall.ENOENT) && v&^timeBits == 0 {
		// The kernel writes back the timestamps it keeps in writeback
		// cache mode even for an inode that is gone (unlinked and closed,
		// or replaced by a rename). Nobody can see that inode any more;
		// failing would only fail the syncfs or unmount that wrote it back.
		*out = fuse.AttrOut{}
		out.Ino = in.NodeId
		out.Mode = syscall.S_IFREG
		return fuse.OK
	}
	if err != nil {
		return f.status("setattr", err)
	}
	fillAttrOut(&a, out)
	return fuse.OK
}

func (f *fileSystem) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.fs.Mknod(f.ctx, caller(&in.InHeader), meta.Ino(in.NodeId), name, in.Mode, in.Rdev)
	if err != nil {
		return f.status("mknod", err)
	}
	fillEntry(&a, out)
	return fuse.OK
}

func (f *fileSystem) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.fs.Mkdir(f.ctx, caller(&in.InHeader), meta.Ino(in.NodeId), name, syscall.S_IFDIR|in.Mode&07777)
	if err != nil {
		return f.status("mkdir", err)
	}
	fillEntry(&a, out)
	return fuse.OK
}

func (f *fileSystem) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	mode := in.Mode
	if mode&syscall.S_IFMT == 0 {
		mode |= syscall.S_IFREG
	}
	a, fh, err := f.fs.Create(f.ctx, caller(&in.InHeader), meta.Ino(in.NodeId), name, mode, f.openFlags(in.Flags))
	if err != nil {
		return f.status("create", err)
	}
	fillEntry(&a, &out.EntryOut)
	out.Fh = uint64(fh)
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (f *fileSystem) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.fs.Symlink(f.ctx, caller(h), meta.Ino(h.NodeId), name, target)
	if err != nil {
		return f.status("symlink", err)
	}
	fillEntry(&a, out)
	return fuse.OK
}

func (f *fileSystem) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	target, err := f.fs.Readlink(f.ctx, meta.Ino(h.NodeId))
	if err != nil {
		return nil, f.status("readlink", err)
	}
	return []byte(target), fuse.OK
}

func (f *fileSystem) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.fs.Link(f.ctx, meta.Ino(in.Oldnodeid), meta.Ino(in.NodeId), name)
	if err != nil {
		return f.status("link", err)
	}
	fillEntry(&a, out)
	return fuse.OK
}

func (f *fileSystem) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.status("unlink", f.fs.Unlink(f.ctx, meta.Ino(h.NodeId), name))
}

func (f *fileSystem) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.status("rmdir", f.fs.Rmdir(f.ctx, meta.Ino(h.NodeId), name))
}

func (f *fileSystem) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if in.Flags&unix.RENAME_WHITEOUT != 0 {
		return fuse.EINVAL
	}
	err := f.fs.Rename(f.ctx, meta.Ino(in.NodeId), oldName, meta.Ino(in.Newdir), newName, in.Flags)
	return f.status("rename", err)
}

func (f *fileSystem) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	// default_permissions: the kernel checks permissions itself.
	return fuse.OK
}

func (f *fileSystem) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fh, err := f.fs.Open(f.ctx, meta.Ino(in.NodeId), f.openFlags(in.Flags))
	if err != nil {
		return f.status("open", err)
	}
	out.Fh = uint64(fh)
	// Nothing changes a file behind the kernel, so its page cache stays
	// valid across opens.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	if f.fs.Image(fh) {
		// A device image: straight through, several writes at once.
		out.OpenFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
	}
	return fuse.OK
}

func (f *fileSystem) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	size := int(in.Size)
	if size > len(buf) {
		size = len(buf)
	}
	n, err := f.fs.Read(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), int64(in.Offset), buf[:size])
	if err != nil {
		return nil, f.status("read", err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (f *fileSystem) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, err := f.fs.Write(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), int64(in.Offset), data)
	if err != nil {
		return uint32(n), f.status("write", err)
	}
	return uint32(n), f.afterDurableWrite(in, n)
}

// afterDurableWrite runs what follows an fsync after a write that vfs made
// durable as it was acknowledged (a commit block of an image,
// vfs.XattrDurableRanges): such a write stands for the flush a
// filesystem mounted without flush requests no longer sends.
func (f *fileSystem) afterDurableWrite(in *fuse.WriteIn, n int) fuse.Status {
	if f.afterFsync == nil || !f.fs.DurableWrite(f.ctx, vfs.Handle(in.Fh), int64(in.Offset), n) {
		return fuse.OK
	}
	return f.status("write", f.afterFsync(f.ctx))
}

// Writev takes a WRITE whose payload arrived in pieces without copying it
// into one buffer first.
func (f *fileSystem) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	off := int64(in.Offset)
	var total uint32
	for _, d := range data {
		if len(d) == 0 {
			continue
		}
		n, err := f.fs.Write(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), off, d)
		total += uint32(n)
		if err != nil {
			if total > 0 {
				return total, fuse.OK
			}
			return 0, f.status("write", err)
		}
		off += int64(n)
	}
	return total, f.afterDurableWrite(in, int(total))
}

// Flush answers ENOSYS, which makes the kernel stop sending FLUSH: a round
// trip saved on every close(2). vfs.Flush has nothing to do (close does
// not imply durability), and with the writeback cache the kernel still
// writes a file's dirty pages back to us on close before it would flush.
func (f *fileSystem) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

func (f *fileSystem) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if err := f.fs.Release(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh)); err != nil {
		f.status("release", err)
	}
}

func (f *fileSystem) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	err := f.fs.Fsync(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), in.FsyncFlags&1 != 0)
	if err == nil && f.afterFsync != nil {
		err = f.afterFsync(f.ctx)
	}
	if err == nil && !f.fs.Image(vfs.Handle(in.Fh)) {
		// The flush turned dirty pages into stored bytes: st_blocks grew,
		// but the kernel would keep the attributes it cached at create for
		// the whole attribute timeout. Dropping them (and only them: a
		// negative offset keeps the page cache) makes fstat after fsync,
		// and du, tell the truth.
		if s := f.server.Load(); s != nil {
			s.InodeNotify(in.NodeId, -1, 0)
		}
	}
	return f.status("fsync", err)
}

func (f *fileSystem) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	err := f.fs.Fallocate(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), int64(in.Offset), int64(in.Length), in.Mode)
	return f.status("fallocate", err)
}

func (f *fileSystem) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	off, err := f.fs.Lseek(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), int64(in.Offset), int(in.Whence))
	if err != nil {
		return f.status("lseek", err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

func (f *fileSystem) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fh, err := f.fs.OpenDir(f.ctx, meta.Ino(in.NodeId))
	if err != nil {
		return f.status("opendir", err)
	}
	out.Fh = uint64(fh)
	// The kernel may keep listings in its cache: it drops them itself
	// when it changes the directory, and nothing else does.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR
	return fuse.OK
}

func (f *fileSystem) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	err := f.fs.ReadDir(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), in.Offset, false, func(e meta.DirEntry) bool {
		return out.AddDirEntry(fuse.DirEntry{Name: e.Name, Ino: uint64(e.Ino), Mode: e.Mode, Off: e.Cookie})
	})
	return f.status("readdir", err)
}

func (f *fileSystem) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	err := f.fs.ReadDir(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh), in.Offset, true, func(e meta.DirEntry) bool {
		eo := out.AddDirLookupEntry(fuse.DirEntry{Name: e.Name, Ino: uint64(e.Ino), Mode: e.Mode, Off: e.Cookie})
		if eo == nil {
			return false
		}
		// "." and ".." and entries without attributes get node id 0:
		// the kernel then only lists them.
		if e.Attr != nil && e.Name != "." && e.Name != ".." {
			fillEntry(e.Attr, eo)
		}
		return true
	})
	return f.status("readdirplus", err)
}

func (f *fileSystem) ReleaseDir(in *fuse.ReleaseIn) {
	if err := f.fs.ReleaseDir(f.ctx, meta.Ino(in.NodeId), vfs.Handle(in.Fh)); err != nil {
		f.status("releasedir", err)
	}
}

func (f *fileSystem) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	err := f.fs.FsyncDir(f.ctx, meta.Ino(in.NodeId))
	if err == nil && f.afterFsync != nil {
		err = f.afterFsync(f.ctx)
	}
	return f.status("fsyncdir", err)
}

// freeInodes is what statfs adds to the used inodes as free: inodes are
// rows, not a preallocated table.
const freeInodes = 1 << 40

func (f *fileSystem) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	st, err := f.fs.StatFS(f.ctx)
	if err != nil {
		return f.status("statfs", err)
	}
	const bsize = 4096
	blocks := st.Capacity / bsize
	used := (st.UsedBytes + bsize - 1) / bsize
	free := uint64(0)
	if blocks > used {
		free = blocks - used
	}
	*out = fuse.StatfsOut{
		Blocks:  blocks,
		Bfree:   free,
		Bavail:  free,
		Files:   st.Inodes + freeInodes,
		Ffree:   freeInodes,
		Bsize:   bsize,
		Frsize:  bsize,
		NameLen: meta.MaxNameLen,
	}
	return fuse.OK
}

func (f *fileSystem) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	v, err := f.fs.GetXattr(f.ctx, meta.Ino(h.NodeId), name)
	if err != nil {
		return 0, f.status("getxattr", err)
	}
	if len(v) > len(dest) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (f *fileSystem) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	names, err := f.fs.ListXattr(f.ctx, meta.Ino(h.NodeId))
	if err != nil {
		return 0, f.status("listxattr", err)
	}
	size := 0
	for _, n := range names {
		size += len(n) + 1
	}
	if size > len(dest) {
		return uint32(size), fuse.ERANGE
	}
	off := 0
	for _, n := range names {
		off += copy(dest[off:], n)
		dest[off] = 0
		off++
	}
	return uint32(size), fuse.OK
}

func (f *fileSystem) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, data []byte) fuse.Status {
	// data belongs to the request buffer, which is reused.
	v := append([]byte(nil), data...)
	if name == vfs.XattrClone {
		return f.cloneXattr(meta.Ino(in.NodeId), string(v))
	}
	return f.status("setxattr", f.fs.SetXattr(f.ctx, meta.Ino(in.NodeId), name, v, in.Flags))
}

func (f *fileSystem) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.status("removexattr", f.fs.RemoveXattr(f.ctx, meta.Ino(h.NodeId), name))
}
