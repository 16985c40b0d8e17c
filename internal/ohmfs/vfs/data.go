package vfs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

const chunkSize = meta.ChunkSize

// file is the in-memory state of an open file or one with unflushed data.
// Everything but ino is guarded by mu.
type file struct {
	ino meta.Ino
	mu  sync.Mutex

	loaded   bool // the fields below come from meta
	regular  bool
	dir      bool
	detached bool // no longer in fs.files: look the inode up again
	dead     bool // purged: its data goes nowhere

	opens  int
	orphan bool // unlinked while open: purged at the last Release

	size       uint64 // logical size, including unflushed writes
	metaSize   uint64 // size recorded in meta; no chunk lies at or past it
	mtime      time.Time
	ctime      time.Time
	timesDirty bool // mtime/ctime are newer than meta's

	// inlineMaybe says chunk 0 may be stored inline; when the file grows
	// past InlineMax, the flush turns it into a block.
	inlineMaybe bool

	dirty map[uint64]*dchunk // chunks whose newest data is in memory

	chunks       map[uint64]meta.Chunk // meta's chunks, once chunksLoaded
	chunksLoaded bool

	err error // first upload error since the last Fsync, reported by it
}

// dchunk is a chunk whose data is in memory. buf holds the chunk's bytes
// from its start up to its logical length len(buf); bytes between len(buf)
// and cap(buf) are always zero. Once an upload starts, buf is frozen (the
// block store may keep it): writers replace the dchunk with a copy.
type dchunk struct {
	idx       uint64
	buf       []byte
	oldUsed   uint32 // Used of meta's chunk when this one was made (for Used)
	uploading bool
	done      chan struct{} // closed when the upload ends
}

func (f *file) init(a meta.Attr, inlineMax int) {
	f.loaded = true
	f.regular = a.Mode&syscall.S_IFMT == syscall.S_IFREG
	f.dir = a.Mode&syscall.S_IFMT == syscall.S_IFDIR
	f.size, f.metaSize = a.Size, a.Size
	f.inlineMaybe = a.Size > 0 && a.Size <= uint64(inlineMax)
	f.dirty = make(map[uint64]*dchunk)
}

func (f *file) idle() bool {
	return f.opens == 0 && len(f.dirty) == 0 && f.size == f.metaSize && !f.timesDirty
}

func (f *file) setErr(err error) {
	if f.err == nil {
		f.err = err
	}
}

func (f *file) takeErr() error {
	err := f.err
	f.err = nil
	return err
}

// overlayLocked puts the in-memory state over meta's attributes.
func (f *file) overlayLocked(a *meta.Attr) {
	if !f.loaded || f.dead || !f.regular {
		return
	}
	a.Size = f.size
	if f.timesDirty {
		a.Mtime = f.mtime
		if f.ctime.After(a.Ctime) {
			a.Ctime = f.ctime
		}
	}
	used := int64(a.Used)
	for _, dc := range f.dirty {
		used += int64(len(dc.buf)) - int64(dc.oldUsed)
	}
	a.Used = uint64(max(used, 0))
}

// lockFile returns ino's file, locked, making it if need be.
func (fs *FS) lockFile(ctx context.Context, ino meta.Ino) (*file, error) {
	for {
		fs.mu.Lock()
		f := fs.files[ino]
		if f == nil {
			f = &file{ino: ino}
			fs.files[ino] = f
		}
		fs.mu.Unlock()
		f.mu.Lock()
		if f.detached {
			f.mu.Unlock()
			continue
		}
		if !f.loaded {
			a, err := fs.m.GetAttr(ctx, ino)
			if err != nil {
				fs.detachLocked(f)
				f.mu.Unlock()
				return nil, err
			}
			f.init(a, fs.cfg.InlineMax)
		}
		return f, nil
	}
}

