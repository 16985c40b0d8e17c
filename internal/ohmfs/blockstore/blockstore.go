// Package blockstore keeps file data as immutable, compressed blocks in an
// object store, with a bounded cache of decompressed blocks in memory.
//
// A block is written once under a key derived from its id and never
// rewritten: an overwrite of file data makes a new block, and the old one is
// freed for the garbage collector.
package blockstore

import (
	"context"
	"errors"
	_ "github.com/pierrec/lz4/v4"
	"time"

	"ohm/internal/ohmfs/objstore"
)

var errTODO = errors.New("blockstore: not implemented yet")

// Options tune a Store.
type Options struct {
	// CacheBytes bounds the memory held by decompressed cached blocks.
	// Default 256 MiB.
	CacheBytes int64
	// Compression is "lz4" (default) or "none".
	Compression string
}

// Store reads and writes blocks. It is safe for concurrent use.
type Store struct{}

// New returns a Store over objs.
func New(objs objstore.Store, opts Options) *Store { return &Store{} }

// Key returns the object key of block id.
func Key(id uint64) string { return "" }

// Put compresses data (unless that does not pay) and stores it as block id.
// The block is durable when Put returns. Put may keep data in the cache, so
// the caller must not modify data afterwards.
func (s *Store) Put(ctx context.Context, id uint64, data []byte) error { return errTODO }

// Get returns the decompressed content of block id. The returned slice is
// shared with the cache and must not be modified.
func (s *Store) Get(ctx context.Context, id uint64) ([]byte, error) { return nil, errTODO }

// Prefetch starts loading block id into the cache in the background (for
// readahead); it returns at once.
func (s *Store) Prefetch(id uint64) {}

// Delete removes block id from the store and the cache.
func (s *Store) Delete(ctx context.Context, id uint64) error { return errTODO }

// List calls fn for every stored block with its stored (compressed) size
// and modification time.
func (s *Store) List(ctx context.Context, fn func(id uint64, size int64, mtime time.Time) error) error {
	return errTODO
}

// Stats reports what the store holds and has done.
type Stats struct {
	CacheBytes  int64
	CacheHits   uint64
	CacheMisses uint64
	StoredBytes uint64 // bytes written by Put after compression
	RawBytes    uint64 // bytes given to Put before compression
}

// Stats returns counters since New.
func (s *Store) Stats() Stats { return Stats{} }
