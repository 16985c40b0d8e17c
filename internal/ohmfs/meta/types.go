package meta

import "time"

// Ino is an inode number. It doubles as the FUSE node id.
type Ino uint64

// RootIno is the inode of the volume's root directory.
const RootIno Ino = 1

// ChunkSize is the size of the file pieces that chunks and blocks hold.
const ChunkSize = 4 << 20

// MaxNameLen is the longest name of a directory entry, in bytes.
const MaxNameLen = 255

// Attr is the stored state of an inode.
type Attr struct {
	Ino   Ino
	Mode  uint32 // file type and permission bits, as in syscall.Stat_t.Mode
	Nlink uint32
	Uid   uint32
	Gid   uint32
	Rdev  uint32
	Size  uint64 // logical size in bytes
	Used  uint64 // bytes the file really holds (sum of its chunks' Used): st_blocks = ceil(Used/512)
	Atime time.Time
	Mtime time.Time
	Ctime time.Time
	// Layout is how a regular file's data is kept: in chunks (the default)
	// or, for a device image, as an extent map into packs.
	Layout Layout
}

// Layout is how a regular file's data is kept.
type Layout uint8

const (
	// LayoutFile keeps data in ChunkSize chunks, each one block (or
	// inline), for files written by programs.
	LayoutFile Layout = 0
	// LayoutImage keeps data as an extent map of PageSize pages into
	// packs, for device images written through a loop device: small
	// random writes, each flush one local write-ahead log append.
	LayoutImage Layout = 1
)

// SetAttr says which attributes SetAttr changes; a nil field is left alone.
// Size only records the new logical size: dropping or trimming chunks past
// it is the caller's job (see TruncateChunks), because trimming the last
// chunk needs its data.
type SetAttr struct {
	Mode  *uint32 // permission bits only; the file type never changes
	Uid   *uint32
	Gid   *uint32
	Size  *uint64
	Atime *time.Time
	Mtime *time.Time
	Ctime *time.Time // when nil, SetAttr sets ctime to now
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name   string
	Ino    Ino
	Mode   uint32 // file type bits (and permissions)
	Cookie uint64 // pass as offset to ReadDir to continue after this entry; always > 2
	Attr   *Attr  // set when ReadDir is asked for attributes (readdirplus)
}

// Chunk is the data of one ChunkSize-aligned piece of a file. A missing
// chunk is a hole and reads as zeros.
type Chunk struct {
	Index   uint64 // byte offset / ChunkSize
	Len     uint32 // logical bytes from the chunk's start (<= ChunkSize); bytes past Len read as zeros
	BlockID uint64 // the immutable block holding the data; 0 when Inline is used
	Inline  []byte // the data itself, for small files kept in the database
	// Used is how many of the chunk's bytes hold data: its 4 KiB pages
	// that are not all zeros, at most Len. It is what st_blocks counts, so
	// a hole inside a chunk takes no space. 0 when writing means Len.
	Used uint32
}

// FileUpdate is what flushing a file's dirty data records, atomically.
type FileUpdate struct {
	Chunks []Chunk   // chunks to put in place; each replaces the chunk with the same Index
	Holes  []uint64  // chunk indexes that became holes (all zeros): their rows are dropped
	Size   uint64    // the file's logical size after the flush
	Mtime  time.Time // zero: leave as is
	Ctime  time.Time // zero: leave as is
}

// FreedBlock is a block that nothing references any more, waiting for the
// garbage collector's grace period.
type FreedBlock struct {
	ID      uint64
	FreedAt time.Time
}

// Usage is what statfs reports.
type Usage struct {
	UsedBytes uint64 // sum of Used over all inodes
	Inodes    uint64 // live inodes, including orphans
}

// Problem is one inconsistency found by Check.
type Problem struct {
	Ino    Ino
	Detail string
}

// Options tune Open.
type Options struct {
	// ReadOnly opens the database for inspection (status, fsck) without
	// starting a write transaction.
	ReadOnly bool
}