// fileFromAttr returns the file of a newly made inode, locked.
func (fs *FS) fileFromAttr(a meta.Attr) *file {
	for {
		fs.mu.Lock()
		f := fs.files[a.Ino]
		if f == nil {
			f = &file{ino: a.Ino}
			f.init(a, fs.cfg.InlineMax)
			fs.files[a.Ino] = f
		}
		fs.mu.Unlock()
		f.mu.Lock()
		if f.detached {
			f.mu.Unlock()
			continue
		}
		if !f.loaded {
			f.init(a, fs.cfg.InlineMax)
		}
		return f
	}
}

// unlockFile unlocks f, forgetting it if nothing needs it any more.
func (fs *FS) unlockFile(f *file) {
	fs.maybeDetachLocked(f)
	f.mu.Unlock()
}

func (fs *FS) maybeDetachLocked(f *file) {
	if !f.detached && (f.dead || !f.loaded || f.idle()) {
		fs.detachLocked(f)
	}
}

func (fs *FS) detachLocked(f *file) {
	if f.detached {
		return
	}
	fs.mu.Lock()
	if fs.files[f.ino] == f {
		delete(fs.files, f.ino)
	}
	fs.mu.Unlock()
	f.detached = true
}

// killLocked drops f's unflushed data before its inode is purged.
func (fs *FS) killLocked(f *file) {
	for idx, dc := range f.dirty {
		delete(f.dirty, idx)
		if !dc.uploading {
			fs.mem.release(cap(dc.buf))
		}
	}
	f.dead = true
	f.size, f.metaSize, f.timesDirty = 0, 0, false
	fs.detachLocked(f)
}

// chunkLocked returns meta's chunk idx of f.
func (fs *FS) chunkLocked(ctx context.Context, f *file, idx uint64) (meta.Chunk, bool, error) {
	if idx*chunkSize >= f.metaSize {
		return meta.Chunk{}, false, nil
	}
	if f.chunksLoaded {
		c, ok := f.chunks[idx]
		return c, ok, nil
	}
	cs, err := fs.m.Chunks(ctx, f.ino, idx, idx+1)
	if err != nil {
		return meta.Chunk{}, false, fmt.Errorf("read chunk %d of inode %d: %w", idx, f.ino, err)
	}
	if len(cs) == 0 || cs[0].Index != idx {
		return meta.Chunk{}, false, nil
	}
	return cs[0], true, nil
}

// loadChunksLocked fills f's chunk cache.
func (fs *FS) loadChunksLocked(ctx context.Context, f *file) error {
	if f.chunksLoaded {
		return nil
	}
	f.chunks = make(map[uint64]meta.Chunk)
	if f.metaSize > 0 {
		cs, err := fs.m.Chunks(ctx, f.ino, 0, math.MaxUint64)
		if err != nil {
			f.chunks = nil
			return fmt.Errorf("read chunks of inode %d: %w", f.ino, err)
		}
		for _, c := range cs {
			f.chunks[c.Index] = c
		}
	}
	f.chunksLoaded = true
	return nil
}

func (f *file) cacheSet(c meta.Chunk) {
	if f.chunksLoaded {
		f.chunks[c.Index] = c
	}
}

func (f *file) cacheDel(idx uint64) {
	if f.chunksLoaded {
		delete(f.chunks, idx)
	}
}

func (f *file) cacheTruncate(from uint64) {
	if f.chunksLoaded {
		for idx := range f.chunks {
			if idx >= from {
				delete(f.chunks, idx)
			}
		}
	}
}

// chunkData returns the bytes of a stored chunk, up to its Len.
func (fs *FS) chunkData(ctx context.Context, ino meta.Ino, c meta.Chunk) ([]byte, error) {
	data := c.Inline
	if c.BlockID != 0 {
		var err error
		data, err = fs.b.Get(ctx, c.BlockID)
		if err != nil {
			// Only EIO may reach the kernel: a missing object must not
			// look like a missing file.
			return nil, fmt.Errorf("read block %d of inode %d: %v: %w", c.BlockID, ino, err, syscall.EIO)
		}
	}
	if len(data) > int(c.Len) {
		data = data[:c.Len]
	}
	return data, nil
}

