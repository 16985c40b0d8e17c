package vfs

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

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
		if err := fs.b.Delete(fs.bg, id); err != nil && fs.bg.Err() == nil {
			// Only space is lost: an offline gc finds the block again.
			fs.report("delete an unreferenced block", err)
		}
	}()
}

// flushStartLocked starts the uploads a flush of f needs and returns what
// to wait for before the metadata is written.
func (fs *FS) flushStartLocked(ctx context.Context, f *file) []chan struct{} {
	if f.dead || !f.loaded || f.image {
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
	if f.dead || !f.loaded || f.image {
		return nil // an image's size and times go with its folds
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

// Fsync returns when ino's data and metadata are durable.
func (fs *FS) Fsync(ctx context.Context, ino meta.Ino, fh Handle, datasync bool) error {
	fs.mu.Lock()
	f := fs.files[ino]
	fs.mu.Unlock()
	var ferr error
	if f != nil {
		f.mu.Lock()
		image := f.image && !f.dead
		f.mu.Unlock()
		if image {
			return fs.fsyncImage(ctx, f)
		}
		ferr = fs.flushFile(ctx, f)
	}
	if err := fs.commit(ctx); err != nil {
		return err
	}
	return ferr
}

// FsyncDir makes the directory's entries durable.
func (fs *FS) FsyncDir(ctx context.Context, ino meta.Ino) error { return fs.Sync(ctx) }
