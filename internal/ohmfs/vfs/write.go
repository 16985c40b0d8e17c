package vfs

import (
	"context"
	"math"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

// SetKernelTimes says whether the kernel keeps the mtime and ctime of
// regular files itself (FUSE's writeback cache): it stamps them at each
// write(2) and sends them in a SETATTR when it writes the inode back.
// Writes then leave the times alone. Stamping them here too would race
// with that SETATTR: the kernel's periodic writeback sends the SETATTR
// without waiting for the WRITEs it has queued, and a WRITE handled after
// it would leave this server's later time in place of the one the
// kernel showed, for good.
func (fs *FS) SetKernelTimes(on bool) { fs.kernelTimes.Store(on) }

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
	if err := fs.waitBacklog(); err != nil {
		return 0, err
	}
	if err := fs.admitSpace(uint64(len(data))); err != nil {
		return 0, err
	}
	f, _, err := fs.fileOf(ctx, ino, fh)
	if err != nil {
		return 0, err
	}
	locked := true
	defer func() {
		if locked {
			fs.unlockFile(f)
		}
	}()
	if f.dead {
		return 0, syscall.ESTALE
	}
	if !f.regular {
		if f.dir {
			return 0, syscall.EISDIR
		}
		return 0, syscall.EINVAL
	}
	fs.io.written.Add(uint64(len(data)))
	if f.image {
		n, err := fs.writeImageLocked(f, uint64(off), data)
		if err != nil {
			return n, err
		}
		durable, err := fs.overlapsDurable(ctx, f, uint64(off), uint64(off)+uint64(n))
		if err != nil || !durable {
			return n, err
		}
		// A commit block (XattrDurableRanges): durable before it is
		// acknowledged, without holding the file while the log syncs.
		locked = false
		fs.unlockFile(f)
		if err := fs.fsyncImage(ctx, f); err != nil {
			return 0, err
		}
		return n, nil
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
	if !fs.kernelTimes.Load() {
		now := time.Now()
		f.mtime, f.ctime, f.timesDirty = now, now, true
	}
	return written, nil
}