// bufCap is the capacity of a buffer for need bytes of a chunk of f:
// small files grow in powers of two, others get a whole chunk at once.
func (fs *FS) bufCap(f *file, need int) int {
	if need > fs.cfg.InlineMax || f.size > uint64(fs.cfg.InlineMax) {
		return chunkSize
	}
	c := 1 << bits.Len(uint(max(need, 4096)-1))
	return min(c, chunkSize)
}

// dirtyChunkLocked returns a writable dirty chunk idx of f for a write of
// [from, to) in it, loading the stored data unless the write covers it
// (from 0, to 0 always loads).
func (fs *FS) dirtyChunkLocked(ctx context.Context, f *file, idx uint64, from, to int) (*dchunk, error) {
	if dc := f.dirty[idx]; dc != nil {
		if !dc.uploading {
			return dc, nil
		}
		// The upload owns dc.buf now: copy on write.
		n := &dchunk{idx: idx, oldUsed: dc.oldUsed}
		n.buf = make([]byte, len(dc.buf), max(cap(dc.buf), fs.bufCap(f, to)))
		copy(n.buf, dc.buf)
		fs.mem.charge(cap(n.buf))
		f.dirty[idx] = n
		return n, nil
	}
	c, ok, err := fs.chunkLocked(ctx, f, idx)
	if err != nil {
		return nil, err
	}
	dc := &dchunk{idx: idx}
	var base []byte
	if ok {
		dc.oldUsed = c.Used
		if from > 0 || to < int(c.Len) {
			if base, err = fs.chunkData(ctx, f.ino, c); err != nil {
				return nil, err
			}
		}
	}
	length := 0
	if base != nil {
		length = int(c.Len)
	}
	dc.buf = make([]byte, length, fs.bufCap(f, max(to, length)))
	copy(dc.buf, base)
	fs.mem.charge(cap(dc.buf))
	f.dirty[idx] = dc
	return dc, nil
}

// writeAt copies p into dc at off, growing the buffer as needed.
func (fs *FS) writeAt(f *file, dc *dchunk, off int, p []byte) {
	end := off + len(p)
	if end > cap(dc.buf) {
		nb := make([]byte, len(dc.buf), fs.bufCap(f, end))
		copy(nb, dc.buf)
		fs.mem.charge(cap(nb) - cap(dc.buf))
		dc.buf = nb
	}
	if end > len(dc.buf) {
		dc.buf = dc.buf[:end]
	}
	copy(dc.buf[off:], p)
}

// trim cuts dc to n bytes, keeping the zero tail invariant.
func (dc *dchunk) trim(n int) {
	if n < len(dc.buf) {
		clear(dc.buf[n:])
		dc.buf = dc.buf[:n]
	}
}

// pageSize is the unit in which a chunk's used bytes are counted, as a
// local filesystem counts blocks: a page of zeros inside a chunk is a hole.
const pageSize = 4096

