package vfs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"ohm/internal/ohmfs/meta"
)

// XattrClone is the control that clones a file (docs/checkpoints.md):
// setting it on a regular file, as root through the mount, with a path
// relative to the volume's root as the value, makes a new file there
// whose data is a metadata-only copy of the file's: no data is copied,
// both name the same immutable blocks, and a write to either one lands in
// new blocks of its own. The path's directory must exist and its name must
// not (EEXIST). Reading it gives ENODATA. It is an xattr and not FICLONE
// because the kernel does not pass FICLONE to a FUSE server, and not only
// copy_file_range because that returns a 32-bit count to FUSE: a clone of
// a sparse 1 PiB image would take 2^18 calls.
const XattrClone = "trusted.ohmfs.clone"

// XattrExclusive, read on a directory, gives the bytes (decimal) of the
// packs that only the device images directly in it map: what deleting
// them gives back, the cost of a checkpoint kept there.
const XattrExclusive = "trusted.ohmfs.exclusive"

// exclusive answers a read of XattrExclusive. The log is folded first, so
// that the images' newest pages count.
func (fs *FS) exclusive(ctx context.Context, ino meta.Ino) ([]byte, error) {
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return nil, err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, syscall.ENODATA
	}
	if err := fs.Sync(ctx); err != nil {
		return nil, err
	}
	n, err := fs.m.ExclusiveBytes(ctx, ino)
	if err != nil {
		return nil, err
	}
	return []byte(strconv.FormatUint(n, 10)), nil
}

// XattrSnapshot, set on the root directory with an absolute host path as
// the value, makes the mount write a consistent copy of the volume's
// metadata there, every device image's log folded into it first: the
// start of a fork of the volume (volume.Fork). Root only, through the
// mount: the trusted namespace.
const XattrSnapshot = "trusted.ohmfs.snapshot"

// snapshot answers a write of XattrSnapshot.
func (fs *FS) snapshot(ctx context.Context, ino meta.Ino, path string) error {
	if ino != meta.RootIno || !filepath.IsAbs(path) {
		return syscall.EINVAL
	}
	if err := fs.Sync(ctx); err != nil {
		return err
	}
	return fs.m.SnapshotTo(ctx, path)
}

// cloneTries is how often a clone makes its files quiet (flushes their
// writes) before it gives up with EBUSY while they keep being written.
const cloneTries = 4

// CloneTo makes path (relative to the root, see XattrClone) a clone of
// src and returns the new file's directory and attributes.
func (fs *FS) CloneTo(ctx context.Context, src meta.Ino, path string) (meta.Ino, meta.Attr, error) {
	parent, name, err := fs.resolveParent(ctx, path)
	if err != nil {
		return 0, meta.Attr{}, err
	}
	sa, err := fs.m.GetAttr(ctx, src)
	if err != nil {
		return 0, meta.Attr{}, err
	}
	if sa.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0, meta.Attr{}, syscall.EINVAL
	}
	if err := fs.admitSpace(inodeBytes); err != nil {
		return 0, meta.Attr{}, err
	}
	da, err := fs.m.Mknod(ctx, parent, name, sa.Mode, 0, sa.Uid, sa.Gid)
	if err != nil {
		return 0, meta.Attr{}, err
	}
	a, err := fs.cloneQuiet(ctx, src, da.Ino, func(sf, df *file) (meta.Attr, error) {
		return fs.m.CloneFile(ctx, src, da.Ino)
	})
	if err != nil {
		if _, uerr := fs.m.Unlink(ctx, parent, name); uerr == nil {
			if perr := fs.m.Purge(ctx, da.Ino); perr != nil {
				err = errors.Join(err, perr)
			}
		}
		return 0, meta.Attr{}, fmt.Errorf("clone inode %d to %s: %w", src, path, err)
	}
	return parent, a, nil
}

