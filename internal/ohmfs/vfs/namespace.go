package vfs

import (
	"context"
	"fmt"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

// Lookup returns the attributes of name in parent.
func (fs *FS) Lookup(ctx context.Context, parent meta.Ino, name string) (meta.Attr, error) {
	a, err := fs.m.Lookup(ctx, parent, name)
	if err != nil {
		return a, err
	}
	fs.overlay(ctx, &a, true)
	return a, nil
}

// parentGid applies the setgid-directory rule: it returns the group a new
// inode in parent gets, and whether parent is setgid.
func (fs *FS) parentGid(ctx context.Context, c Caller, parent meta.Ino) (uint32, bool, error) {
	pa, err := fs.m.GetAttr(ctx, parent)
	if err != nil {
		return 0, false, err
	}
	if pa.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, false, syscall.ENOTDIR
	}
	if pa.Mode&syscall.S_ISGID != 0 {
		return pa.Gid, true, nil
	}
	return c.Gid, false, nil
}

// Mknod creates a regular file, fifo, socket or device node.
func (fs *FS) Mknod(ctx context.Context, c Caller, parent meta.Ino, name string, mode, rdev uint32) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	if mode&syscall.S_IFMT == 0 {
		mode |= syscall.S_IFREG
	}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		return fs.Mkdir(ctx, c, parent, name, mode)
	}
	gid, sgid, err := fs.parentGid(ctx, c, parent)
	if err != nil {
		return meta.Attr{}, err
	}
	if sgid && gid != c.Gid && c.Uid != 0 {
		// As inode_init_owner: a non-member may not get a setgid file.
		mode &^= syscall.S_ISGID
	}
	return fs.m.Mknod(ctx, parent, name, mode, rdev, c.Uid, gid)
}

// Mkdir creates a directory. A setgid parent passes on its group and the
// setgid bit, as on ext4.
func (fs *FS) Mkdir(ctx context.Context, c Caller, parent meta.Ino, name string, mode uint32) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	gid, sgid, err := fs.parentGid(ctx, c, parent)
	if err != nil {
		return meta.Attr{}, err
	}
	mode = mode&^syscall.S_IFMT | syscall.S_IFDIR
	if sgid {
		mode |= syscall.S_ISGID
	}
	return fs.m.Mknod(ctx, parent, name, mode, 0, c.Uid, gid)
}

// Create creates and opens a regular file (open flags as in open(2)).
func (fs *FS) Create(ctx context.Context, c Caller, parent meta.Ino, name string, mode uint32, flags uint32) (meta.Attr, Handle, error) {
	mode = mode&^syscall.S_IFMT | syscall.S_IFREG
	a, err := fs.Mknod(ctx, c, parent, name, mode, 0)
	if err != nil {
		return a, 0, err
	}
	f := fs.fileFromAttr(a)
	fh := fs.newHandle(f, a.Ino, flags)
	f.mu.Unlock()
	return a, fh, nil
}

// Symlink creates a symbolic link.
func (fs *FS) Symlink(ctx context.Context, c Caller, parent meta.Ino, name, target string) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	gid, _, err := fs.parentGid(ctx, c, parent)
	if err != nil {
		return meta.Attr{}, err
	}
	return fs.m.Symlink(ctx, parent, name, target, c.Uid, gid)
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(ctx context.Context, ino meta.Ino) (string, error) {
	return fs.m.Readlink(ctx, ino)
}

// Link makes a hard link.
func (fs *FS) Link(ctx context.Context, ino, newParent meta.Ino, newName string) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	a, err := fs.m.Link(ctx, ino, newParent, newName)
	if err != nil {
		return a, err
	}
	fs.mu.Lock()
	f := fs.files[ino]
	fs.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		f.orphan = false // linked back (O_TMPFILE + linkat)
		f.overlayLocked(&a)
		f.mu.Unlock()
	}
	return a, nil
}

// Unlink removes a name; the data lives on while the file is open.
func (fs *FS) Unlink(ctx context.Context, parent meta.Ino, name string) error {
	a, err := fs.m.Unlink(ctx, parent, name)
	if err != nil {
		return err
	}
	return fs.unlinked(ctx, a)
}

// unlinked purges an inode whose last link went away, unless it is open:
// then the last Release purges it.
func (fs *FS) unlinked(ctx context.Context, a meta.Attr) error {
	if a.Ino == 0 || a.Nlink > 0 {
		return nil
	}
	fs.mu.Lock()
	f := fs.files[a.Ino]
	fs.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		if !f.detached && f.opens > 0 {
			f.orphan = true
			f.mu.Unlock()
			return nil
		}
		fs.killLocked(f)
		f.mu.Unlock()
	}
	if err := fs.m.Purge(ctx, a.Ino); err != nil {
		return fmt.Errorf("purge inode %d: %w", a.Ino, err)
	}
	return nil
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(ctx context.Context, parent meta.Ino, name string) error {
	return fs.m.Rmdir(ctx, parent, name)
}

// Rename renames, with renameat2 flags.
func (fs *FS) Rename(ctx context.Context, oldParent meta.Ino, oldName string, newParent meta.Ino, newName string, flags uint32) error {
	// Write-then-rename is how programs replace files without fsync. Like
	// ext4's auto_da_alloc, put the file's data in meta before the rename,
	// so that no commit can hold the new name with the old data.
	if a, err := fs.m.Lookup(ctx, oldParent, oldName); err == nil && a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		fs.mu.Lock()
		f := fs.files[a.Ino]
		fs.mu.Unlock()
		if f != nil {
			if err := fs.flushFile(ctx, f); err != nil {
				return err
			}
		}
	}
	replaced, err := fs.m.Rename(ctx, oldParent, oldName, newParent, newName, flags)
	if err != nil {
		return err
	}
	return fs.unlinked(ctx, replaced)
}
