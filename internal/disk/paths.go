package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// resolveNoLinks opens paths without following a symlink in any component,
// nor a magic link (/proc/*/fd), nor leaving the tree by "..".
const resolveNoLinks = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openNoFollow opens the absolute path without following symlinks in any
// of its components.
func openNoFollow(path string, flags int, mode uint32) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: not an absolute path", path)
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: resolveNoLinks,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s: a component is a symlink, which the host does not follow here", path)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openAt opens name in dir without following symlinks.
func openAt(dir *os.File, name string, flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat2(int(dir.Fd()), name, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: resolveNoLinks | unix.RESOLVE_BENEATH,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir.Name(), name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

// privateDir opens path, a directory, without following symlinks, and
// checks that only root can change it: owned by root and writable by
// nobody else. With create, a missing last component is made (mode 0700)
// in a parent that passes the same check.
func privateDir(path string, create bool) (*os.File, error) {
	path = filepath.Clean(path)
	d, err := openNoFollow(path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, os.ErrNotExist) && create {
		parent, perr := privateDir(filepath.Dir(path), false)
		if perr != nil {
			return nil, perr
		}
		err = unix.Mkdirat(int(parent.Fd()), filepath.Base(path), 0o700)
		parent.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		d, err = openNoFollow(path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return nil, err
	}
	if err := checkPrivate(d); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// checkPrivate fails unless the open directory belongs to root and no one
// else may write in it.
func checkPrivate(d *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", d.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", d.Name())
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s must belong to root and be writable by root only (it is uid %d, mode %#o)", d.Name(), st.Uid, st.Mode&0o7777)
	}
	return nil
}

// rootOnly fails unless the directory at path is root's and closed to
// everyone else (mode 0700 or tighter): a place where no computer can
// reach, let alone write.
func rootOnly(path string) error {
	d, err := privateDir(path, false)
	if err != nil {
		return err
	}
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&0o077 != 0 {
		return fmt.Errorf("%s must be accessible to root only (mode 0700; it is %#o)", path, st.Mode&0o7777)
	}
	return nil
}
