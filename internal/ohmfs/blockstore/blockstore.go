// Package blockstore keeps file data as immutable, compressed blocks in an
// object store, with a bounded cache of decompressed blocks in memory.
//
// A block is written once under a key derived from its id and never
// rewritten: an overwrite of file data makes a new block, and the old one is
// freed for the garbage collector.
//
// A stored block is a 16-byte header followed by the payload:
//
//	0  "OHB1"    magic
//	4  codec     0 none, 1 lz4 block
//	5  3 bytes   reserved, zero
//	8  uint32le  raw (decompressed) length
//	12 uint32le  CRC-32C of the raw data
package blockstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pierrec/lz4/v4"

	"ohm/internal/ohmfs/objstore"
)

// DefaultCacheBytes is the cache bound when Options.CacheBytes is 0.
const DefaultCacheBytes = 256 << 20

// prefetchWorkers bounds the background loads Prefetch runs at once.
const prefetchWorkers = 8

// ErrCorrupt is returned (wrapped, with the block id) when a stored block
// fails its format or checksum checks. A filesystem reports it as EIO.
var ErrCorrupt = errors.New("corrupt block")

const (
	headerLen = 16
	magic     = "OHB1"

	codecNone = 0
	codecLZ4  = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options tune a Store.
type Options struct {
	// CacheBytes bounds the memory held by decompressed cached blocks.
	// Default 256 MiB; negative disables the cache.
	CacheBytes int64
	// Compression is "lz4" (default) or "none".
	Compression string
}

// Store reads and writes blocks. It is safe for concurrent use. Close
// stops its background loads.
type Store struct {
	objs     objstore.Store
	compress bool
	prefetch chan struct{} // semaphore of background loads

	// Background loads (Prefetch) run under bg, which Close cancels, and
	// are counted in bgWork, which Close waits for: none outlives Close.
	bg       context.Context
	bgCancel context.CancelFunc
	bgWork   sync.WaitGroup

	compressors sync.Pool // *lz4.Compressor, which is not safe for concurrent use
	bufs        sync.Pool // *[]byte for encoded blocks

	mu       sync.Mutex
	closed   bool // by Close: no new background loads
	cache    lru
	inflight map[uint64]*fetch

	hits, misses, stored, raw atomic.Uint64
}

// fetch is a load of one block shared by every Get that wants it meanwhile.
type fetch struct {
	done    chan struct{}
	data    []byte
	err     error
	noCache bool // the block was deleted while it loaded
	waiters int  // Gets that joined the load (under Store.mu)
}

// New returns a Store over objs.
func New(objs objstore.Store, opts Options) *Store {
	capacity := opts.CacheBytes
	if capacity == 0 {
		capacity = DefaultCacheBytes
	}
	bg, cancel := context.WithCancel(context.Background())
	s := &Store{
		objs:     objs,
		bg:       bg,
		bgCancel: cancel,
		compress: opts.Compression != "none",
		prefetch: make(chan struct{}, prefetchWorkers),
		cache:    newLRU(capacity),
		inflight: make(map[uint64]*fetch),
	}
	s.compressors.New = func() any { return new(lz4.Compressor) }
	return s
}

// Key returns the object key of block id. The low byte of id spreads
// blocks over 256 directories.
func Key(id uint64) string { return fmt.Sprintf("blocks/%02x/%016x", id&0xff, id) }

// parseKey is the inverse of Key.
func parseKey(key string) (uint64, bool) {
	rest, ok := strings.CutPrefix(key, "blocks/")
	if !ok || len(rest) != 2+1+16 || rest[2] != '/' {
		return 0, false
	}
	id, err := strconv.ParseUint(rest[3:], 16, 64)
	if err != nil || Key(id) != key {
		return 0, false
	}
	return id, true
}

// Put compresses data (unless that does not pay) and stores it as block id.
// The block is durable when Put returns. Put may keep data in the cache, so
// the caller must not modify data afterwards.
func (s *Store) Put(ctx context.Context, id uint64, data []byte) error {
	obj, err := s.encode(data)
	if err != nil {
		return fmt.Errorf("put block %d: %w", id, err)
	}
	err = s.objs.Put(ctx, Key(id), obj)
	n := len(obj)
	s.putBuf(obj) // Put does not keep it
	if err != nil {
		return fmt.Errorf("put block %d: %w", id, err)
	}
	s.raw.Add(uint64(len(data)))
	s.stored.Add(uint64(n))
	s.mu.Lock()
	s.cache.add(id, data)
	s.mu.Unlock()
	return nil
}

// encode returns the stored form of data, in a buffer from s.bufs that
// the caller should give back with putBuf.
func (s *Store) encode(data []byte) ([]byte, error) {
	if uint64(len(data)) > 1<<32-1 {
		return nil, fmt.Errorf("block of %d bytes is too large", len(data))
	}
	var hdr [headerLen]byte
	copy(hdr[:], magic)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(hdr[12:], crc32.Checksum(data, castagnoli))

	buf := s.getBuf(headerLen + lz4.CompressBlockBound(len(data)))
	copy(buf, hdr[:])
	if s.compress && len(data) > 0 {
		c := s.compressors.Get().(*lz4.Compressor)
		n, err := c.CompressBlock(data, buf[headerLen:])
		s.compressors.Put(c)
		// Keep the compressed form only if it saves at least 10%: below
		// that, decompressing on every read costs more than it saves.
		if err == nil && n > 0 && n <= len(data)-len(data)/10 {
			buf[4] = codecLZ4
			return buf[:headerLen+n], nil
		}
	}
	copy(buf[headerLen:], data)
	return buf[:headerLen+len(data)], nil
}

// getBuf returns a buffer of length n, reused if one is at hand: fresh
// multi-megabyte buffers cost page faults and zeroing on every block.
func (s *Store) getBuf(n int) []byte {
	if p, ok := s.bufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func (s *Store) putBuf(b []byte) {
	if cap(b) >= 64<<10 { // small ones are cheap to allocate
		s.bufs.Put(&b)
	}
}

// decode checks and decompresses a stored block.
func decode(obj []byte) ([]byte, error) {
	if len(obj) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCorrupt, len(obj))
	}
	if string(obj[:4]) != magic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrCorrupt, obj[:4])
	}
	rawLen := binary.LittleEndian.Uint32(obj[8:])
	sum := binary.LittleEndian.Uint32(obj[12:])
	payload := obj[headerLen:]
	var data []byte
	switch obj[4] {
	case codecNone:
		if uint64(len(payload)) != uint64(rawLen) {
			return nil, fmt.Errorf("%w: payload is %d bytes, header says %d", ErrCorrupt, len(payload), rawLen)
		}
		data = payload
	case codecLZ4:
		data = make([]byte, rawLen)
		n, err := lz4.UncompressBlock(payload, data)
		if err != nil {
			return nil, fmt.Errorf("%w: lz4: %v", ErrCorrupt, err)
		}
		if n != int(rawLen) {
			return nil, fmt.Errorf("%w: decompressed to %d bytes, header says %d", ErrCorrupt, n, rawLen)
		}
	default:
		return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, obj[4])
	}
	if got := crc32.Checksum(data, castagnoli); got != sum {
		return nil, fmt.Errorf("%w: checksum %08x, header says %08x", ErrCorrupt, got, sum)
	}
	return data, nil
}

