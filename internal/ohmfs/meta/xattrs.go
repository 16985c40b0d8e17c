package meta

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// Xattr flags of setxattr(2).
const (
	xattrCreate  = 1
	xattrReplace = 2
)

func checkXattrName(name string) error {
	if name == "" {
		return syscall.EINVAL
	}
	if len(name) > 255 {
		return syscall.ERANGE
	}
	return nil
}

// GetXattr returns the value of xattr name (ENODATA if absent).
func (db *DB) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	if err := checkXattrName(name); err != nil {
		return nil, err
	}
	var v []byte
	err := db.read(func() error {
		ok, err := db.c.queryRow("SELECT value FROM xattrs WHERE ino = ? AND name = ?", []any{ino, name}, &v)
		if err != nil {
			return fmt.Errorf("get xattr %q of %d: %w", name, ino, err)
		}
		if ok {
			if v == nil {
				v = []byte{}
			}
			return nil
		}
		if _, err := db.getAttr(ino); err != nil {
			return err
		}
		return syscall.ENODATA
	})
	return v, err
}

// SetXattr sets xattr name; flags are XATTR_CREATE / XATTR_REPLACE semantics.
func (db *DB) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	if len(value) > 64<<10 {
		return syscall.E2BIG
	}
	if flags&^(xattrCreate|xattrReplace) != 0 || flags == xattrCreate|xattrReplace {
		return syscall.EINVAL
	}
	if value == nil {
		value = []byte{}
	}
	return db.write(func() error {
		if _, err := db.getAttr(ino); err != nil {
			return err
		}
		var err error
		switch flags {
		case xattrCreate:
			_, err = db.c.exec("INSERT INTO xattrs (ino, name, value) VALUES (?, ?, ?)", ino, name, value)
			if isConstraint(err) {
				return syscall.EEXIST
			}
		case xattrReplace:
			var n int64
			n, err = db.c.exec("UPDATE xattrs SET value = ? WHERE ino = ? AND name = ?", value, ino, name)
			if err == nil && n == 0 {
				return syscall.ENODATA
			}
		default:
			_, err = db.c.exec("INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (?, ?, ?)", ino, name, value)
		}
		if err != nil {
			return fmt.Errorf("set xattr %q of %d: %w", name, ino, err)
		}
		return db.touchCtime(ino)
	})
}

func (db *DB) touchCtime(ino Ino) error {
	if _, err := db.c.exec("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", time.Now().UnixNano(), ino); err != nil {
		return fmt.Errorf("update inode %d: %w", ino, err)
	}
	return nil
}

// ListXattr returns the names of ino's xattrs.
func (db *DB) ListXattr(ctx context.Context, ino Ino) ([]string, error) {
	var names []string
	err := db.read(func() error {
		if _, err := db.getAttr(ino); err != nil {
			return err
		}
		err := db.c.each("SELECT name FROM xattrs WHERE ino = ? ORDER BY name", []any{ino}, func(r *rows) error {
			names = append(names, r.text(0))
			return nil
		})
		if err != nil {
			return fmt.Errorf("list xattrs of %d: %w", ino, err)
		}
		return nil
	})
	return names, err
}

// RemoveXattr removes xattr name (ENODATA if absent).
func (db *DB) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	if err := checkXattrName(name); err != nil {
		return err
	}
	return db.write(func() error {
		n, err := db.c.exec("DELETE FROM xattrs WHERE ino = ? AND name = ?", ino, name)
		if err != nil {
			return fmt.Errorf("remove xattr %q of %d: %w", name, ino, err)
		}
		if n == 0 {
			if _, err := db.getAttr(ino); err != nil {
				return err
			}
			return syscall.ENODATA
		}
		return db.touchCtime(ino)
	})
}
