// Package vfs implements POSIX file semantics over the metadata engine
// (meta) and the block store (blockstore), independent of FUSE.
//
// Inode numbers are meta.Ino values and double as FUSE node ids. Permission
// checks are the kernel's (the mount uses default_permissions); vfs applies
// ownership from the Caller and keeps the file data path: per-file dirty
// chunk buffers, uploads of full chunks as immutable blocks, and the group
// commit that makes everything durable within Config.CommitInterval and
// at once on Fsync.
package vfs

import (
	"context"
	"errors"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
)

var errTODO = errors.New("vfs: not implemented yet")

// Caller is who makes a request; new inodes are owned by it.
type Caller struct {
	Uid, Gid uint32
	Pid      uint32
}

// Handle identifies an open file or directory.
type Handle uint64

// Config tunes an FS. Zero values take the defaults.
type Config struct {
	CommitInterval    time.Duration // default 1s: the bound on losing un-fsynced writes
	InlineMax         int           // files up to this size live in metadata; default 64 KiB
	UploadConcurrency int           // parallel block uploads; default 4
	GCInterval        time.Duration // how often freed blocks are deleted; default 1 min
	GCGrace           time.Duration // how long a freed block is kept; default 10 min
}

// StatFS is what statfs(2) reports.
type StatFS struct {
	Capacity  uint64 // bytes
	UsedBytes uint64
	Inodes    uint64
}

// FS is a mounted volume's file system. Its methods are safe for
// concurrent use.
type FS struct{}

// New returns an FS over m and b. It purges orphans left by a previous run
// (inodes unlinked while open) and starts the commit and GC loops.
// capacity is what StatFS reports as the size.
func New(ctx context.Context, m *meta.DB, b *blockstore.Store, capacity uint64, cfg Config) (*FS, error) {
	return nil, errTODO
}

// Close makes everything durable (Sync), stops the background loops and
// leaves m and b open for their owner to close.
func (fs *FS) Close(ctx context.Context) error { return errTODO }

// Sync flushes every dirty file and commits the metadata.
func (fs *FS) Sync(ctx context.Context) error { return errTODO }

// Lookup returns the attributes of name in parent.
func (fs *FS) Lookup(ctx context.Context, parent meta.Ino, name string) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// GetAttr returns ino's attributes, including writes not yet flushed.
func (fs *FS) GetAttr(ctx context.Context, ino meta.Ino) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// SetAttr changes attributes; a Size change truncates or extends the data.
func (fs *FS) SetAttr(ctx context.Context, ino meta.Ino, set meta.SetAttr) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// Mknod creates a regular file, fifo, socket or device node.
func (fs *FS) Mknod(ctx context.Context, c Caller, parent meta.Ino, name string, mode, rdev uint32) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// Mkdir creates a directory. A setgid parent passes on its group and the
// setgid bit, as on ext4.
func (fs *FS) Mkdir(ctx context.Context, c Caller, parent meta.Ino, name string, mode uint32) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// Create creates and opens a regular file (open flags as in open(2)).
func (fs *FS) Create(ctx context.Context, c Caller, parent meta.Ino, name string, mode uint32, flags uint32) (meta.Attr, Handle, error) {
	return meta.Attr{}, 0, errTODO
}

// Symlink creates a symbolic link.
func (fs *FS) Symlink(ctx context.Context, c Caller, parent meta.Ino, name, target string) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(ctx context.Context, ino meta.Ino) (string, error) { return "", errTODO }

// Link makes a hard link.
func (fs *FS) Link(ctx context.Context, ino, newParent meta.Ino, newName string) (meta.Attr, error) {
	return meta.Attr{}, errTODO
}

// Unlink removes a name; the data lives on while the file is open.
func (fs *FS) Unlink(ctx context.Context, parent meta.Ino, name string) error { return errTODO }

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(ctx context.Context, parent meta.Ino, name string) error { return errTODO }

// Rename renames, with renameat2 flags.
func (fs *FS) Rename(ctx context.Context, oldParent meta.Ino, oldName string, newParent meta.Ino, newName string, flags uint32) error {
	return errTODO
}

// Open opens a file (flags as in open(2); O_TRUNC truncates).
func (fs *FS) Open(ctx context.Context, ino meta.Ino, flags uint32) (Handle, error) {
	return 0, errTODO
}

// Read reads into buf from off and returns how many bytes it read (short
// only at end of file).
func (fs *FS) Read(ctx context.Context, ino meta.Ino, fh Handle, off int64, buf []byte) (int, error) {
	return 0, errTODO
}

// Write writes data at off.
func (fs *FS) Write(ctx context.Context, ino meta.Ino, fh Handle, off int64, data []byte) (int, error) {
	return 0, errTODO
}

// Flush is called on each close(2) of a file descriptor. Like ext4, it does
// not make the data durable.
func (fs *FS) Flush(ctx context.Context, ino meta.Ino, fh Handle) error { return errTODO }

// Release closes a handle; the last close of an unlinked file frees it.
func (fs *FS) Release(ctx context.Context, ino meta.Ino, fh Handle) error { return errTODO }

// Fsync returns when ino's data and metadata are durable.
func (fs *FS) Fsync(ctx context.Context, ino meta.Ino, fh Handle, datasync bool) error {
	return errTODO
}

// Fallocate allocates (mode 0, FALLOC_FL_KEEP_SIZE) or punches holes
// (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE); other modes give EOPNOTSUPP.
func (fs *FS) Fallocate(ctx context.Context, ino meta.Ino, fh Handle, off, length int64, mode uint32) error {
	return errTODO
}

// Lseek implements SEEK_DATA and SEEK_HOLE.
func (fs *FS) Lseek(ctx context.Context, ino meta.Ino, fh Handle, off int64, whence int) (int64, error) {
	return 0, errTODO
}

// OpenDir opens a directory for reading.
func (fs *FS) OpenDir(ctx context.Context, ino meta.Ino) (Handle, error) { return 0, errTODO }

// ReadDir calls fn for entries after offset, "." and ".." first (cookies 1
// and 2), until fn returns false.
func (fs *FS) ReadDir(ctx context.Context, ino meta.Ino, fh Handle, offset uint64, plus bool, fn func(meta.DirEntry) bool) error {
	return errTODO
}

// ReleaseDir closes a directory handle.
func (fs *FS) ReleaseDir(ctx context.Context, ino meta.Ino, fh Handle) error { return errTODO }

// FsyncDir makes the directory's entries durable.
func (fs *FS) FsyncDir(ctx context.Context, ino meta.Ino) error { return errTODO }

// StatFS reports capacity and use.
func (fs *FS) StatFS(ctx context.Context) (StatFS, error) { return StatFS{}, errTODO }

// GetXattr returns an xattr's value.
func (fs *FS) GetXattr(ctx context.Context, ino meta.Ino, name string) ([]byte, error) {
	return nil, errTODO
}

// SetXattr sets an xattr (flags XATTR_CREATE, XATTR_REPLACE).
func (fs *FS) SetXattr(ctx context.Context, ino meta.Ino, name string, value []byte, flags uint32) error {
	return errTODO
}

// ListXattr lists xattr names.
func (fs *FS) ListXattr(ctx context.Context, ino meta.Ino) ([]string, error) { return nil, errTODO }

// RemoveXattr removes an xattr.
func (fs *FS) RemoveXattr(ctx context.Context, ino meta.Ino, name string) error { return errTODO }

// Compile-time use of the imports until the implementation lands.
var _ = blockstore.New
