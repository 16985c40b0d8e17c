package vfs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

// XattrLayout is the extended attribute that makes a file a device image
// (docs/durability.md): set to LayoutImage on a regular file that holds no
// data yet (through the mount, as root: it is in the trusted namespace),
// it switches the file's data path to the write-ahead log and extents.
// Reading it gives LayoutImage for an image (ENODATA for other files). It
// cannot be removed: an image stays one.
const XattrLayout = "trusted.ohmfs.layout"

// LayoutImage is XattrLayout's value for a device image.
const LayoutImage = "image"

// foldBacklog is how many bytes of log records make the folder start a
// round without waiting for the commit interval, and maxBacklog how many
// make image writers fold themselves before they append more.
const (
	foldBacklog = 64 << 20
	maxBacklog  = 1 << 30
)

// log returns the write-ahead log, nil until the volume has an image.
func (fs *FS) log() *wal { return fs.walp.Load() }

// ensureWAL opens the write-ahead log if the FS has none yet (a volume
// whose first image is being made).
func (fs *FS) ensureWAL(ctx context.Context) error {
	fs.walMu.Lock()
	defer fs.walMu.Unlock()
	if fs.log() != nil {
		return nil
	}
	return fs.openWALLocked(ctx)
}

// openWALLocked opens the log, replays what it holds past meta's
// checkpoint into the images' spans, and records a new log in meta.
func (fs *FS) openWALLocked(ctx context.Context) error {
	id, cp, err := fs.m.WALState(ctx)
	if err != nil {
		return err
	}
	dir := fs.cfg.WALDir
	if dir == "" {
		dir = filepath.Join(filepath.Dir(fs.m.Path()), "wal")
	}
	r := replayer{fs: fs, files: map[meta.Ino]*file{}}
	w, fresh, err := openWAL(ctx, dir, id, cp, r.apply)
	r.done()
	if err != nil {
		return err
	}
	if fresh {
		if err := fs.m.SetWAL(ctx, w.id, w.end); err != nil {
			w.close()
			return err
		}
		if err := fs.m.Commit(ctx); err != nil {
			w.close()
			return fmt.Errorf("record write-ahead log: %w", err)
		}
	}
	if fresh {
		cp = w.end
	}
	fs.walCP.Store(cp)
	fs.walp.Store(w)
	return nil
}

// replayer applies replayed log records to the spans of the images they
// belong to; records of inodes that are gone or are not images (their
// layout change was never committed) are skipped.
type replayer struct {
	fs    *FS
	files map[meta.Ino]*file // nil: skip the inode's records
}

func (r *replayer) apply(rec walRecord) error {
	ino := meta.Ino(rec.ino)
	f, seen := r.files[ino]
	if !seen {
		var err error
		f, err = r.fs.lockFile(context.Background(), ino)
		switch {
		case errors.Is(err, syscall.ENOENT):
			f = nil
		case err != nil:
			return fmt.Errorf("replay: inode %d: %w", ino, err)
		case !f.image:
			r.fs.unlockFile(f)
			f = nil
		}
		r.files[ino] = f // kept locked until done
	}
	if f == nil {
		return nil
	}
	switch rec.kind {
	case recWrite:
		f.spans.set(span{start: rec.off, end: rec.off + rec.n, rec: rec.pos, data: rec.data})
		f.size = max(f.size, rec.off+rec.n)
	case recPunch:
		f.spans.set(span{start: rec.off, end: rec.off + rec.n, rec: rec.pos, hole: true})
	case recSize:
		f.setSizeLocked(rec.off, rec.pos)
	}
	return nil
}

func (r *replayer) done() {
	for _, f := range r.files {
		if f != nil {
			r.fs.unlockFile(f)
		}
	}
}

// setSizeLocked applies a size record at log position rec to f.
func (f *file) setSizeLocked(size, rec uint64) {
	if size < f.size {
		f.spans.set(span{start: size, end: f.size, rec: rec, hole: true})
	}
	f.size = size
}

// setLayout handles a write of XattrLayout.
func (fs *FS) setLayout(ctx context.Context, ino meta.Ino, value []byte, flags uint32) error {
	if string(value) != LayoutImage {
		return syscall.EINVAL
	}
	if flags&xattrReplace != 0 {
		return syscall.ENODATA
	}
	if err := fs.ensureWAL(ctx); err != nil {
		return err
	}
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return err
	}
	defer fs.unlockFile(f)
	if !f.regular {
		return syscall.EINVAL
	}
	if f.image {
		if flags&xattrCreate != 0 {
			return syscall.EEXIST
		}
		return nil
	}
	if len(f.dirty) > 0 {
		return syscall.EBUSY
	}
	a, err := fs.m.SetLayout(ctx, ino, meta.LayoutImage)
	if err != nil {
		return err
	}
	f.image = true
	f.spans = newSpans()
	f.chunks, f.chunksLoaded = nil, false
	f.metaSize = a.Size
	// The inode, its layout and the log's identity must be committed
	// before a flush of the image may rely on the log alone.
	fs.imageCommit.Store(fs.metaCommit.next())
	return nil
}

// Extended attribute flags of setxattr(2).
const (
	xattrCreate  = 1
	xattrReplace = 2
)

// Image reports whether the file open as fh is a device image. A FUSE
// mount opens images for direct I/O: the kernel filesystem on top has its
// own page cache, and the FUSE page cache's writeback path would cost a
// round trip for attributes or privileges on every write.
func (fs *FS) Image(fh Handle) bool {
	h := fs.handle(fh)
	if h == nil || h.f == nil {
		return false
	}
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return h.f.image
}

