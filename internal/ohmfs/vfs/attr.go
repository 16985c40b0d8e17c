package vfs

import (
	"context"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

// GetAttr returns ino's attributes, including writes not yet flushed.
func (fs *FS) GetAttr(ctx context.Context, ino meta.Ino) (meta.Attr, error) {
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return a, err
	}
	fs.overlay(ctx, &a, true)
	return a, nil
}

// overlay puts the in-memory size, times and use of a file with unflushed
// writes over its stored attributes. An upload moves a chunk from memory to
// meta under the file's lock, so attributes read from meta before taking
// that lock may miss the chunk on both sides: overlay reads them again
// under the lock (reread), except where the caller is inside a meta call
// (ReadDir's callback), which cannot call meta again.
func (fs *FS) overlay(ctx context.Context, a *meta.Attr, reread bool) {
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return
	}
	fs.mu.Lock()
	f := fs.files[a.Ino]
	fs.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if reread {
		if fresh, err := fs.m.GetAttr(ctx, a.Ino); err == nil {
			*a = fresh
		}
	}
	f.overlayLocked(a)
}

// SetAttr changes attributes; a Size change truncates or extends the data.
func (fs *FS) SetAttr(ctx context.Context, ino meta.Ino, set meta.SetAttr) (meta.Attr, error) {
	if set.Size == nil {
		a, err := fs.m.SetAttr(ctx, ino, set)
		if err != nil {
			return a, err
		}
		if set.Mtime != nil {
			fs.mu.Lock()
			f := fs.files[ino]
			fs.mu.Unlock()
			if f != nil {
				f.mu.Lock()
				f.timesDirty = false
				f.mu.Unlock()
			}
		}
		fs.overlay(ctx, &a, true)
		return a, nil
	}
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return meta.Attr{}, err
	}
	defer fs.unlockFile(f)
	if !f.regular {
		if f.dir {
			return meta.Attr{}, syscall.EISDIR
		}
		return meta.Attr{}, syscall.EINVAL
	}
	size := *set.Size
	changed := size != f.size
	if f.image {
		return fs.setImageAttrLocked(ctx, f, set, changed)
	}
	if err := fs.truncateLocked(ctx, f, size); err != nil {
		return meta.Attr{}, err
	}
	if changed && set.Mtime == nil {
		now := time.Now()
		set.Mtime = &now
	}
	a, err := fs.m.SetAttr(ctx, ino, set)
	if err != nil {
		return a, err
	}
	f.size, f.metaSize = size, size
	if set.Mtime != nil {
		f.timesDirty = false
	}
	f.overlayLocked(&a)
	return a, nil
}

// setImageAttrLocked is SetAttr with a size for an image: the size goes
// through the write-ahead log (it is ordered with the image's writes), the
// other attributes to meta.
func (fs *FS) setImageAttrLocked(ctx context.Context, f *file, set meta.SetAttr, changed bool) (meta.Attr, error) {
	if err := fs.resizeImageLocked(f, *set.Size); err != nil {
		return meta.Attr{}, err
	}
	set.Size = nil
	if changed && set.Mtime == nil {
		now := time.Now()
		set.Mtime = &now
	}
	a, err := fs.m.SetAttr(ctx, f.ino, set)
	if err != nil {
		return a, err
	}
	if set.Mtime != nil {
		f.mtime, f.ctime, f.timesDirty = a.Mtime, a.Ctime, false
	}
	f.overlayLocked(&a)
	return a, nil
}