// CopyRange is copy_file_range(2) as a metadata clone: n bytes of image
// src from offIn on become the bytes of dst from offOut on. It clones
// whole pages only: offsets must be page aligned and the range must end
// on a page or at src's end with nothing of dst after it. Anything else
// (and a plain src that is not copied whole onto an empty file) is
// EOPNOTSUPP, on which the kernel copies the bytes itself. It returns the
// bytes copied: n cut at src's end.
func (fs *FS) CopyRange(ctx context.Context, src meta.Ino, offIn uint64, dst meta.Ino, offOut, n uint64) (uint64, error) {
	if src == dst {
		return 0, syscall.EOPNOTSUPP
	}
	var copied uint64
	_, err := fs.cloneQuiet(ctx, src, dst, func(sf, df *file) (meta.Attr, error) {
		if offIn >= sf.size || n == 0 {
			return meta.Attr{}, errNothing
		}
		copied = min(n, sf.size-offIn)
		end := offOut + copied
		if !sf.image {
			if offIn != 0 || offOut != 0 || copied != sf.size || df.size != 0 || df.image {
				return meta.Attr{}, syscall.EOPNOTSUPP
			}
			return fs.m.CloneFile(ctx, src, dst)
		}
		if offIn%pageSize != 0 || offOut%pageSize != 0 || (copied%pageSize != 0 && end < df.size) {
			return meta.Attr{}, syscall.EOPNOTSUPP
		}
		if !df.image && df.size != 0 {
			return meta.Attr{}, syscall.EOPNOTSUPP
		}
		pages := (copied + pageSize - 1) / pageSize
		return fs.m.CloneImageRange(ctx, src, offIn/pageSize, dst, offOut/pageSize, pages, end)
	})
	if errors.Is(err, errNothing) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return copied, nil
}

// errNothing says a clone had nothing to do.
var errNothing = errors.New("nothing to clone")

// cloneQuiet runs clone with src and dst locked (in inode order) once
// neither has data that meta does not hold yet (dirty chunks, log
// records not folded), updates dst's in-memory state to the attributes
// clone returns and commits, so that the clone is durable when it
// returns. A clone of a computer's disk image runs with its filesystem
// frozen, so one flush makes both quiet.
func (fs *FS) cloneQuiet(ctx context.Context, src, dst meta.Ino, clone func(sf, df *file) (meta.Attr, error)) (meta.Attr, error) {
	for try := 0; ; try++ {
		if err := fs.Sync(ctx); err != nil {
			return meta.Attr{}, fmt.Errorf("flush before a clone: %w", err)
		}
		first, second := src, dst
		if first > second {
			first, second = second, first
		}
		f1, err := fs.lockFile(ctx, first)
		if err != nil {
			return meta.Attr{}, err
		}
		f2, err := fs.lockFile(ctx, second)
		if err != nil {
			fs.unlockFile(f1)
			return meta.Attr{}, err
		}
		sf, df := f1, f2
		if sf.ino != src {
			sf, df = f2, f1
		}
		if !sf.regular || !df.regular || sf.dead || df.dead {
			fs.unlockFile(f2)
			fs.unlockFile(f1)
			return meta.Attr{}, syscall.EINVAL
		}
		if !quiet(sf) || !quiet(df) {
			fs.unlockFile(f2)
			fs.unlockFile(f1)
			if try+1 == cloneTries {
				return meta.Attr{}, fmt.Errorf("clone inode %d: it is being written: %w", src, syscall.EBUSY)
			}
			continue
		}
		a, err := clone(sf, df)
		if err == nil {
			df.init(a, fs.cfg.InlineMax)
			df.chunks, df.chunksLoaded = nil, false
			df.timesDirty = false
		}
		fs.unlockFile(f2)
		fs.unlockFile(f1)
		if err != nil {
			return meta.Attr{}, err
		}
		if err := fs.commit(ctx); err != nil {
			return meta.Attr{}, err
		}
		return a, nil
	}
}

// quiet reports whether meta holds all of f's data.
func quiet(f *file) bool {
	return len(f.dirty) == 0 && f.spans.len() == 0 && f.size == f.metaSize
}

// resolveParent walks path (relative to the root, "/"-separated, without
// "." or ".." components) to the directory of its last component.
func (fs *FS) resolveParent(ctx context.Context, path string) (meta.Ino, string, error) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	dir := meta.RootIno
	for i, p := range parts {
		if p == "" || p == "." || p == ".." || len(p) > meta.MaxNameLen {
			return 0, "", fmt.Errorf("clone destination %q: %w", path, syscall.EINVAL)
		}
		if i == len(parts)-1 {
			return dir, p, nil
		}
		a, err := fs.m.Lookup(ctx, dir, p)
		if err != nil {
			return 0, "", fmt.Errorf("clone destination %q: %w", path, err)
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return 0, "", fmt.Errorf("clone destination %q: %w", path, syscall.ENOTDIR)
		}
		dir = a.Ino
	}
	return 0, "", syscall.EINVAL
}
