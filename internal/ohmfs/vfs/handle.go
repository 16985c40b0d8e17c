package vfs

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

// handle is an open file.
type handle struct {
	f     *file // nil for directories
	ino   meta.Ino
	dir   bool
	write bool
	// Sequential read detection, guarded by f.mu.
	nextOff    int64  // end of the furthest read so far
	prefetched uint64 // chunks below this index were prefetched already
	raWindow   int    // chunks to keep loading ahead; 0 until a sequential read
	raChunk    uint64 // the chunk the window last grew at
}

// Open opens a file (flags as in open(2); O_TRUNC truncates).
func (fs *FS) Open(ctx context.Context, ino meta.Ino, flags uint32) (Handle, error) {
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return 0, err
	}
	defer fs.unlockFile(f)
	if f.dir {
		return 0, syscall.EISDIR
	}
	if flags&syscall.O_TRUNC != 0 && f.image && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		var zero uint64
		if _, err := fs.setImageAttrLocked(ctx, f, meta.SetAttr{Size: &zero}, f.size != 0); err != nil {
			return 0, err
		}
	} else if flags&syscall.O_TRUNC != 0 && f.regular && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := fs.truncateLocked(ctx, f, 0); err != nil {
			return 0, err
		}
		now := time.Now()
		var zero uint64
		if _, err := fs.m.SetAttr(ctx, ino, meta.SetAttr{Size: &zero, Mtime: &now, Ctime: &now}); err != nil {
			return 0, err
		}
		f.size, f.metaSize, f.timesDirty = 0, 0, false
	}
	return fs.newHandle(f, ino, flags), nil
}

// newHandle registers an open handle of f, which the caller has locked.
func (fs *FS) newHandle(f *file, ino meta.Ino, flags uint32) Handle {
	f.opens++
	h := &handle{f: f, ino: ino, write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	fs.mu.Lock()
	fs.nextFH++
	fh := fs.nextFH
	fs.handles[fh] = h
	fs.mu.Unlock()
	return fh
}

func (fs *FS) handle(fh Handle) *handle {
	fs.mu.Lock()
	h := fs.handles[fh]
	fs.mu.Unlock()
	return h
}

// fileOf returns the locked file of ino, through its handle when it has one.
func (fs *FS) fileOf(ctx context.Context, ino meta.Ino, fh Handle) (*file, *handle, error) {
	if h := fs.handle(fh); h != nil && h.f != nil && h.ino == ino {
		h.f.mu.Lock()
		if !h.f.detached {
			return h.f, h, nil
		}
		h.f.mu.Unlock()
	}
	f, err := fs.lockFile(ctx, ino)
	return f, nil, err
}

// Flush is called on each close(2) of a file descriptor. Like ext4, it does
// not make the data durable.
func (fs *FS) Flush(ctx context.Context, ino meta.Ino, fh Handle) error { return nil }

// Release closes a handle; the last close of an unlinked file frees it.
func (fs *FS) Release(ctx context.Context, ino meta.Ino, fh Handle) error {
	fs.mu.Lock()
	h := fs.handles[fh]
	delete(fs.handles, fh)
	fs.mu.Unlock()
	if h == nil || h.f == nil {
		return nil
	}
	f := h.f
	f.mu.Lock()
	f.opens--
	purge := false
	if f.opens <= 0 {
		f.opens = 0
		if f.orphan {
			fs.killLocked(f)
			purge = true
		} else {
			fs.maybeDetachLocked(f)
		}
	}
	f.mu.Unlock()
	if purge {
		if err := fs.m.Purge(ctx, f.ino); err != nil {
			return fmt.Errorf("purge inode %d: %w", f.ino, err)
		}
	}
	return nil
}

// OpenDir opens a directory for reading.
func (fs *FS) OpenDir(ctx context.Context, ino meta.Ino) (Handle, error) {
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return 0, err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, syscall.ENOTDIR
	}
	fs.mu.Lock()
	fs.nextFH++
	fh := fs.nextFH
	fs.handles[fh] = &handle{ino: ino, dir: true}
	fs.mu.Unlock()
	return fh, nil
}

// ReadDir calls fn for entries after offset, "." and ".." first (cookies 1
// and 2), until fn returns false.
func (fs *FS) ReadDir(ctx context.Context, ino meta.Ino, fh Handle, offset uint64, plus bool, fn func(meta.DirEntry) bool) error {
	if offset < 2 {
		self, err := fs.m.GetAttr(ctx, ino)
		if err != nil {
			return err
		}
		if offset < 1 {
			e := meta.DirEntry{Name: ".", Ino: ino, Mode: self.Mode, Cookie: 1}
			if plus {
				a := self
				e.Attr = &a
			}
			if !fn(e) {
				return nil
			}
		}
		pino, err := fs.m.Parent(ctx, ino)
		if err != nil {
			return err
		}
		e := meta.DirEntry{Name: "..", Ino: pino, Mode: syscall.S_IFDIR | 0o755, Cookie: 2}
		pa, err := fs.m.GetAttr(ctx, pino)
		if err != nil {
			return err
		}
		e.Mode = pa.Mode
		if plus {
			e.Attr = &pa
		}
		if !fn(e) {
			return nil
		}
		offset = 2
	}
	return fs.m.ReadDir(ctx, ino, offset, plus, func(e meta.DirEntry) bool {
		if plus && e.Attr != nil {
			fs.overlay(ctx, e.Attr, false)
		}
		return fn(e)
	})
}

// ReleaseDir closes a directory handle.
func (fs *FS) ReleaseDir(ctx context.Context, ino meta.Ino, fh Handle) error {
	fs.mu.Lock()
	delete(fs.handles, fh)
	fs.mu.Unlock()
	return nil
}
