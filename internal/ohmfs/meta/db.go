package meta

import (
	"context"
	"errors"
	_ "modernc.org/sqlite"
	"time"
)

var errTODO = errors.New("meta: not implemented yet")

// DB is an open metadata database. Its methods are safe for concurrent use;
// they are serialized internally.
type DB struct{}

// Create makes a new, empty metadata database at path with a root directory
// owned by uid/gid with mode 0755 and the given settings (volume uuid,
// capacity, chunk size, ...). It fails if path exists.
func Create(ctx context.Context, path string, uid, gid uint32, settings map[string]string) error {
	return errTODO
}

// Open opens the database at path, migrating its schema if it is older, and
// begins the write transaction (unless opts.ReadOnly).
func Open(ctx context.Context, path string, opts Options) (*DB, error) { return nil, errTODO }

// Close commits and closes the database.
func (db *DB) Close(ctx context.Context) error { return errTODO }

// Commit makes every call made so far durable (the WAL is fsynced), then
// begins the next transaction. It is the only point where the database is
// written to disk.
func (db *DB) Commit(ctx context.Context) error { return errTODO }

// Setting returns a volume setting written by Create ("" if absent).
func (db *DB) Setting(ctx context.Context, key string) (string, error) { return "", errTODO }

// Lookup returns the attributes of the entry name in directory parent.
func (db *DB) Lookup(ctx context.Context, parent Ino, name string) (Attr, error) {
	return Attr{}, errTODO
}

// GetAttr returns the attributes of ino.
func (db *DB) GetAttr(ctx context.Context, ino Ino) (Attr, error) { return Attr{}, errTODO }

// SetAttr changes the attributes named in set and returns the result.
func (db *DB) SetAttr(ctx context.Context, ino Ino, set SetAttr) (Attr, error) {
	return Attr{}, errTODO
}

// Mknod creates an inode of any type but symlink (regular file, directory,
// fifo, socket, device) as entry name in parent, with times set to now.
// Directories get nlink 2 and raise the parent's nlink.
func (db *DB) Mknod(ctx context.Context, parent Ino, name string, mode, rdev, uid, gid uint32) (Attr, error) {
	return Attr{}, errTODO
}

// Symlink creates a symbolic link to target as entry name in parent.
func (db *DB) Symlink(ctx context.Context, parent Ino, name, target string, uid, gid uint32) (Attr, error) {
	return Attr{}, errTODO
}

// Readlink returns a symlink's target.
func (db *DB) Readlink(ctx context.Context, ino Ino) (string, error) { return "", errTODO }

// Link adds a hard link to ino (not a directory) as newName in newParent.
func (db *DB) Link(ctx context.Context, ino Ino, newParent Ino, newName string) (Attr, error) {
	return Attr{}, errTODO
}

// Unlink removes the entry name (not a directory) from parent and returns
// the target's attributes after its nlink was decremented. An inode whose
// nlink reaches 0 becomes an orphan: it keeps its data until Purge.
func (db *DB) Unlink(ctx context.Context, parent Ino, name string) (Attr, error) {
	return Attr{}, errTODO
}

// Rmdir removes the empty directory name from parent.
func (db *DB) Rmdir(ctx context.Context, parent Ino, name string) error { return errTODO }

// Rename moves oldName in oldParent to newName in newParent with the
// semantics of rename(2) and renameat2 flags (RENAME_NOREPLACE,
// RENAME_EXCHANGE). When an existing target is replaced, its attributes
// after the nlink decrement are returned (Ino 0 when nothing was replaced);
// if its nlink reached 0 it is an orphan like after Unlink.
func (db *DB) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) (Attr, error) {
	return Attr{}, errTODO
}

// Parent returns the parent directory of directory ino (RootIno for the root).
func (db *DB) Parent(ctx context.Context, ino Ino) (Ino, error) { return 0, errTODO }

// ReadDir calls fn for the entries of directory ino whose Cookie is greater
// than offset, in Cookie order, until fn returns false. "." and ".." are not
// included (the caller gives them cookies 1 and 2). With plus, each entry
// carries its Attr.
func (db *DB) ReadDir(ctx context.Context, ino Ino, offset uint64, plus bool, fn func(DirEntry) bool) error {
	return errTODO
}

// GetXattr returns the value of xattr name (ENODATA if absent).
func (db *DB) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	return nil, errTODO
}

// SetXattr sets xattr name; flags are XATTR_CREATE / XATTR_REPLACE semantics.
func (db *DB) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	return errTODO
}

// ListXattr returns the names of ino's xattrs.
func (db *DB) ListXattr(ctx context.Context, ino Ino) ([]string, error) { return nil, errTODO }

// RemoveXattr removes xattr name (ENODATA if absent).
func (db *DB) RemoveXattr(ctx context.Context, ino Ino, name string) error { return errTODO }

// Chunks returns the chunks of ino with from <= Index < to, in Index order.
func (db *DB) Chunks(ctx context.Context, ino Ino, from, to uint64) ([]Chunk, error) {
	return nil, errTODO
}

// UpdateFile applies a flush of ino's data atomically: chunk rows, holes,
// size, Used and times. Blocks of replaced chunks go to the freed list.
func (db *DB) UpdateFile(ctx context.Context, ino Ino, u FileUpdate) (Attr, error) {
	return Attr{}, errTODO
}

// TruncateChunks drops every chunk of ino with Index >= from (their blocks go
// to the freed list) and returns the new Attr.
func (db *DB) TruncateChunks(ctx context.Context, ino Ino, from uint64) (Attr, error) {
	return Attr{}, errTODO
}

// NewBlockID returns a block id never returned before by this volume, even
// across crashes (ids are handed out from a reserved range whose end is
// committed before any id in it is used).
func (db *DB) NewBlockID(ctx context.Context) (uint64, error) { return 0, errTODO }

// Orphans returns the inodes with nlink 0 (unlinked while open).
func (db *DB) Orphans(ctx context.Context) ([]Ino, error) { return nil, errTODO }

// Purge deletes orphan ino with its chunks and xattrs; its blocks go to the
// freed list. It is a no-op if ino has links again or no longer exists.
func (db *DB) Purge(ctx context.Context, ino Ino) error { return errTODO }

// Usage returns what statfs reports.
func (db *DB) Usage(ctx context.Context) (Usage, error) { return Usage{}, errTODO }

// FreedBlocks returns the blocks freed at or before cutoff.
func (db *DB) FreedBlocks(ctx context.Context, cutoff time.Time) ([]FreedBlock, error) {
	return nil, errTODO
}

// ForgetFreed removes ids from the freed list once their objects are deleted.
func (db *DB) ForgetFreed(ctx context.Context, ids []uint64) error { return errTODO }

// ReferencedBlocks calls fn for every block id some chunk references.
func (db *DB) ReferencedBlocks(ctx context.Context, fn func(id uint64) error) error {
	return errTODO
}

// Check verifies the metadata's own invariants (every entry names a live
// inode, link counts match entries, directories form a tree, counters match
// the rows, chunks lie within their file) and returns what it finds wrong.
func (db *DB) Check(ctx context.Context) ([]Problem, error) { return nil, errTODO }