// usedBytes returns how many bytes of b lie in pages that are not all
// zeros (what st_blocks counts). It is never 0 for data that is not all
// zeros, and meta takes 0 to mean the whole length.
func usedBytes(b []byte) uint32 {
	var n int
	for off := 0; off < len(b); off += pageSize {
		page := b[off:min(off+pageSize, len(b))]
		if !allZero(page) {
			n += len(page)
		}
	}
	return uint32(n)
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Read reads into buf from off and returns how many bytes it read (short
// only at end of file).
func (fs *FS) Read(ctx context.Context, ino meta.Ino, fh Handle, off int64, buf []byte) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	f, h, err := fs.fileOf(ctx, ino, fh)
	if err != nil {
		return 0, err
	}
	if f.dir {
		fs.unlockFile(f)
		return 0, syscall.EISDIR
	}
	if uint64(off) >= f.size || len(buf) == 0 {
		fs.unlockFile(f)
		return 0, nil
	}
	n := int(min(uint64(len(buf)), f.size-uint64(off)))
	buf = buf[:n]
	type fetch struct {
		c    meta.Chunk
		coff int
		dst  []byte
	}
	var fetches []fetch
	needMeta := false
	for pos := uint64(off); pos < uint64(off)+uint64(n); pos = (pos/chunkSize + 1) * chunkSize {
		if f.dirty[pos/chunkSize] == nil && pos/chunkSize*chunkSize < f.metaSize {
			needMeta = true
			break
		}
	}
	if needMeta {
		if err := fs.loadChunksLocked(ctx, f); err != nil {
			fs.unlockFile(f)
			return 0, err
		}
	}
	for pos := uint64(off); pos < uint64(off)+uint64(n); {
		idx, coff := pos/chunkSize, int(pos%chunkSize)
		l := min(chunkSize-coff, int(uint64(off)+uint64(n)-pos))
		dst := buf[pos-uint64(off) : pos-uint64(off)+uint64(l)]
		if dc := f.dirty[idx]; dc != nil {
			copyZero(dst, dc.buf, coff)
		} else if c, ok := f.chunks[idx]; ok && f.chunksLoaded {
			if c.BlockID == 0 {
				copyZero(dst, c.Inline[:min(len(c.Inline), int(c.Len))], coff)
			} else {
				fetches = append(fetches, fetch{c, coff, dst})
			}
		} else {
			clear(dst)
		}
		pos += uint64(l)
	}
	if h != nil {
		fs.readaheadLocked(f, h, off, n)
	}
	fs.unlockFile(f)
	// Blocks named by meta stay until the GC's grace period is over, so
	// they can be read without the lock.
	for _, fe := range fetches {
		data, err := fs.chunkData(ctx, ino, fe.c)
		if err != nil {
			return 0, err
		}
		copyZero(fe.dst, data, fe.coff)
	}
	return n, nil
}

// Readahead window bounds, in chunks: a sequential reader starts with
// raMin chunks loading ahead of it, and the window doubles each time it
// reaches a new chunk, up to raMax.
const (
	raMin = 2
	raMax = 8
)

// readaheadLocked prefetches the chunks after a sequential read of n bytes
// at off. The kernel's own readahead sends requests a little out of order
// (several in flight), so a read within a chunk of the last one still
// counts as sequential.
func (fs *FS) readaheadLocked(f *file, h *handle, off int64, n int) {
	seq := off == 0 || (off >= h.nextOff-chunkSize && off <= h.nextOff+chunkSize)
	end := off + int64(n)
	h.nextOff = max(h.nextOff, end)
	if !seq {
		h.nextOff = end
		h.raWindow, h.prefetched = 0, 0
		return
	}
	if !f.chunksLoaded {
		return
	}
	last := uint64(end-1) / chunkSize
	if h.raWindow == 0 {
		h.raWindow, h.raChunk = raMin, last
	} else if last > h.raChunk {
		h.raWindow, h.raChunk = min(2*h.raWindow, raMax), last
	}
	for i := max(last+1, h.prefetched); i <= last+uint64(h.raWindow); i++ {
		if i*chunkSize >= f.size {
			break
		}
		if c, ok := f.chunks[i]; ok && c.BlockID != 0 && f.dirty[i] == nil {
			if !fs.b.Prefetch(c.BlockID) {
				break // every worker is busy: ask again on the next read
			}
		}
		h.prefetched = i + 1
	}
}

// copyZero fills dst from src[off:] and zeros the rest.
func copyZero(dst, src []byte, off int) {
	k := 0
	if off < len(src) {
		k = copy(dst, src[off:])
	}
	clear(dst[k:])
}

// Write writes data at off.
func (fs *FS) Write(ctx context.Context, ino meta.Ino, fh Handle, off int64, data []byte) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(data) == 0 {
		return 0, nil
	}
	if uint64(off)+uint64(len(data)) > math.MaxInt64 {
		return 0, syscall.EFBIG
	}
	if err := fs.throttle(); err != nil {
		return 0, err
	}
	if err := fs.admitSpace(uint64(len(data))); err != nil {
		return 0, err
	}
	f, _, err := fs.fileOf(ctx, ino, fh)
	if err != nil {
		return 0, err
	}
	defer fs.unlockFile(f)
	if f.dead {
		return 0, syscall.ESTALE
	}
	if !f.regular {
		if f.dir {
			return 0, syscall.EISDIR
		}
		return 0, syscall.EINVAL
	}
	pos := uint64(off)
	written := 0
	for written < len(data) {
		idx, coff := pos/chunkSize, int(pos%chunkSize)
		l := min(chunkSize-coff, len(data)-written)
		dc, err := fs.dirtyChunkLocked(ctx, f, idx, coff, coff+l)
		if err != nil {
			if written > 0 {
				break
			}
			return 0, err
		}
		fs.writeAt(f, dc, coff, data[written:written+l])
		written += l
		pos += uint64(l)
		if coff+l == chunkSize && len(dc.buf) == chunkSize {
			// A full chunk: stream it out now rather than at the commit.
			fs.startUploadLocked(f, dc)
		}
	}
	if pos > f.size {
		f.size = pos
	}
	now := time.Now()
	f.mtime, f.ctime, f.timesDirty = now, now, true
	return written, nil
}

