package meta

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// renameat2 flags.
const (
	renameNoreplace = 1 << 0
	renameExchange  = 1 << 1
	renameWhiteout  = 1 << 2
)

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

// checkName validates a new or looked-up entry name.
func checkName(name string) error {
	switch {
	case name == "":
		return syscall.ENOENT
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	case name == "." || name == "..":
		return syscall.EEXIST
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return syscall.EINVAL
		}
	}
	return nil
}

// queryAttr runs a query returning attrCols and scans its single row.
func (db *DB) queryAttr(query string, args ...any) (Attr, bool, error) {
	r, err := db.c.query(query, args...)
	if err != nil {
		return Attr{}, false, err
	}
	ok, err := r.next()
	var a Attr
	if ok {
		a = scanAttr(r, 0)
	}
	if cerr := r.close(); err == nil {
		err = cerr
	}
	return a, ok && err == nil, err
}

func (db *DB) getAttr(ino Ino) (Attr, error) {
	a, ok, err := db.queryAttr("SELECT "+attrCols+" FROM inodes WHERE ino = ?", ino)
	if err != nil {
		return Attr{}, fmt.Errorf("get inode %d: %w", ino, err)
	}
	if !ok {
		return Attr{}, syscall.ENOENT
	}
	return a, nil
}

// dirAttr returns the attributes of directory ino (ENOENT, ENOTDIR).
func (db *DB) dirAttr(ino Ino) (Attr, error) {
	a, err := db.getAttr(ino)
	if err != nil {
		return a, err
	}
	if !isDir(a.Mode) {
		return a, syscall.ENOTDIR
	}
	return a, nil
}

const lookupQuery = "SELECT i.ino, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size, i.used, i.atime_ns, i.mtime_ns, i.ctime_ns, i.layout " +
	"FROM dentries d JOIN inodes i ON i.ino = d.ino WHERE d.parent = ? AND d.name = ?"

// lookup returns the inode named by parent/name, with ENOENT or ENOTDIR
// when parent is missing or not a directory.
func (db *DB) lookup(parent Ino, name string) (Attr, error) {
	if len(name) > MaxNameLen {
		return Attr{}, syscall.ENAMETOOLONG
	}
	a, ok, err := db.queryAttr(lookupQuery, parent, name)
	if err != nil {
		return Attr{}, fmt.Errorf("lookup %d/%q: %w", parent, name, err)
	}
	if ok {
		return a, nil
	}
	if _, err := db.dirAttr(parent); err != nil {
		return Attr{}, err
	}
	return Attr{}, syscall.ENOENT
}

// Lookup returns the attributes of the entry name in directory parent.
func (db *DB) Lookup(ctx context.Context, parent Ino, name string) (Attr, error) {
	var a Attr
	err := db.read(func() (err error) {
		a, err = db.lookup(parent, name)
		return err
	})
	return a, err
}

// GetAttr returns the attributes of ino.
func (db *DB) GetAttr(ctx context.Context, ino Ino) (Attr, error) {
	var a Attr
	err := db.read(func() (err error) {
		a, err = db.getAttr(ino)
		return err
	})
	return a, err
}

func (db *DB) putAttr(a Attr) error {
	_, err := db.c.exec(`UPDATE inodes SET mode = ?, nlink = ?, uid = ?, gid = ?, rdev = ?, size = ?, used = ?,
		atime_ns = ?, mtime_ns = ?, ctime_ns = ? WHERE ino = ?`,
		a.Mode, a.Nlink, a.Uid, a.Gid, a.Rdev, a.Size, a.Used,
		a.Atime.UnixNano(), a.Mtime.UnixNano(), a.Ctime.UnixNano(), a.Ino)
	if err != nil {
		return fmt.Errorf("update inode %d: %w", a.Ino, err)
	}
	return nil
}

// SetAttr changes the attributes named in set and returns the result.
func (db *DB) SetAttr(ctx context.Context, ino Ino, set SetAttr) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.getAttr(ino)
		if err != nil {
			return err
		}
		if set.Mode != nil {
			a.Mode = a.Mode&syscall.S_IFMT | *set.Mode&0o7777
		}
		if set.Uid != nil {
			a.Uid = *set.Uid
		}
		if set.Gid != nil {
			a.Gid = *set.Gid
		}
		if set.Size != nil {
			if isDir(a.Mode) {
				return syscall.EISDIR
			}
			if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
				return syscall.EINVAL
			}
			a.Size = *set.Size
		}
		if set.Atime != nil {
			a.Atime = *set.Atime
		}
		if set.Mtime != nil {
			a.Mtime = *set.Mtime
		}
		if set.Ctime != nil {
			a.Ctime = *set.Ctime
		} else {
			a.Ctime = time.Now()
		}
		return db.putAttr(a)
	})
	return a, err
}

