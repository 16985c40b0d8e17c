package vfs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

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

	// image says the file is a device image: its data is spans (newer
	// than meta, in the write-ahead log) over meta's extents, never dirty
	// chunks. metaSize is the size meta has from the last fold.
	image bool
	spans spans

	// durable are the image's byte ranges whose writes are durable when
	// acknowledged (XattrDurableRanges), once durableLoaded.
	durable       []byteRange
	durableLoaded bool

	// raLast is where the latest reads of an image ended, raNext how far
	// its packs are being read ahead (imageread.go).
	raLast, raNext uint64
}

func (f *file) init(a meta.Attr, inlineMax int) {
	f.loaded = true
	f.regular = a.Mode&syscall.S_IFMT == syscall.S_IFREG
	f.dir = a.Mode&syscall.S_IFMT == syscall.S_IFDIR
	f.size, f.metaSize = a.Size, a.Size
	f.inlineMaybe = a.Size > 0 && a.Size <= uint64(inlineMax)
	f.dirty = make(map[uint64]*dchunk)
	if a.Layout == meta.LayoutImage {
		f.image, f.spans, f.inlineMaybe = true, newSpans(), false
	}
}

func (f *file) idle() bool {
	return f.opens == 0 && len(f.dirty) == 0 && f.size == f.metaSize && !f.timesDirty && f.spans.len() == 0
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
	if f.image {
		f.spans = newSpans()
	}
	f.size, f.metaSize, f.timesDirty = 0, 0, false
	fs.detachLocked(f)
}