// startUploadLocked uploads dc in the background; its buffer is frozen
// from now on.
func (fs *FS) startUploadLocked(f *file, dc *dchunk) {
	dc.uploading = true
	dc.done = make(chan struct{})
	fs.bgWork.Add(1)
	go fs.upload(f, dc)
}

// upload stores dc as a block (or a hole) and records it in meta, unless
// dc was replaced in the meantime; then the block is deleted, as nothing
// ever referenced it.
func (fs *FS) upload(f *file, dc *dchunk) {
	defer fs.bgWork.Done()
	defer close(dc.done)
	ctx := fs.bg
	data := dc.buf
	hole := allZero(data)
	var id uint64
	var err error
	if !hole {
		fs.uploadSem <- struct{}{}
		id, err = fs.m.NewBlockID(ctx)
		if err == nil {
			err = fs.b.Put(ctx, id, data)
			if err != nil {
				err = fmt.Errorf("store block %d of inode %d: %v: %w", id, f.ino, err, syscall.EIO)
				id = 0
			}
		} else {
			err = fmt.Errorf("new block id: %w", err)
		}
		<-fs.uploadSem
	}
	f.mu.Lock()
	if f.dead || f.dirty[dc.idx] != dc {
		f.mu.Unlock()
		fs.mem.release(cap(data))
		fs.deleteUnreferenced(id)
		return
	}
	if err == nil {
		end := dc.idx*chunkSize + uint64(len(data))
		u := meta.FileUpdate{Size: max(f.metaSize, end)}
		c := meta.Chunk{Index: dc.idx, Len: uint32(len(data)), BlockID: id, Used: usedBytes(data)}
		if hole {
			u.Holes = []uint64{dc.idx}
		} else {
			u.Chunks = []meta.Chunk{c}
		}
		if _, err = fs.m.UpdateFile(ctx, f.ino, u); err == nil {
			delete(f.dirty, dc.idx)
			if hole {
				f.cacheDel(dc.idx)
			} else {
				f.cacheSet(c)
			}
			f.metaSize = u.Size
			fs.maybeDetachLocked(f)
			f.mu.Unlock()
			fs.mem.release(cap(data))
			return
		}
		err = fmt.Errorf("record chunk %d of inode %d: %w", dc.idx, f.ino, err)
		fs.deleteUnreferenced(id)
	}
	dc.uploading = false // the next flush retries
	f.setErr(err)
	f.mu.Unlock()
}

// deleteUnreferenced deletes a block that no chunk ever referenced.
func (fs *FS) deleteUnreferenced(id uint64) {
	if id == 0 {
		return
	}
	fs.bgWork.Add(1)
	go func() {
		defer fs.bgWork.Done()
		_ = fs.b.Delete(fs.bg, id)
	}()
}