// touchDir sets a directory's mtime and ctime to now and adds dlink to its
// link count.
func (db *DB) touchDir(ino Ino, now int64, dlink int) error {
	_, err := db.c.exec("UPDATE inodes SET mtime_ns = ?, ctime_ns = ?, nlink = nlink + ? WHERE ino = ?", now, now, dlink, ino)
	if err != nil {
		return fmt.Errorf("update directory %d: %w", ino, err)
	}
	return nil
}

// addEntry inserts parent/name -> ino with a fresh cookie (EEXIST if taken).
func (db *DB) addEntry(parent Ino, name string, ino Ino) error {
	cookie := db.ctr.nextCookie
	_, err := db.c.exec("INSERT INTO dentries (parent, name, ino, cookie) VALUES (?, ?, ?, ?)", parent, name, ino, cookie)
	if err != nil {
		if isConstraint(err) {
			return syscall.EEXIST
		}
		return fmt.Errorf("add entry %d/%q: %w", parent, name, err)
	}
	db.ctr.nextCookie++
	return nil
}

func (db *DB) removeEntry(parent Ino, name string) error {
	if _, err := db.c.exec("DELETE FROM dentries WHERE parent = ? AND name = ?", parent, name); err != nil {
		return fmt.Errorf("remove entry %d/%q: %w", parent, name, err)
	}
	return nil
}

// newInode creates an inode as entry name in parent.
func (db *DB) newInode(parent Ino, name string, mode, rdev, uid, gid uint32, target string) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	if _, err := db.dirAttr(parent); err != nil {
		return Attr{}, err
	}
	ino := Ino(db.ctr.nextIno)
	if err := db.addEntry(parent, name, ino); err != nil {
		return Attr{}, err
	}
	db.ctr.nextIno++
	db.ctr.inodes++
	now := time.Now()
	ns := now.UnixNano()
	a := Attr{Ino: ino, Mode: mode, Nlink: 1, Uid: uid, Gid: gid, Rdev: rdev, Atime: now, Mtime: now, Ctime: now}
	var dirParent Ino
	var tgt any
	dlink := 0
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		a.Nlink = 2
		dirParent = parent
		dlink = 1
	case syscall.S_IFLNK:
		a.Size = uint64(len(target))
		tgt = target
	}
	if _, err := db.c.exec(`INSERT INTO inodes (ino, mode, nlink, uid, gid, rdev, size, used, atime_ns, mtime_ns, ctime_ns, parent, target)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`,
		ino, a.Mode, a.Nlink, uid, gid, rdev, a.Size, ns, ns, ns, dirParent, tgt); err != nil {
		return Attr{}, fmt.Errorf("insert inode %d: %w", ino, err)
	}
	if err := db.touchDir(parent, ns, dlink); err != nil {
		return Attr{}, err
	}
	return a, nil
}

// Mknod creates an inode of any type but symlink (regular file, directory,
// fifo, socket, device) as entry name in parent, with times set to now.
// Directories get nlink 2 and raise the parent's nlink.
func (db *DB) Mknod(ctx context.Context, parent Ino, name string, mode, rdev, uid, gid uint32) (Attr, error) {
	switch mode & syscall.S_IFMT {
	case 0:
		mode |= syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	default:
		return Attr{}, syscall.EINVAL
	}
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.newInode(parent, name, mode, rdev, uid, gid, "")
		return err
	})
	return a, err
}

// Symlink creates a symbolic link to target as entry name in parent.
func (db *DB) Symlink(ctx context.Context, parent Ino, name, target string, uid, gid uint32) (Attr, error) {
	if target == "" {
		return Attr{}, syscall.ENOENT
	}
	if len(target) > 4095 {
		return Attr{}, syscall.ENAMETOOLONG
	}
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.newInode(parent, name, syscall.S_IFLNK|0o777, 0, uid, gid, target)
		return err
	})
	return a, err
}

