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
	blk     *block // filled in when the load succeeds
	err     error
	noCache bool // the block was deleted while it loaded
	waiters int  // Gets that joined the load (under Store.mu)
}

// block is a loaded block's content and what decides when the buffer
// holding it may be reused for another load (all under Store.mu). Loads
// read into reused buffers because fresh multi-megabyte ones cost page
// faults and zeroing on every load (docs/performance.md, "cold read").
type block struct {
	data []byte
	// buf is the store's buffer that holds data, given back to Store.bufs
	// once the block is out of the cache and nothing reads it; nil if the
	// buffer is not the store's (Put's data, an object store without
	// GetBuf).
	buf []byte
	// refs counts the reads copying from data (ReadAt, and Gets and
	// loads until they decide).
	refs int
	// shared is set once Get has returned data: its caller may keep it,
	// so buf is never reused.
	shared bool
	cached bool // in the cache
}

// bufGetter is implemented by object stores that read an object into a
// buffer of the caller's (objstore.FileStore).
type bufGetter interface {
	GetBuf(ctx context.Context, key string, off, length int64, alloc func(n int) []byte) ([]byte, error)
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
	s.cache.add(id, &block{data: data, shared: true}, s.drop)
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
// multi-megabyte buffers cost page faults and zeroing on every block. Its
// content is arbitrary. A new buffer has room for encoding n bytes, so
// that loads' and Puts' buffers serve each other.
func (s *Store) getBuf(n int) []byte {
	if p, ok := s.bufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n, headerLen+lz4.CompressBlockBound(n))
}

func (s *Store) putBuf(b []byte) {
	if cap(b) >= 64<<10 { // small ones are cheap to allocate
		s.bufs.Put(&b)
	}
}

// decode checks and decompresses a stored block.
func decode(obj []byte) ([]byte, error) {
	return decodeBuf(obj, func(n int) []byte { return make([]byte, n) })
}

// decodeBuf is decode decompressing into a buffer from alloc, which it
// fills whole (or fails).
func decodeBuf(obj []byte, alloc func(n int) []byte) ([]byte, error) {
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
		data = alloc(int(rawLen))
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
// objstore.ErrNotFound. ReadAt, which copies, lets the block's buffer be
// reused once it leaves the cache.
func (s *Store) Get(ctx context.Context, id uint64) ([]byte, error) {
	b, err := s.acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	b.shared = true
	b.refs--
	s.mu.Unlock()
	return b.data, nil
}

// ReadAt copies block id's content from off into dst and returns how many
// bytes it copied (fewer than len(dst) at the block's end, 0 from off at
// or past it). Its errors are Get's.
func (s *Store) ReadAt(ctx context.Context, id uint64, dst []byte, off int) (int, error) {
	b, err := s.acquire(ctx, id)
	if err != nil {
		return 0, err
	}
	n := 0
	if off < len(b.data) {
		n = copy(dst, b.data[off:])
	}
	s.mu.Lock()
	s.release(b)
	s.mu.Unlock()
	return n, nil
}

// acquire returns block id, from the cache or loaded, with a reference
// the caller must give back (release, under s.mu).
func (s *Store) acquire(ctx context.Context, id uint64) (*block, error) {
	for {
		s.mu.Lock()
		if b, ok := s.cache.get(id); ok {
			b.refs++
			s.mu.Unlock()
			s.hits.Add(1)
			return b, nil
		}
		if f, ok := s.inflight[id]; ok {
			f.waiters++
			s.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				// Give back the reference the leader takes (or took) for us.
				s.mu.Lock()
				if f.blk != nil {
					s.release(f.blk)
				} else {
					f.waiters--
				}
				s.mu.Unlock()
				return nil, ctx.Err()
			}
			// The leader's context may have ended its load; ours has not,
			// so try again.
			if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue
			}
			if f.err != nil {
				return nil, f.err
			}
			s.hits.Add(1)
			return f.blk, nil // the leader took our reference
		}
		f := &fetch{done: make(chan struct{})}
		s.inflight[id] = f
		s.mu.Unlock()
		s.misses.Add(1)

		data, buf, err := s.load(ctx, id)
		s.mu.Lock()
		delete(s.inflight, id)
		if err == nil {
			// References for this load and every Get that joined it, so
			// that none of them finds the buffer reused, even if the
			// cache drops the block before they read it.
			b := &block{data: data, buf: buf, refs: 1 + f.waiters}
			if !f.noCache {
				b.cached = s.cache.add(id, b, s.drop)
			}
			f.blk = b
		}
		f.err = err
		s.mu.Unlock()
		close(f.done)
		if err != nil {
			return nil, err
		}
		return f.blk, nil
	}
}

// release gives back a reference acquire returned. s.mu must be held.
func (s *Store) release(b *block) {
	b.refs--
	s.recycle(b)
}

// drop is called by the cache for every block it drops.
func (s *Store) drop(b *block) {
	b.cached = false
	s.recycle(b)
}

// recycle gives b's buffer back for reuse if nothing can read it any
// more. s.mu must be held.
func (s *Store) recycle(b *block) {
	if b.refs > 0 || b.cached || b.shared || b.buf == nil {
		return
	}
	s.putBuf(b.buf)
	b.buf, b.data = nil, nil
}

// load reads block id from the object store, bypassing the cache, and
// returns its content and, if the content is in a buffer of the store's,
// that buffer.
func (s *Store) load(ctx context.Context, id uint64) (data, buf []byte, err error) {
	g, reuse := s.objs.(bufGetter)
	var obj []byte
	if reuse {
		obj, err = g.GetBuf(ctx, Key(id), 0, -1, s.getBuf)
	} else {
		obj, err = s.objs.Get(ctx, Key(id), 0, -1)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get block %d: %w", id, err)
	}
	if len(obj) >= headerLen && obj[4] == codecLZ4 {
		// Decompressed into a buffer of the store's, which data keeps;
		// obj is done with.
		data, err = decodeBuf(obj, func(n int) []byte { buf = s.getBuf(n); return buf })
		if reuse {
			s.putBuf(obj)
		}
	} else {
		data, err = decodeBuf(obj, s.getBuf) // data is obj's payload
		if reuse {
			buf = obj
		}
	}
	if err != nil {
		if buf != nil {
			s.putBuf(buf)
		}
		return nil, nil, fmt.Errorf("block %d (%s in %s): %w", id, Key(id), s.objs, err)
	}
	return data, buf, nil
}

// Verify reads block id from the object store, bypassing the cache, and
// checks its format and checksum (for fsck).
func (s *Store) Verify(ctx context.Context, id uint64) error {
	_, buf, err := s.load(ctx, id)
	if buf != nil {
		s.putBuf(buf)
	}
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
		// A failed prefetch only costs a later Get its own attempt.
		if b, err := s.acquire(s.bg, id); err == nil {
			s.mu.Lock()
			s.release(b)
			s.mu.Unlock()
		}
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
	s.cache.remove(id, s.drop)
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
