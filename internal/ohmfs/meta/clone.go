package meta

import (
	"context"
	"fmt"
	"math"
	"strings"
	"syscall"
	"time"
)

// A clone is a copy of a file's data that copies metadata only
// (docs/checkpoints.md): the destination's extents (or chunks) name the
// source's packs (or blocks). Blocks are immutable, and a write to either
// file makes new packs and remaps its own pages, so writes to one never
// show in the other. A pack's live count counts the pages extents of every
// file reference in it, so a pack is freed only when no clone maps it; a
// chunk's block is freed only when no chunk row names it any more
// (freeChunkBlock), found by the chunks_block index.

// CloneFile makes dst's data a copy of src's: its old data is dropped, and
// it takes src's size, layout and extents (a device image) or chunks (a
// plain file). Both must be regular files and dst a plain file with no
// data or an image (an image stays an image: EINVAL for a plain src onto
// an image dst). Times of dst become now.
func (db *DB) CloneFile(ctx context.Context, src, dst Ino) (Attr, error) {
	var a Attr
	err := db.write(func() error {
		sa, da, err := db.cloneAttrs(src, dst)
		if err != nil {
			return err
		}
		if sa.Layout != LayoutImage && da.Layout == LayoutImage {
			return syscall.EINVAL
		}
		now := time.Now()
		ns := now.UnixNano()
		if _, err := db.dropChunks(dst, 0, math.MaxInt64, ns); err != nil {
			return err
		}
		if da.Layout == LayoutImage {
			if err := db.dropAllExtents(dst, ns); err != nil {
				return err
			}
		}
		if sa.Layout == LayoutImage {
			if _, err := db.c.exec("INSERT INTO extents (ino, page, n, block, bpage) SELECT ?, page, n, block, bpage FROM extents WHERE ino = ?", dst, src); err != nil {
				return fmt.Errorf("clone extents of %d to %d: %w", src, dst, err)
			}
			touched := make(map[uint64]int64)
			err := db.c.each("SELECT block, sum(n) FROM extents WHERE ino = ? GROUP BY block", []any{src}, func(r *rows) error {
				touched[uint64(r.int(0))] += r.int(1)
				return nil
			})
			if err != nil {
				return fmt.Errorf("extents of %d: %w", src, err)
			}
			if err := db.applyLive(touched, ns); err != nil {
				return err
			}
		} else {
			if _, err := db.c.exec("INSERT INTO chunks (ino, idx, len, block_id, inline, used) SELECT ?, idx, len, block_id, inline, used FROM chunks WHERE ino = ?", dst, src); err != nil {
				return fmt.Errorf("clone chunks of %d to %d: %w", src, dst, err)
			}
		}
		db.ctr.usedBytes += sa.Used - da.Used
		a = da
		a.Size, a.Used, a.Layout = sa.Size, sa.Used, sa.Layout
		a.Mtime, a.Ctime = now, now
		if _, err := db.c.exec("UPDATE inodes SET size = ?, used = ?, layout = ?, mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
			a.Size, a.Used, int(a.Layout), ns, ns, dst); err != nil {
			return fmt.Errorf("update inode %d: %w", dst, err)
		}
		return nil
	})
	if err != nil {
		return Attr{}, fmt.Errorf("clone inode %d to %d: %w", src, dst, err)
	}
	return a, nil
}

// CloneImageRange makes n pages of image dst from page dstPage on map
// what n pages of image src from page srcPage on map (holes stay holes),
// and sets dst's size to at least size. dst may be a plain file without
// data: it becomes an image. This is copy_file_range of whole pages.
func (db *DB) CloneImageRange(ctx context.Context, src Ino, srcPage uint64, dst Ino, dstPage, n, size uint64) (Attr, error) {
	var a Attr
	err := db.write(func() error {
		sa, da, err := db.cloneAttrs(src, dst)
		if err != nil {
			return err
		}
		if sa.Layout != LayoutImage {
			return syscall.EINVAL
		}
		if n == 0 {
			a = da
			return nil
		}
		if srcPage > math.MaxInt64-n || dstPage > math.MaxInt64-n {
			return syscall.EFBIG
		}
		if da.Layout != LayoutImage {
			if da.Used > 0 {
				return syscall.EINVAL
			}
			if _, err := db.dropChunks(dst, 0, math.MaxInt64, time.Now().UnixNano()); err != nil {
				return err
			}
			da.Layout = LayoutImage
		}
		es, err := db.extents(src, srcPage, srcPage+n)
		if err != nil {
			return fmt.Errorf("extents of %d: %w", src, err)
		}
		touched := make(map[uint64]int64)
		removed, err := db.dropExtents(dst, dstPage, dstPage+n, touched)
		if err != nil {
			return err
		}
		var added uint64
		for _, e := range es {
			lo, hi := max(e.Page, srcPage), min(e.End(), srcPage+n)
			if lo >= hi {
				continue
			}
			ne := Extent{Page: dstPage + (lo - srcPage), N: uint32(hi - lo), Block: e.Block, BlockPage: e.BlockPage + uint32(lo-e.Page)}
			if err := db.insertExtent(dst, ne); err != nil {
				return err
			}
			touched[e.Block] += int64(ne.N)
			added += uint64(ne.N)
		}
		now := time.Now()
		if err := db.applyLive(touched, now.UnixNano()); err != nil {
			return err
		}
		used := da.Used + added*PageSize - removed*PageSize
		db.ctr.usedBytes += used - da.Used
		a = da
		a.Used, a.Size = used, max(da.Size, size)
		a.Mtime, a.Ctime = now, now
		if _, err := db.c.exec("UPDATE inodes SET size = ?, used = ?, layout = ?, mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
			a.Size, a.Used, int(a.Layout), now.UnixNano(), now.UnixNano(), dst); err != nil {
			return fmt.Errorf("update inode %d: %w", dst, err)
		}
		return nil
	})
	if err != nil {
		return Attr{}, fmt.Errorf("clone pages of inode %d to %d: %w", src, dst, err)
	}
	return a, nil
}