// Readlink returns a symlink's target.
func (db *DB) Readlink(ctx context.Context, ino Ino) (string, error) {
	var target string
	err := db.read(func() error {
		var mode uint32
		ok, err := db.c.queryRow("SELECT mode, target FROM inodes WHERE ino = ?", []any{ino}, &mode, &target)
		if err != nil {
			return fmt.Errorf("readlink %d: %w", ino, err)
		}
		if !ok {
			return syscall.ENOENT
		}
		if mode&syscall.S_IFMT != syscall.S_IFLNK {
			return syscall.EINVAL
		}
		return nil
	})
	return target, err
}

// Link adds a hard link to ino (not a directory) as newName in newParent.
func (db *DB) Link(ctx context.Context, ino Ino, newParent Ino, newName string) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		if err := checkName(newName); err != nil {
			return err
		}
		a, err = db.getAttr(ino)
		if err != nil {
			return err
		}
		if isDir(a.Mode) {
			return syscall.EPERM
		}
		if a.Nlink == 0 {
			return syscall.ENOENT
		}
		if _, err := db.dirAttr(newParent); err != nil {
			return err
		}
		if err := db.addEntry(newParent, newName, ino); err != nil {
			return err
		}
		now := time.Now()
		a.Nlink++
		a.Ctime = now
		if _, err := db.c.exec("UPDATE inodes SET nlink = ?, ctime_ns = ? WHERE ino = ?", a.Nlink, now.UnixNano(), ino); err != nil {
			return fmt.Errorf("link inode %d: %w", ino, err)
		}
		return db.touchDir(newParent, now.UnixNano(), 0)
	})
	return a, err
}

// dropLink removes one link of non-directory a (already out of its
// directory) and returns its attributes after that.
func (db *DB) dropLink(a Attr, now time.Time) (Attr, error) {
	if a.Nlink > 0 {
		a.Nlink--
	}
	a.Ctime = now
	if _, err := db.c.exec("UPDATE inodes SET nlink = ?, ctime_ns = ? WHERE ino = ?", a.Nlink, now.UnixNano(), a.Ino); err != nil {
		return a, fmt.Errorf("unlink inode %d: %w", a.Ino, err)
	}
	return a, nil
}

// deleteDir deletes the inode of empty directory a, already out of its
// parent. A removed directory has no data, so unlike a file it is not kept
// as an orphan.
func (db *DB) deleteDir(a Attr) error {
	if _, err := db.c.exec("DELETE FROM xattrs WHERE ino = ?", a.Ino); err != nil {
		return fmt.Errorf("delete directory %d: %w", a.Ino, err)
	}
	if _, err := db.c.exec("DELETE FROM inodes WHERE ino = ?", a.Ino); err != nil {
		return fmt.Errorf("delete directory %d: %w", a.Ino, err)
	}
	db.ctr.inodes--
	return nil
}

func (db *DB) dirEmpty(ino Ino) (bool, error) {
	var one int64
	ok, err := db.c.queryRow("SELECT 1 FROM dentries WHERE parent = ? LIMIT 1", []any{ino}, &one)
	if err != nil {
		return false, fmt.Errorf("list directory %d: %w", ino, err)
	}
	return !ok, nil
}

// Unlink removes the entry name (not a directory) from parent and returns
// the target's attributes after its nlink was decremented. An inode whose
// nlink reaches 0 becomes an orphan: it keeps its data until Purge.
func (db *DB) Unlink(ctx context.Context, parent Ino, name string) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.lookup(parent, name)
		if err != nil {
			return err
		}
		if isDir(a.Mode) {
			return syscall.EISDIR
		}
		if err := db.removeEntry(parent, name); err != nil {
			return err
		}
		now := time.Now()
		if a, err = db.dropLink(a, now); err != nil {
			return err
		}
		return db.touchDir(parent, now.UnixNano(), 0)
	})
	return a, err
}

// Rmdir removes the empty directory name from parent.
func (db *DB) Rmdir(ctx context.Context, parent Ino, name string) error {
	switch name {
	case ".":
		return syscall.EINVAL
	case "..":
		return syscall.ENOTEMPTY
	}
	return db.write(func() error {
		a, err := db.lookup(parent, name)
		if err != nil {
			return err
		}
		if !isDir(a.Mode) {
			return syscall.ENOTDIR
		}
		empty, err := db.dirEmpty(a.Ino)
		if err != nil {
			return err
		}
		if !empty {
			return syscall.ENOTEMPTY
		}
		if err := db.removeEntry(parent, name); err != nil {
			return err
		}
		if err := db.deleteDir(a); err != nil {
			return err
		}
		return db.touchDir(parent, time.Now().UnixNano(), -1)
	})
}

