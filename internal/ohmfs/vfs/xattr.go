package vfs

import (
	"context"

	"ohm/internal/ohmfs/meta"
)

// GetXattr returns an xattr's value.
func (fs *FS) GetXattr(ctx context.Context, ino meta.Ino, name string) ([]byte, error) {
	return fs.m.GetXattr(ctx, ino, name)
}

// SetXattr sets an xattr (flags XATTR_CREATE, XATTR_REPLACE).
func (fs *FS) SetXattr(ctx context.Context, ino meta.Ino, name string, value []byte, flags uint32) error {
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
	return fs.m.RemoveXattr(ctx, ino, name)
}