// flushStartLocked starts the uploads a flush of f needs and returns what
// to wait for before the metadata is written.
func (fs *FS) flushStartLocked(ctx context.Context, f *file) []chan struct{} {
	if f.dead || !f.loaded {
		return nil
	}
	if f.inlineMaybe && f.size > uint64(fs.cfg.InlineMax) {
		// Chunk 0 may be inline but the file is no longer small.
		if f.dirty[0] == nil {
			if c, ok, err := fs.chunkLocked(ctx, f, 0); err == nil && ok && c.BlockID == 0 {
				if _, err := fs.dirtyChunkLocked(ctx, f, 0, 0, 0); err != nil {
					f.setErr(err)
				}
			}
		}
		f.inlineMaybe = false
	}
	var waits []chan struct{}
	for idx, dc := range f.dirty {
		if !dc.uploading && !fs.inlineChunk(f, idx) {
			fs.startUploadLocked(f, dc)
		}
		if dc.uploading {
			waits = append(waits, dc.done)
		}
	}
	return waits
}

// inlineChunk says whether chunk idx of f is kept in meta.
func (fs *FS) inlineChunk(f *file, idx uint64) bool {
	return idx == 0 && f.size <= uint64(fs.cfg.InlineMax)
}

// flushMetaLocked records f's inline data, size and times in meta; the
// uploads have recorded their chunks already.
func (fs *FS) flushMetaLocked(ctx context.Context, f *file) error {
	if f.dead || !f.loaded {
		return nil
	}
	var u meta.FileUpdate
	var inl *dchunk
	if dc := f.dirty[0]; dc != nil && !dc.uploading && fs.inlineChunk(f, 0) {
		inl = dc
		if allZero(dc.buf) {
			u.Holes = []uint64{0}
		} else {
			u.Chunks = []meta.Chunk{{Index: 0, Len: uint32(len(dc.buf)), Inline: dc.buf[:len(dc.buf):len(dc.buf)], Used: usedBytes(dc.buf)}}
		}
	}
	if inl == nil && f.size == f.metaSize && !f.timesDirty {
		return f.takeErr()
	}
	u.Size = f.size
	if f.timesDirty {
		u.Mtime, u.Ctime = f.mtime, f.ctime
	}
	if _, err := fs.m.UpdateFile(ctx, f.ino, u); err != nil {
		return errors.Join(fmt.Errorf("update inode %d: %w", f.ino, err), f.takeErr())
	}
	if inl != nil {
		delete(f.dirty, 0)
		fs.mem.release(cap(inl.buf))
		if len(u.Chunks) > 0 {
			f.cacheSet(u.Chunks[0])
			f.inlineMaybe = true
		} else {
			f.cacheDel(0)
		}
	}
	f.metaSize = f.size
	f.timesDirty = false
	return f.takeErr()
}

// flushFile makes f's data and attributes reach meta (not yet committed).
func (fs *FS) flushFile(ctx context.Context, f *file) error {
	f.mu.Lock()
	waits := fs.flushStartLocked(ctx, f)
	f.mu.Unlock()
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	err := fs.flushMetaLocked(ctx, f)
	fs.maybeDetachLocked(f)
	return err
}

