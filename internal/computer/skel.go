package computer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// copySkel copies the template's skeleton home directory (its /etc/skel:
// .bashrc, .profile, ...) into a fresh workspace, owned by the user ohm, so
// that login shells find their dotfiles. Files already there are kept. A
// template without /etc/skel has nothing to copy. Only regular files,
// directories and symlinks are copied; the skeleton is the template's, read
// on the host, so nothing in it may point the copy outside of home.
func copySkel(skel, home string) error {
	if _, err := os.Lstat(skel); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(skel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(skel, p)
		if err != nil || rel == "." {
			return err
		}
		dst := filepath.Join(home, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(dst, info.Mode().Perm()); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, dst); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
		case d.Type().IsRegular():
			if err := copyNew(p, dst, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil
		}
		if err := os.Lchown(dst, homeUID, homeUID); err != nil {
			return fmt.Errorf("chown %s: %w", dst, err)
		}
		return nil
	})
}

// copyNew copies src to dst unless dst exists.
func copyNew(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
