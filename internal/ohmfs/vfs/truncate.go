package vfs

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

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
	fallocZeroRange = 0x10
)

// Fallocate allocates (mode 0, FALLOC_FL_KEEP_SIZE), punches holes
// (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE) or zeroes ranges
// (FALLOC_FL_ZERO_RANGE, with or without KEEP_SIZE: a loop device's write
// zeroes); other modes give EOPNOTSUPP.
func (fs *FS) Fallocate(ctx context.Context, ino meta.Ino, fh Handle, off, length int64, mode uint32) error {
	switch mode {
	case 0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize:
	default:
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
	if f.image {
		return fs.fallocateImageLocked(f, uint64(off), end, mode)
	}
	if mode&fallocZeroRange != 0 {
		// A range of zeros is a hole here (space is elastic), and without
		// KEEP_SIZE the file grows to cover it.
		if err := fs.punchLocked(ctx, f, uint64(off), end); err != nil {
			return err
		}
		if mode&fallocKeepSize != 0 {
			return nil
		}
		mode = 0
	}
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
	return fs.punchLocked(ctx, f, uint64(off), end)
}

// punchLocked punches a hole in [off, end) of f, within the file.
func (fs *FS) punchLocked(ctx context.Context, f *file, off, end uint64) error {
	ino := f.ino
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
	if f.image {
		// An image reports no holes (allowed: a hole is optional), so
		// that copies of it never rely on a map that folds change.
		if whence == seekData {
			return off, nil
		}
		return int64(size), nil
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

// fallocateImageLocked is Fallocate for an image.
func (fs *FS) fallocateImageLocked(f *file, off, end uint64, mode uint32) error {
	if mode&(fallocPunchHole|fallocZeroRange) != 0 {
		if err := fs.punchImageLocked(f, off, end); err != nil {
			return err
		}
	}
	if mode&fallocKeepSize == 0 && end > f.size {
		return fs.resizeImageLocked(f, end)
	}
	return nil
}
