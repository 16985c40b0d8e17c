package vfs

import (
	"context"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

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
	if f.image {
		if err := fs.readImage(ctx, f, uint64(off), buf); err != nil {
			return 0, err
		}
		return n, nil
	}
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