// Get returns the decompressed content of block id. The returned slice is
// shared with the cache and must not be modified. A block that fails its
// checks gives an error wrapping ErrCorrupt; a missing one wraps
// objstore.ErrNotFound.
func (s *Store) Get(ctx context.Context, id uint64) ([]byte, error) {
	for {
		s.mu.Lock()
		if data, ok := s.cache.get(id); ok {
			s.mu.Unlock()
			s.hits.Add(1)
			return data, nil
		}
		if f, ok := s.inflight[id]; ok {
			f.waiters++
			s.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			// The leader's context may have ended its load; ours has not,
			// so try again.
			if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue
			}
			s.hits.Add(1)
			return f.data, f.err
		}
		f := &fetch{done: make(chan struct{})}
		s.inflight[id] = f
		s.mu.Unlock()
		s.misses.Add(1)

		f.data, f.err = s.load(ctx, id)
		s.mu.Lock()
		delete(s.inflight, id)
		if f.err == nil && !f.noCache {
			s.cache.add(id, f.data)
		}
		s.mu.Unlock()
		close(f.done)
		return f.data, f.err
	}
}

// load reads block id from the object store, bypassing the cache.
func (s *Store) load(ctx context.Context, id uint64) ([]byte, error) {
	obj, err := s.objs.Get(ctx, Key(id), 0, -1)
	if err != nil {
		return nil, fmt.Errorf("get block %d: %w", id, err)
	}
	data, err := decode(obj)
	if err != nil {
		return nil, fmt.Errorf("block %d (%s in %s): %w", id, Key(id), s.objs, err)
	}
	return data, nil
}