// cloneAttrs returns the attributes of a clone's source and destination:
// two different regular files.
func (db *DB) cloneAttrs(src, dst Ino) (Attr, Attr, error) {
	if src == dst {
		return Attr{}, Attr{}, syscall.EINVAL
	}
	sa, err := db.getAttr(src)
	if err != nil {
		return Attr{}, Attr{}, err
	}
	da, err := db.getAttr(dst)
	if err != nil {
		return Attr{}, Attr{}, err
	}
	if sa.Mode&syscall.S_IFMT != syscall.S_IFREG || da.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return Attr{}, Attr{}, syscall.EINVAL
	}
	return sa, da, nil
}

// freeChunkBlock frees block id of a chunk row just dropped or replaced,
// unless another chunk row (a clone's) still names it.
func (db *DB) freeChunkBlock(id uint64, now int64) error {
	if id == 0 {
		return nil
	}
	var one int64
	ok, err := db.c.queryRow("SELECT 1 FROM chunks WHERE block_id = ? LIMIT 1", []any{id}, &one)
	if err != nil {
		return fmt.Errorf("references of block %d: %w", id, err)
	}
	if ok {
		return nil
	}
	return db.freeBlock(id, now)
}

// ExclusiveBytes returns the bytes of the packs that only the device
// images directly in directory dir map: what deleting them all gives back
// to the store (a checkpoint's cost, docs/checkpoints.md). A pack that
// any other file maps counts nothing. Chunks of plain files are not
// counted.
func (db *DB) ExclusiveBytes(ctx context.Context, dir Ino) (uint64, error) {
	var total uint64
	err := db.read(func() error {
		refs := map[uint64]int64{}
		err := db.c.each("SELECT e.block, sum(e.n) FROM dentries d JOIN extents e ON e.ino = d.ino WHERE d.parent = ? GROUP BY e.block",
			[]any{dir}, func(r *rows) error {
				refs[uint64(r.int(0))] = r.int(1)
				return nil
			})
		if err != nil {
			return err
		}
		for id, n := range refs {
			var pages, live int64
			ok, err := db.c.queryRow("SELECT pages, live FROM packs WHERE id = ?", []any{id}, &pages, &live)
			if err != nil {
				return err
			}
			if ok && live == n {
				total += uint64(pages) * PageSize
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("exclusive bytes of directory %d: %w", dir, err)
	}
	return total, nil
}

// SnapshotTo writes a consistent copy of the database, as of now, to a
// new file at path (VACUUM INTO): what is committed and what the open
// transaction holds, which it commits first. It is how a volume is forked
// (docs/checkpoints.md).
func (db *DB) SnapshotTo(ctx context.Context, path string) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.usable(); err != nil {
		return err
	}
	if db.readOnly {
		return syscall.EROFS
	}
	if err := db.commitTxLocked(); err != nil {
		return err
	}
	q := "VACUUM INTO '" + strings.ReplaceAll(path, "'", "''") + "'"
	err := db.c.execScript(q)
	if berr := db.beginTxLocked(); err == nil {
		err = berr
	}
	if err != nil {
		return fmt.Errorf("snapshot metadata to %s: %w", path, err)
	}
	return db.syncWALLocked()
}

// SetSetting changes a volume setting (for a fork: its uuid).
func (db *DB) SetSetting(ctx context.Context, key, value string) error {
	return db.write(func() error {
		if _, err := db.c.exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", key, value); err != nil {
			return fmt.Errorf("set %s: %w", key, err)
		}
		return nil
	})
}