// isAncestor reports whether dir a is d or one of d's ancestors.
func (db *DB) isAncestor(a, d Ino) (bool, error) {
	for i := 0; ; i++ {
		if d == a {
			return true, nil
		}
		if d == RootIno {
			return false, nil
		}
		if i > 1<<20 {
			return false, fmt.Errorf("directory %d: parent chain loops", d)
		}
		var p Ino
		ok, err := db.c.queryRow("SELECT parent FROM inodes WHERE ino = ?", []any{d}, &p)
		if err != nil {
			return false, fmt.Errorf("parent of %d: %w", d, err)
		}
		if !ok {
			return false, fmt.Errorf("parent of %d: %w", d, syscall.ENOENT)
		}
		d = p
	}
}

// Rename moves oldName in oldParent to newName in newParent with the
// semantics of rename(2) and renameat2 flags (RENAME_NOREPLACE,
// RENAME_EXCHANGE). When an existing target is replaced, its attributes
// after the nlink decrement are returned (Ino 0 when nothing was replaced);
// if its nlink reached 0 it is an orphan like after Unlink. A replaced
// directory is deleted at once (it was empty) and returned with Nlink 0, so
// a Purge of it is a no-op.
func (db *DB) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) (Attr, error) {
	if flags&^(renameNoreplace|renameExchange) != 0 || flags == renameNoreplace|renameExchange {
		return Attr{}, syscall.EINVAL
	}
	for _, n := range []string{oldName, newName} {
		if n == "." || n == ".." {
			return Attr{}, syscall.EBUSY
		}
		if err := checkName(n); err != nil {
			return Attr{}, err
		}
	}
	var replaced Attr
	err := db.write(func() error {
		src, err := db.lookup(oldParent, oldName)
		if err != nil {
			return err
		}
		if _, err := db.dirAttr(newParent); err != nil {
			return err
		}
		dst, err := db.lookup(newParent, newName)
		exists := err == nil
		if err != nil && err != syscall.ENOENT {
			return err
		}
		if flags&renameNoreplace != 0 && exists {
			return syscall.EEXIST
		}
		if flags&renameExchange != 0 && !exists {
			return syscall.ENOENT
		}
		if exists && dst.Ino == src.Ino {
			return nil // the same inode: rename does nothing
		}
		// A directory may not move into its own subtree.
		if isDir(src.Mode) && oldParent != newParent {
			if in, err := db.isAncestor(src.Ino, newParent); err != nil {
				return err
			} else if in {
				return syscall.EINVAL
			}
		}
		if flags&renameExchange != 0 {
			return db.exchange(oldParent, oldName, src, newParent, newName, dst)
		}
		now := time.Now()
		ns := now.UnixNano()
		newParentLinks := 0
		if exists {
			switch {
			case isDir(src.Mode) && !isDir(dst.Mode):
				return syscall.ENOTDIR
			case !isDir(src.Mode) && isDir(dst.Mode):
				return syscall.EISDIR
			}
			if err := db.removeEntry(newParent, newName); err != nil {
				return err
			}
			if isDir(dst.Mode) {
				empty, err := db.dirEmpty(dst.Ino)
				if err != nil {
					return err
				}
				if !empty {
					return syscall.ENOTEMPTY
				}
				if err := db.deleteDir(dst); err != nil {
					return err
				}
				newParentLinks--
				dst.Nlink = 0
				dst.Ctime = now
				replaced = dst
			} else if replaced, err = db.dropLink(dst, now); err != nil {
				return err
			}
		}
		if err := db.removeEntry(oldParent, oldName); err != nil {
			return err
		}
		if err := db.addEntry(newParent, newName, src.Ino); err != nil {
			return err
		}
		if isDir(src.Mode) && oldParent != newParent {
			newParentLinks++
			if _, err := db.c.exec("UPDATE inodes SET parent = ?, ctime_ns = ? WHERE ino = ?", newParent, ns, src.Ino); err != nil {
				return fmt.Errorf("move directory %d: %w", src.Ino, err)
			}
			if err := db.touchDir(oldParent, ns, -1); err != nil {
				return err
			}
		} else {
			if _, err := db.c.exec("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", ns, src.Ino); err != nil {
				return fmt.Errorf("rename inode %d: %w", src.Ino, err)
			}
			if oldParent != newParent {
				if err := db.touchDir(oldParent, ns, 0); err != nil {
					return err
				}
			}
		}
		return db.touchDir(newParent, ns, newParentLinks)
	})
	if err != nil {
		return Attr{}, err
	}
	return replaced, nil
}