// Verify reads block id from the object store, bypassing the cache, and
// checks its format and checksum (for fsck).
func (s *Store) Verify(ctx context.Context, id uint64) error {
	_, err := s.load(ctx, id)
	return err
}

// Prefetch starts loading block id into the cache in the background (for
// readahead); it returns at once. It reports false if every background
// worker is busy or the Store is closed and the request was dropped (the
// caller may ask again later), true if the block is cached, loading or now
// queued.
func (s *Store) Prefetch(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	_, cached := s.cache.items[id]
	_, loading := s.inflight[id]
	if cached || loading {
		return true
	}
	select {
	case s.prefetch <- struct{}{}:
	default:
		return false
	}
	// Added under mu, so that Close, which sets closed under mu, waits
	// for every load started before it.
	s.bgWork.Add(1)
	go func() {
		defer s.bgWork.Done()
		defer func() { <-s.prefetch }()
		s.Get(s.bg, id) //nolint:errcheck // a failed prefetch only costs a later Get its own attempt
	}()
	return true
}

// Close cancels the background loads Prefetch started and waits for them
// to return, so that none touches the object store afterwards (an S3
// volume's lease may be released next). Get, Put and Delete keep working;
// Prefetch drops every request. Close may be called more than once.
func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.bgCancel()
	s.bgWork.Wait()
}

// Delete removes block id from the store and the cache.
func (s *Store) Delete(ctx context.Context, id uint64) error {
	s.mu.Lock()
	s.cache.remove(id)
	if f, ok := s.inflight[id]; ok {
		f.noCache = true
	}
	s.mu.Unlock()
	if err := s.objs.Delete(ctx, Key(id)); err != nil {
		return fmt.Errorf("delete block %d: %w", id, err)
	}
	return nil
}

// List calls fn for every stored block with its stored (compressed) size
// and modification time. Objects under blocks/ that are not named like
// blocks are skipped.
func (s *Store) List(ctx context.Context, fn func(id uint64, size int64, mtime time.Time) error) error {
	return s.objs.List(ctx, "blocks/", func(oi objstore.ObjectInfo) error {
		id, ok := parseKey(oi.Key)
		if !ok {
			return nil
		}
		return fn(id, oi.Size, oi.ModTime)
	})
}

// CleanTemp removes what interrupted writes left in the object store (the
// file store's temporary files) older than olderThan, and returns how many
// it removed.
func (s *Store) CleanTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	n, err := objstore.CleanTemp(ctx, s.objs, olderThan)
	if err != nil {
		return n, fmt.Errorf("clean temporary objects: %w", err)
	}
	return n, nil
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
func (s *Store) Stats() Stats {
	s.mu.Lock()
	cached := s.cache.size
	s.mu.Unlock()
	return Stats{
		CacheBytes:  cached,
		CacheHits:   s.hits.Load(),
		CacheMisses: s.misses.Load(),
		StoredBytes: s.stored.Load(),
		RawBytes:    s.raw.Load(),
	}
}