// getLayout answers a read of XattrLayout.
func (fs *FS) getLayout(ctx context.Context, ino meta.Ino) ([]byte, error) {
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return nil, err
	}
	if a.Layout == meta.LayoutImage {
		return []byte(LayoutImage), nil
	}
	return nil, syscall.ENODATA
}

// logFail turns a failure of the write-ahead log into what a caller gets.
func logFail(op string, ino meta.Ino, err error) error {
	return fmt.Errorf("%s inode %d: %v: %w", op, ino, err, syscall.EIO)
}

// writeImageLocked appends a write to the log and maps it in f's spans.
func (fs *FS) writeImageLocked(f *file, off uint64, data []byte) (int, error) {
	end := off + uint64(len(data))
	rec, pos, err := fs.log().append(recWrite, uint64(f.ino), off, uint64(len(data)), data)
	if err != nil {
		return 0, logFail("write", f.ino, err)
	}
	f.spans.set(span{start: off, end: end, rec: rec, data: pos})
	f.size = max(f.size, end)
	now := time.Now()
	f.mtime, f.ctime, f.timesDirty = now, now, true
	if fs.log().backlog(fs.walCP.Load()) > foldBacklog {
		fs.kickCommit()
	}
	return len(data), nil
}

// waitBacklog makes an image writer fold the log itself while the log
// holds more than maxBacklog bytes the store does not have yet: the
// writer, not the host's disk, waits when the store cannot keep up.
func (fs *FS) waitBacklog() error {
	for fs.log() != nil && fs.log().backlog(fs.walCP.Load()) > maxBacklog {
		if err := fs.folds.Wait(); err != nil {
			return fmt.Errorf("fold the write-ahead log: %v: %w", err, syscall.EIO)
		}
	}
	return nil
}

// punchImageLocked makes [off, end) of f a hole.
func (fs *FS) punchImageLocked(f *file, off, end uint64) error {
	end = min(end, f.size)
	if off >= end {
		return nil
	}
	rec, _, err := fs.log().append(recPunch, uint64(f.ino), off, end-off, nil)
	if err != nil {
		return logFail("punch a hole in", f.ino, err)
	}
	f.spans.set(span{start: off, end: end, rec: rec, hole: true})
	now := time.Now()
	f.mtime, f.ctime, f.timesDirty = now, now, true
	return nil
}

// resizeImageLocked sets f's size (cutting off what lies past it).
func (fs *FS) resizeImageLocked(f *file, size uint64) error {
	if size == f.size {
		return nil
	}
	rec, _, err := fs.log().append(recSize, uint64(f.ino), size, 0, nil)
	if err != nil {
		return logFail("resize", f.ino, err)
	}
	f.setSizeLocked(size, rec)
	return nil
}

// fsyncImage makes every change to f acknowledged so far durable: one
// fdatasync of the log (shared with concurrent flushes), plus, once after
// an image is made, a commit of its inode; with FsyncToStore, also a fold
// into the store and a commit.
func (fs *FS) fsyncImage(ctx context.Context, f *file) error {
	if err := fs.log().sync(); err != nil {
		return logFail("flush", f.ino, err)
	}
	if fs.metaCommit.finished() < fs.imageCommit.Load() {
		if err := fs.commit(ctx); err != nil {
			return err
		}
	}
	if fs.cfg.FsyncToStore {
		if err := fs.folds.Wait(); err != nil {
			return fmt.Errorf("flush inode %d to the store: %v: %w", f.ino, err, syscall.EIO)
		}
	}
	f.mu.Lock()
	err := f.takeErr()
	f.mu.Unlock()
	return err
}

// readImage reads [off, off+len(buf)) of image f, which the caller has
// locked and readImage unlocks: first what the spans hold (the log, or
// holes), then, without the lock, the rest from the extents and their
// packs. Packs that meta names stay in the store for the garbage
// collector's grace period, so they can be read without the lock.
func (fs *FS) readImage(ctx context.Context, f *file, off uint64, buf []byte) error {
	end := off + uint64(len(buf))
	var gaps [][2]uint64
	cur := off
	var err error
	f.spans.overlapping(off, end, func(s span) bool {
		a, b := max(s.start, off), min(s.end, end)
		if a > cur {
			gaps = append(gaps, [2]uint64{cur, a})
		}
		dst := buf[a-off : b-off]
		if s.hole {
			clear(dst)
		} else if err = fs.log().read(s.data+(a-s.start), dst); err != nil {
			return false
		}
		cur = b
		return true
	})
	if cur < end {
		gaps = append(gaps, [2]uint64{cur, end})
	}
	ino := f.ino
	raFrom, raTo := f.imageReadaheadLocked(off, end)
	fs.unlockFile(f)
	if err != nil {
		return logFail("read", ino, err)
	}
	if raTo > raFrom {
		fs.prefetchImage(ctx, ino, raFrom, raTo)
	}
	if len(gaps) == 0 {
		return nil
	}
	first, last := gaps[0][0]/pageSize, (gaps[len(gaps)-1][1]+pageSize-1)/pageSize
	exts, err := fs.m.Extents(ctx, ino, first, last)
	if err != nil {
		return err
	}
	for _, g := range gaps {
		clear(buf[g[0]-off : g[1]-off])
		for _, e := range exts {
			a, b := max(g[0], e.Page*pageSize), min(g[1], e.End()*pageSize)
			if a >= b {
				continue
			}
			// ReadAt copies rather than sharing the cached pack, so that
			// its buffer can be reused for a later load.
			at := uint64(e.BlockPage)*pageSize + (a - e.Page*pageSize)
			if _, err := fs.b.ReadAt(ctx, e.Block, buf[a-off:b-off], int(at)); err != nil {
				return fmt.Errorf("read pack %d of inode %d: %v: %w", e.Block, ino, err, syscall.EIO)
			}
		}
	}
	return nil
}
