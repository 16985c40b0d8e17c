package meta

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"time"
)

// clampIdx maps a chunk index to the int64 range SQLite stores.
func clampIdx(i uint64) int64 {
	if i > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(i)
}

// Chunks returns the chunks of ino with from <= Index < to, in Index order.
func (db *DB) Chunks(ctx context.Context, ino Ino, from, to uint64) ([]Chunk, error) {
	var out []Chunk
	err := db.read(func() error {
		r, err := db.c.query("SELECT idx, len, block_id, inline, used FROM chunks WHERE ino = ? AND idx >= ? AND idx < ? ORDER BY idx",
			ino, clampIdx(from), clampIdx(to))
		if err != nil {
			return err
		}
		defer r.close()
		for {
			ok, err := r.next()
			if err != nil || !ok {
				return err
			}
			c := Chunk{
				Index:   uint64(r.int(0)),
				Len:     uint32(r.int(1)),
				BlockID: uint64(r.int(2)),
				Inline:  r.blob(3),
				Used:    uint32(r.int(4)),
			}
			if len(c.Inline) == 0 {
				c.Inline = nil
			}
			out = append(out, c)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("chunks of %d: %w", ino, err)
	}
	return out, nil
}

// freeBlock puts block id on the freed list.
func (db *DB) freeBlock(id uint64, now int64) error {
	if id == 0 {
		return nil
	}
	if _, err := db.c.exec("INSERT OR IGNORE INTO freed_blocks (id, freed_at_ns) VALUES (?, ?)", id, now); err != nil {
		return fmt.Errorf("free block %d: %w", id, err)
	}
	return nil
}

// dropChunks deletes the chunks of ino with from <= idx < to, frees their
// blocks and returns the sum of their used bytes.
func (db *DB) dropChunks(ino Ino, from, to uint64, now int64) (uint64, error) {
	// SELECT then DELETE: DELETE ... RETURNING buffers its rows in an
	// ephemeral table, which costs more than a second statement, and most
	// purged files have no chunks at all.
	r, err := db.c.query("SELECT used, block_id FROM chunks WHERE ino = ? AND idx >= ? AND idx < ?", ino, clampIdx(from), clampIdx(to))
	if err != nil {
		return 0, fmt.Errorf("drop chunks of %d: %w", ino, err)
	}
	var dropped uint64
	var blocks []uint64
	n := 0
	for ; ; n++ {
		ok, err := r.next()
		if err != nil {
			r.close()
			return 0, fmt.Errorf("drop chunks of %d: %w", ino, err)
		}
		if !ok {
			break
		}
		dropped += uint64(r.int(0))
		if b := uint64(r.int(1)); b != 0 {
			blocks = append(blocks, b)
		}
	}
	if err := r.close(); err != nil {
		return 0, fmt.Errorf("drop chunks of %d: %w", ino, err)
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := db.c.exec("DELETE FROM chunks WHERE ino = ? AND idx >= ? AND idx < ?", ino, clampIdx(from), clampIdx(to)); err != nil {
		return 0, fmt.Errorf("drop chunks of %d: %w", ino, err)
	}
	for _, b := range blocks {
		if err := db.freeBlock(b, now); err != nil {
			return 0, err
		}
	}
	return dropped, nil
}

// UpdateFile applies a flush of ino's data atomically: chunk rows, holes,
// size, Used and times. Blocks of replaced chunks go to the freed list.
func (db *DB) UpdateFile(ctx context.Context, ino Ino, u FileUpdate) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.getAttr(ino)
		if err != nil {
			return err
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return syscall.EINVAL
		}
		if a.Layout == LayoutImage && (len(u.Chunks) > 0 || len(u.Holes) > 0) {
			return fmt.Errorf("inode %d is a device image, whose data is extents: %w", ino, syscall.EINVAL)
		}
		now := time.Now().UnixNano()
		used := int64(a.Used)
		for _, c := range u.Chunks {
			if c.Len > ChunkSize {
				return fmt.Errorf("chunk %d of %d: length %d: %w", c.Index, ino, c.Len, syscall.EINVAL)
			}
			cused := c.Used
			if cused == 0 || cused > c.Len {
				cused = c.Len
			}
			var oldUsed int64
			var oldBlock uint64
			ok, err := db.c.queryRow("SELECT used, block_id FROM chunks WHERE ino = ? AND idx = ?", []any{ino, clampIdx(c.Index)}, &oldUsed, &oldBlock)
			if err != nil {
				return fmt.Errorf("chunk %d of %d: %w", c.Index, ino, err)
			}
			var inline any
			if c.BlockID == 0 {
				inline = c.Inline
				if c.Inline == nil {
					inline = []byte{}
				}
			}
			if ok {
				_, err = db.c.exec("UPDATE chunks SET len = ?, block_id = ?, inline = ?, used = ? WHERE ino = ? AND idx = ?",
					c.Len, c.BlockID, inline, cused, ino, clampIdx(c.Index))
			} else {
				_, err = db.c.exec("INSERT INTO chunks (ino, idx, len, block_id, inline, used) VALUES (?, ?, ?, ?, ?, ?)",
					ino, clampIdx(c.Index), c.Len, c.BlockID, inline, cused)
			}
			if err != nil {
				return fmt.Errorf("put chunk %d of %d: %w", c.Index, ino, err)
			}
			if ok && oldBlock != c.BlockID {
				if err := db.freeBlock(oldBlock, now); err != nil {
					return err
				}
			}
			used += int64(cused) - oldUsed
		}
		for _, h := range u.Holes {
			n, err := db.dropChunks(ino, h, h+1, now)
			if err != nil {
				return err
			}
			used -= int64(n)
		}
		if used < 0 {
			return fmt.Errorf("inode %d: used bytes would be negative", ino)
		}
		db.ctr.usedBytes += uint64(used) - a.Used
		a.Used = uint64(used)
		a.Size = u.Size
		if !u.Mtime.IsZero() {
			a.Mtime = u.Mtime
		}
		if !u.Ctime.IsZero() {
			a.Ctime = u.Ctime
		}
		if _, err := db.c.exec("UPDATE inodes SET size = ?, used = ?, mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
			a.Size, a.Used, a.Mtime.UnixNano(), a.Ctime.UnixNano(), ino); err != nil {
			return fmt.Errorf("update inode %d: %w", ino, err)
		}
		return nil
	})
	return a, err
}

