package meta

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"time"
)

// Orphans returns the inodes with nlink 0 (unlinked while open).
func (db *DB) Orphans(ctx context.Context) ([]Ino, error) {
	var out []Ino
	err := db.read(func() error {
		return db.c.each("SELECT ino FROM inodes WHERE nlink = 0", nil, func(r *rows) error {
			out = append(out, Ino(r.int(0)))
			return nil
		})
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
		return db.c.each("SELECT id, freed_at_ns FROM freed_blocks WHERE freed_at_ns <= ? ORDER BY id", []any{cutoff.UnixNano()}, func(r *rows) error {
			out = append(out, FreedBlock{ID: uint64(r.int(0)), FreedAt: time.Unix(0, r.int(1))})
			return nil
		})
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
		return db.c.each("SELECT block_id FROM chunks WHERE block_id != 0 UNION ALL SELECT id FROM packs", nil, func(r *rows) error {
			ids = append(ids, uint64(r.int(0)))
			return nil
		})
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
