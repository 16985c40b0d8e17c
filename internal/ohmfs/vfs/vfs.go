// Package vfs implements POSIX file semantics over the metadata engine
// (meta) and the block store (blockstore), independent of FUSE.
package vfs