// TruncateChunks drops every chunk of ino with Index >= from (their blocks go
// to the freed list) and returns the new Attr.
func (db *DB) TruncateChunks(ctx context.Context, ino Ino, from uint64) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.getAttr(ino)
		if err != nil {
			return err
		}
		n, err := db.dropChunks(ino, from, math.MaxInt64, time.Now().UnixNano())
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if n > a.Used {
			return fmt.Errorf("inode %d: used bytes would be negative", ino)
		}
		a.Used -= n
		db.ctr.usedBytes -= n
		if _, err := db.c.exec("UPDATE inodes SET used = ? WHERE ino = ?", a.Used, ino); err != nil {
			return fmt.Errorf("update inode %d: %w", ino, err)
		}
		return nil
	})
	return a, err
}

// Orphans returns the inodes with nlink 0 (unlinked while open).
func (db *DB) Orphans(ctx context.Context) ([]Ino, error) {
	var out []Ino
	err := db.read(func() error {
		r, err := db.c.query("SELECT ino FROM inodes WHERE nlink = 0")
		if err != nil {
			return err
		}
		defer r.close()
		for {
			ok, err := r.next()
			if err != nil || !ok {
				return err
			}
			out = append(out, Ino(r.int(0)))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list orphans: %w", err)
	}
	return out, nil
}

// Purge deletes orphan ino with its chunks and xattrs; its blocks go to the
// freed list. It is a no-op if ino has links again or no longer exists.
func (db *DB) Purge(ctx context.Context, ino Ino) error {
	return db.write(func() error {
		a, err := db.getAttr(ino)
		if err == syscall.ENOENT {
			return nil
		}
		if err != nil {
			return err
		}
		if a.Nlink > 0 {
			return nil
		}
		now := time.Now().UnixNano()
		if _, err := db.dropChunks(ino, 0, math.MaxInt64, now); err != nil {
			return err
		}
		if a.Layout == LayoutImage {
			if err := db.dropAllExtents(ino, now); err != nil {
				return err
			}
		}
		if _, err := db.c.exec("DELETE FROM xattrs WHERE ino = ?", ino); err != nil {
			return fmt.Errorf("purge %d: %w", ino, err)
		}
		if _, err := db.c.exec("DELETE FROM inodes WHERE ino = ?", ino); err != nil {
			return fmt.Errorf("purge %d: %w", ino, err)
		}
		db.ctr.usedBytes -= a.Used
		db.ctr.inodes--
		return nil
	})
}

// Usage returns what statfs reports.
func (db *DB) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	err := db.read(func() error {
		ctr := db.ctr
		if db.readOnly {
			var err error
			if ctr, _, err = loadCounters(db.c); err != nil {
				return err
			}
		}
		u = Usage{UsedBytes: ctr.usedBytes, Inodes: ctr.inodes}
		return nil
	})
	return u, err
}

// FreedBlocks returns the blocks freed at or before cutoff.
func (db *DB) FreedBlocks(ctx context.Context, cutoff time.Time) ([]FreedBlock, error) {
	var out []FreedBlock
	err := db.read(func() error {
		r, err := db.c.query("SELECT id, freed_at_ns FROM freed_blocks WHERE freed_at_ns <= ? ORDER BY id", cutoff.UnixNano())
		if err != nil {
			return err
		}
		defer r.close()
		for {
			ok, err := r.next()
			if err != nil || !ok {
				return err
			}
			out = append(out, FreedBlock{ID: uint64(r.int(0)), FreedAt: time.Unix(0, r.int(1))})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list freed blocks: %w", err)
	}
	return out, nil
}

// FreedCount returns how many blocks wait in the freed list.
func (db *DB) FreedCount(ctx context.Context) (uint64, error) {
	var n int64
	err := db.read(func() error {
		_, err := db.c.queryRow("SELECT count(*) FROM freed_blocks", nil, &n)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("count freed blocks: %w", err)
	}
	return uint64(n), nil
}

// ForgetFreed removes ids from the freed list once their objects are deleted.
func (db *DB) ForgetFreed(ctx context.Context, ids []uint64) error {
	err := db.write(func() error {
		for _, id := range ids {
			if _, err := db.c.exec("DELETE FROM freed_blocks WHERE id = ?", id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget freed blocks: %w", err)
	}
	return nil
}

// ReferencedBlocks calls fn for every block id some chunk references and
// every pack some extent does (an id may come more than once).
// The ids are read first, so fn may call back into the DB.
func (db *DB) ReferencedBlocks(ctx context.Context, fn func(id uint64) error) error {
	var ids []uint64
	err := db.read(func() error {
		r, err := db.c.query("SELECT block_id FROM chunks WHERE block_id != 0 UNION ALL SELECT id FROM packs")
		if err != nil {
			return err
		}
		defer r.close()
		for {
			ok, err := r.next()
			if err != nil || !ok {
				return err
			}
			ids = append(ids, uint64(r.int(0)))
		}
	})
	if err != nil {
		return fmt.Errorf("list referenced blocks: %w", err)
	}
	for _, id := range ids {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

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
		r, err := db.c.query("SELECT name FROM xattrs WHERE ino = ? ORDER BY name", ino)
		if err != nil {
			return fmt.Errorf("list xattrs of %d: %w", ino, err)
		}
		defer r.close()
		for {
			ok, err := r.next()
			if err != nil {
				return fmt.Errorf("list xattrs of %d: %w", ino, err)
			}
			if !ok {
				return nil
			}
			names = append(names, r.text(0))
		}
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
