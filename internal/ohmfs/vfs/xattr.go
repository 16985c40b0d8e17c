package vfs

import (
	"context"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

// GetXattr returns an xattr's value.
func (fs *FS) GetXattr(ctx context.Context, ino meta.Ino, name string) ([]byte, error) {
	if name == XattrLayout {
		return fs.getLayout(ctx, ino)
	}
	if name == XattrExclusive {
		return fs.exclusive(ctx, ino)
	}
	return fs.m.GetXattr(ctx, ino, name)
}

// SetXattr sets an xattr (flags XATTR_CREATE, XATTR_REPLACE).
func (fs *FS) SetXattr(ctx context.Context, ino meta.Ino, name string, value []byte, flags uint32) error {
	if name == XattrLayout {
		return fs.setLayout(ctx, ino, value, flags)
	}
	if name == XattrSnapshot {
		return fs.snapshot(ctx, ino, string(value))
	}
	if name == XattrClone {
		_, _, err := fs.CloneTo(ctx, ino, string(value))
		return err
	}
	if name == XattrDurableRanges {
		return fs.setDurableRanges(ctx, ino, value, flags)
	}
	if err := fs.admitSpace(uint64(len(name) + len(value))); err != nil {
		return err
	}
	return fs.m.SetXattr(ctx, ino, name, value, flags)
}

// ListXattr lists xattr names.
func (fs *FS) ListXattr(ctx context.Context, ino meta.Ino) ([]string, error) {
	return fs.m.ListXattr(ctx, ino)
}

// RemoveXattr removes an xattr.
func (fs *FS) RemoveXattr(ctx context.Context, ino meta.Ino, name string) error {
	if name == XattrLayout {
		if _, err := fs.getLayout(ctx, ino); err != nil {
			return err
		}
		return syscall.EPERM // an image stays an image
	}
	if name == XattrDurableRanges {
		return fs.removeDurableRanges(ctx, ino)
	}
	return fs.m.RemoveXattr(ctx, ino, name)
}
