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
		return db.c.each("SELECT idx, len, block_id, inline, used FROM chunks WHERE ino = ? AND idx >= ? AND idx < ? ORDER BY idx",
			[]any{ino, clampIdx(from), clampIdx(to)}, func(r *rows) error {
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
				return nil
			})
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
	var dropped uint64
	var blocks []uint64
	n := 0
	err := db.c.each("SELECT used, block_id FROM chunks WHERE ino = ? AND idx >= ? AND idx < ?",
		[]any{ino, clampIdx(from), clampIdx(to)}, func(r *rows) error {
			n++
			dropped += uint64(r.int(0))
			if b := uint64(r.int(1)); b != 0 {
				blocks = append(blocks, b)
			}
			return nil
		})
	if err != nil {
		return 0, fmt.Errorf("drop chunks of %d: %w", ino, err)
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := db.c.exec("DELETE FROM chunks WHERE ino = ? AND idx >= ? AND idx < ?", ino, clampIdx(from), clampIdx(to)); err != nil {
		return 0, fmt.Errorf("drop chunks of %d: %w", ino, err)
	}
	for _, b := range blocks {
		if err := db.freeChunkBlock(b, now); err != nil {
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
				if err := db.freeChunkBlock(oldBlock, now); err != nil {
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
