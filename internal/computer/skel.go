package computer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"ohm/internal/filecopy"
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
			if err := filecopy.New(p, dst, info.Mode().Perm()); err != nil && !errors.Is(err, os.ErrExist) {
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
