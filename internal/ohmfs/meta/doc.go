// Package meta is the metadata engine of an ohmfs volume: inodes, directory
// entries, file chunks, symlinks and xattrs in one SQLite database (WAL mode,
// modernc.org/sqlite, so that Litestream can replicate it).
//
// Every mutating call runs inside one long-lived write transaction that is
// committed only by Commit. That is the group commit of docs/contracts.md:
// operations cost an in-process SQLite statement, not an fsync, and because a
// crash discards exactly the uncommitted tail, the durable state is always a
// consistent prefix of the operations. Each call is atomic on its own (it
// runs under a savepoint), so a failed call leaves nothing behind.
//
// Errors that a filesystem caller must pass on to the kernel are returned as
// syscall.Errno values (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, ENODATA,
// ENAMETOOLONG, ...), so callers can test them with errors.Is.
//
// POSIX record locks and flock are not kept here: a volume has a single
// writer (one mount), so the kernel's local lock tables are exact.
package meta