// flushAll flushes every file with dirty data, uploading in parallel.
func (fs *FS) flushAll(ctx context.Context) error {
	fs.mu.Lock()
	files := make([]*file, 0, len(fs.files))
	for _, f := range fs.files {
		files = append(files, f)
	}
	fs.mu.Unlock()
	var waits []chan struct{}
	for _, f := range files {
		f.mu.Lock()
		waits = append(waits, fs.flushStartLocked(ctx, f)...)
		f.mu.Unlock()
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var errs []error
	for _, f := range files {
		f.mu.Lock()
		if err := fs.flushMetaLocked(ctx, f); err != nil {
			errs = append(errs, err)
		}
		fs.maybeDetachLocked(f)
		f.mu.Unlock()
	}
	return errors.Join(errs...)
}

// storeChunkLocked writes dc synchronously as a block, inline data or a
// hole, for a file of size size, and returns the update entry.
func (fs *FS) storeChunkLocked(ctx context.Context, f *file, dc *dchunk, size uint64, u *meta.FileUpdate) error {
	switch {
	case allZero(dc.buf):
		u.Holes = append(u.Holes, dc.idx)
	case dc.idx == 0 && size <= uint64(fs.cfg.InlineMax):
		u.Chunks = append(u.Chunks, meta.Chunk{Index: 0, Len: uint32(len(dc.buf)), Inline: dc.buf[:len(dc.buf):len(dc.buf)], Used: usedBytes(dc.buf)})
	default:
		id, err := fs.m.NewBlockID(ctx)
		if err != nil {
			return fmt.Errorf("new block id: %w", err)
		}
		if err := fs.b.Put(ctx, id, dc.buf); err != nil {
			return fmt.Errorf("store block %d of inode %d: %v: %w", id, f.ino, err, syscall.EIO)
		}
		u.Chunks = append(u.Chunks, meta.Chunk{Index: dc.idx, Len: uint32(len(dc.buf)), BlockID: id, Used: usedBytes(dc.buf)})
	}
	return nil
}

// truncateLocked cuts or extends f's data to n bytes. Shrinking updates
// meta's chunks at once (so that meta never holds data past the size); the
// caller records the size itself with meta.SetAttr.
func (fs *FS) truncateLocked(ctx context.Context, f *file, n uint64) error {
	if n >= f.size {
		f.size = n
		return nil
	}
	keep := (n + chunkSize - 1) / chunkSize
	for idx, dc := range f.dirty {
		if idx >= keep {
			delete(f.dirty, idx)
			if !dc.uploading {
				fs.mem.release(cap(dc.buf))
			}
		}
	}
	var rewrite *dchunk
	if tail := int(n % chunkSize); tail != 0 {
		last := n / chunkSize
		c, inMeta, err := fs.chunkLocked(ctx, f, last)
		if err != nil {
			return err
		}
		long := inMeta && int(c.Len) > tail
		dc := f.dirty[last]
		if dc != nil || long {
			if dc, err = fs.dirtyChunkLocked(ctx, f, last, 0, 0); err != nil {
				return err
			}
			dc.trim(tail)
		}
		if long {
			rewrite = dc
		}
	}
	if keep*chunkSize < f.metaSize {
		if _, err := fs.m.TruncateChunks(ctx, f.ino, keep); err != nil {
			return fmt.Errorf("truncate inode %d: %w", f.ino, err)
		}
		f.cacheTruncate(keep)
	}
	if rewrite != nil {
		u := meta.FileUpdate{Size: n}
		if err := fs.storeChunkLocked(ctx, f, rewrite, n, &u); err != nil {
			return err
		}
		if _, err := fs.m.UpdateFile(ctx, f.ino, u); err != nil {
			for _, c := range u.Chunks {
				fs.deleteUnreferenced(c.BlockID)
			}
			return fmt.Errorf("truncate inode %d: %w", f.ino, err)
		}
		delete(f.dirty, rewrite.idx)
		fs.mem.release(cap(rewrite.buf))
		for _, c := range u.Chunks {
			f.cacheSet(c)
			if c.BlockID == 0 {
				f.inlineMaybe = true
			}
		}
		for _, h := range u.Holes {
			f.cacheDel(h)
		}
	}
	f.size = n
	f.metaSize = min(f.metaSize, n)
	return nil
}

// Fallocate flag bits (linux/falloc.h).
const (
	fallocKeepSize  = 0x1
	fallocPunchHole = 0x2
)

// Fallocate allocates (mode 0, FALLOC_FL_KEEP_SIZE) or punches holes
// (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE); other modes give EOPNOTSUPP.
func (fs *FS) Fallocate(ctx context.Context, ino meta.Ino, fh Handle, off, length int64, mode uint32) error {
	if mode != 0 && mode != fallocKeepSize && mode != fallocPunchHole|fallocKeepSize {
		return syscall.EOPNOTSUPP
	}
	if off < 0 || length <= 0 {
		return syscall.EINVAL
	}
	if uint64(off)+uint64(length) > math.MaxInt64 {
		return syscall.EFBIG
	}
	f, _, err := fs.fileOf(ctx, ino, fh)
	if err != nil {
		return err
	}
	defer fs.unlockFile(f)
	if !f.regular {
		if f.dir {
			return syscall.EISDIR
		}
		return syscall.ENODEV
	}
	end := uint64(off) + uint64(length)
	switch mode {
	case 0:
		if end > f.size {
			// Capacity is elastic: there is nothing to reserve, so
			// allocation only extends the size (sparsely).
			f.size = end
			if _, err := fs.m.SetAttr(ctx, ino, meta.SetAttr{Size: &end}); err != nil {
				return err
			}
			f.metaSize = end
		}
		return nil
	case fallocKeepSize:
		return nil
	}
	// Punch a hole in [off, end), within the file.
	end = min(end, f.size)
	if uint64(off) >= end {
		return nil
	}
	var holes []uint64
	for idx := uint64(off) / chunkSize; idx*chunkSize < end; idx++ {
		cs := idx * chunkSize
		ce := min(cs+chunkSize, f.size)
		if cs >= uint64(off) && ce <= end {
			if dc := f.dirty[idx]; dc != nil {
				delete(f.dirty, idx)
				if !dc.uploading {
					fs.mem.release(cap(dc.buf))
				}
			}
			if _, ok, err := fs.chunkLocked(ctx, f, idx); err != nil {
				return err
			} else if ok {
				holes = append(holes, idx)
			}
			continue
		}
		from := int(max(uint64(off), cs) - cs)
		to := int(min(end, cs+chunkSize) - cs)
		_, inMeta, err := fs.chunkLocked(ctx, f, idx)
		if err != nil {
			return err
		}
		if f.dirty[idx] == nil && !inMeta {
			continue
		}
		dc, err := fs.dirtyChunkLocked(ctx, f, idx, 0, 0) // an empty write range always loads
		if err != nil {
			return err
		}
		if from < len(dc.buf) {
			clear(dc.buf[from:min(to, len(dc.buf))])
		}
	}
	if len(holes) > 0 {
		if _, err := fs.m.UpdateFile(ctx, ino, meta.FileUpdate{Holes: holes, Size: f.metaSize}); err != nil {
			return fmt.Errorf("punch hole in inode %d: %w", ino, err)
		}
		for _, h := range holes {
			f.cacheDel(h)
		}
	}
	now := time.Now()
	f.mtime, f.ctime, f.timesDirty = now, now, true
	return nil
}

// Lseek implements SEEK_DATA and SEEK_HOLE.
func (fs *FS) Lseek(ctx context.Context, ino meta.Ino, fh Handle, off int64, whence int) (int64, error) {
	const seekData, seekHole = 3, 4
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off < 0 {
		return 0, syscall.ENXIO
	}
	f, _, err := fs.fileOf(ctx, ino, fh)
	if err != nil {
		return 0, err
	}
	defer fs.unlockFile(f)
	size := f.size
	if uint64(off) >= size {
		return 0, syscall.ENXIO
	}
	if err := fs.loadChunksLocked(ctx, f); err != nil {
		return 0, err
	}
	has := func(idx uint64) bool {
		if f.dirty[idx] != nil {
			return true
		}
		_, ok := f.chunks[idx]
		return ok
	}
	last := (size - 1) / chunkSize
	for idx := uint64(off) / chunkSize; idx <= last; idx++ {
		if has(idx) == (whence == seekData) {
			return int64(max(uint64(off), idx*chunkSize)), nil
		}
	}
	if whence == seekData {
		return 0, syscall.ENXIO
	}
	return int64(size), nil
}
