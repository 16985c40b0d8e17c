package vfs

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

const chunkSize = meta.ChunkSize

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
const pageSize = meta.PageSize

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