// exchange swaps two existing entries (RENAME_EXCHANGE).
func (db *DB) exchange(oldParent Ino, oldName string, src Attr, newParent Ino, newName string, dst Attr) error {
	if isDir(dst.Mode) && oldParent != newParent {
		if in, err := db.isAncestor(dst.Ino, oldParent); err != nil {
			return err
		} else if in {
			return syscall.EINVAL
		}
	}
	ns := time.Now().UnixNano()
	set := func(parent Ino, name string, ino Ino) error {
		if _, err := db.c.exec("UPDATE dentries SET ino = ? WHERE parent = ? AND name = ?", ino, parent, name); err != nil {
			return fmt.Errorf("exchange entry %d/%q: %w", parent, name, err)
		}
		return nil
	}
	if err := set(oldParent, oldName, dst.Ino); err != nil {
		return err
	}
	if err := set(newParent, newName, src.Ino); err != nil {
		return err
	}
	oldLinks, newLinks := 0, 0
	if oldParent != newParent {
		if isDir(src.Mode) {
			oldLinks--
			newLinks++
		}
		if isDir(dst.Mode) {
			oldLinks++
			newLinks--
		}
	}
	for _, m := range []struct {
		a      Attr
		parent Ino
	}{{src, newParent}, {dst, oldParent}} {
		var err error
		if isDir(m.a.Mode) {
			_, err = db.c.exec("UPDATE inodes SET parent = ?, ctime_ns = ? WHERE ino = ?", m.parent, ns, m.a.Ino)
		} else {
			_, err = db.c.exec("UPDATE inodes SET ctime_ns = ? WHERE ino = ?", ns, m.a.Ino)
		}
		if err != nil {
			return fmt.Errorf("exchange inode %d: %w", m.a.Ino, err)
		}
	}
	if err := db.touchDir(oldParent, ns, oldLinks); err != nil {
		return err
	}
	if oldParent != newParent {
		return db.touchDir(newParent, ns, newLinks)
	}
	return nil
}

// Parent returns the parent directory of directory ino (RootIno for the root).
func (db *DB) Parent(ctx context.Context, ino Ino) (Ino, error) {
	var p Ino
	err := db.read(func() error {
		var mode uint32
		ok, err := db.c.queryRow("SELECT mode, parent FROM inodes WHERE ino = ?", []any{ino}, &mode, &p)
		if err != nil {
			return fmt.Errorf("parent of %d: %w", ino, err)
		}
		if !ok {
			return syscall.ENOENT
		}
		if !isDir(mode) {
			return syscall.ENOTDIR
		}
		return nil
	})
	return p, err
}

// readDirBatch is how many entries ReadDir reads under the lock at a time;
// fn runs without the lock, so it may call back into the DB.
const readDirBatch = 256

// ReadDir calls fn for the entries of directory ino whose Cookie is greater
// than offset, in Cookie order, until fn returns false. "." and ".." are not
// included (the caller gives them cookies 1 and 2). With plus, each entry
// carries its Attr.
func (db *DB) ReadDir(ctx context.Context, ino Ino, offset uint64, plus bool, fn func(DirEntry) bool) error {
	const q = "SELECT d.name, d.cookie, i.ino, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size, i.used, i.atime_ns, i.mtime_ns, i.ctime_ns, i.layout " +
		"FROM dentries d JOIN inodes i ON i.ino = d.ino WHERE d.parent = ? AND d.cookie > ? ORDER BY d.cookie LIMIT ?"
	first := true
	batch := make([]DirEntry, 0, 32)
	for {
		batch = batch[:0]
		err := db.read(func() error {
			if first {
				if _, err := db.dirAttr(ino); err != nil {
					return err
				}
			}
			err := db.c.each(q, []any{ino, offset, readDirBatch}, func(r *rows) error {
				var e DirEntry
				e.Name = r.text(0)
				e.Cookie = uint64(r.int(1))
				a := scanAttr(r, 2)
				e.Ino, e.Mode = a.Ino, a.Mode
				if plus {
					e.Attr = &a
				}
				batch = append(batch, e)
				return nil
			})
			if err != nil {
				return fmt.Errorf("read directory %d: %w", ino, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		first = false
		for _, e := range batch {
			if !fn(e) {
				return nil
			}
			offset = e.Cookie
		}
		if len(batch) < readDirBatch {
			return nil
		}
	}
}
