package meta

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"time"
)

// PageSize is the unit of a device image's extent map: the block size of
// the kernel filesystems that write images.
const PageSize = 4096

// MaxExtentPages bounds an extent: it lies within one pack, which holds at
// most ChunkSize bytes.
const MaxExtentPages = ChunkSize / PageSize

// Extent maps N pages of a device image, from Page on, to the pages of a
// pack from BlockPage on.
type Extent struct {
	Page      uint64
	N         uint32
	Block     uint64
	BlockPage uint32
}

// End is the page after the extent.
func (e Extent) End() uint64 { return e.Page + uint64(e.N) }

// PageRange is N pages from Page on.
type PageRange struct {
	Page, N uint64
}

// Pack is a newly stored pack: an immutable block holding Pages pages.
type Pack struct {
	ID    uint64
	Pages uint32
}

// ImageUpdate is what folding a device image's writes from the write-ahead
// log records, atomically: Holes drop the extents in their pages, then
// each of Extents replaces whatever mapped its pages.
type ImageUpdate struct {
	Ino     Ino
	Size    uint64
	Holes   []PageRange
	Extents []Extent
	Mtime   time.Time // zero: leave as is
	Ctime   time.Time // zero: leave as is
}

// IOStats are a volume's cumulative byte counts since it was formatted (or
// since this version counts them): the terms of write amplification,
// (Uploaded) / (Written).
type IOStats struct {
	Written     uint64 `json:"written_bytes"`      // bytes of file writes received: what the workload wrote
	WAL         uint64 `json:"wal_bytes"`          // bytes appended to the local write-ahead log of device images
	Uploaded    uint64 `json:"uploaded_bytes"`     // bytes of blocks written to the object store, as stored (compressed)
	UploadedRaw uint64 `json:"uploaded_raw_bytes"` // the same blocks before compression
}

// AddIO adds d to the volume's IO counters. Like every change, it becomes
// durable with the next Commit.
func (db *DB) AddIO(d IOStats) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.ctr.io.Written += d.Written
	db.ctr.io.WAL += d.WAL
	db.ctr.io.Uploaded += d.Uploaded
	db.ctr.io.UploadedRaw += d.UploadedRaw
}

// IO returns the volume's IO counters.
func (db *DB) IO(ctx context.Context) (IOStats, error) {
	var io IOStats
	err := db.read(func() error {
		ctr := db.ctr
		if db.readOnly {
			var err error
			if ctr, _, err = loadCounters(db.c); err != nil {
				return err
			}
		}
		io = ctr.io
		return nil
	})
	return io, err
}

// WALState returns the identity of the write-ahead log the volume's
// extents were folded from ("" before the first) and the log position
// everything before which they hold.
func (db *DB) WALState(ctx context.Context) (id string, checkpoint uint64, err error) {
	err = db.read(func() error {
		if _, err := db.c.queryRow("SELECT value FROM settings WHERE key = 'wal_id'", nil, &id); err != nil {
			return err
		}
		ctr := db.ctr
		if db.readOnly {
			var err error
			if ctr, _, err = loadCounters(db.c); err != nil {
				return err
			}
		}
		checkpoint = ctr.walCheckpoint
		return nil
	})
	if err != nil {
		return "", 0, fmt.Errorf("read write-ahead log state: %w", err)
	}
	return id, checkpoint, nil
}

// SetWAL records a new write-ahead log: its identity and where it starts.
func (db *DB) SetWAL(ctx context.Context, id string, checkpoint uint64) error {
	err := db.write(func() error {
		if _, err := db.c.exec("INSERT OR REPLACE INTO settings (key, value) VALUES ('wal_id', ?)", id); err != nil {
			return err
		}
		db.ctr.walCheckpoint = checkpoint
		return nil
	})
	if err != nil {
		return fmt.Errorf("record write-ahead log %s: %w", id, err)
	}
	return nil
}

// SetWALCheckpoint records that the extents hold everything the
// write-ahead log had before position cp. It goes into the same
// transaction as the updates it follows.
func (db *DB) SetWALCheckpoint(ctx context.Context, cp uint64) error {
	return db.write(func() error {
		db.ctr.walCheckpoint = cp
		return nil
	})
}

// SetLayout makes ino, a regular file without data, a device image. Data
// already kept in chunks cannot be converted: EBUSY. Setting the layout a
// file has is a no-op.
func (db *DB) SetLayout(ctx context.Context, ino Ino, l Layout) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.getAttr(ino)
		if err != nil {
			return err
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return syscall.EINVAL
		}
		if a.Layout == l {
			return nil
		}
		if l != LayoutImage {
			return syscall.EINVAL // an image stays an image
		}
		var chunks int64
		if _, err := db.c.queryRow("SELECT count(*) FROM chunks WHERE ino = ?", []any{ino}, &chunks); err != nil {
			return fmt.Errorf("count chunks of %d: %w", ino, err)
		}
		if chunks > 0 {
			return syscall.EBUSY
		}
		a.Layout = l
		a.Ctime = time.Now()
		if _, err := db.c.exec("UPDATE inodes SET layout = ?, ctime_ns = ? WHERE ino = ?", int(l), a.Ctime.UnixNano(), ino); err != nil {
			return fmt.Errorf("update inode %d: %w", ino, err)
		}
		return nil
	})
	return a, err
}

// Extents returns the extents of image ino that map pages in [from, to),
// in page order (unclipped).
func (db *DB) Extents(ctx context.Context, ino Ino, from, to uint64) ([]Extent, error) {
	var out []Extent
	err := db.read(func() (err error) {
		out, err = db.extents(ino, from, to)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("extents of %d: %w", ino, err)
	}
	return out, nil
}

func (db *DB) extents(ino Ino, from, to uint64) ([]Extent, error) {
	if to <= from {
		return nil, nil
	}
	lo := uint64(0)
	if from > MaxExtentPages-1 {
		lo = from - (MaxExtentPages - 1)
	}
	var out []Extent
	err := db.c.each("SELECT page, n, block, bpage FROM extents WHERE ino = ? AND page >= ? AND page < ? ORDER BY page",
		[]any{ino, clampIdx(lo), clampIdx(to)}, func(r *rows) error {
			e := Extent{Page: uint64(r.int(0)), N: uint32(r.int(1)), Block: uint64(r.int(2)), BlockPage: uint32(r.int(3))}
			if e.End() > from {
				out = append(out, e)
			}
			return nil
		})
	return out, err
}

// AddPacks records newly stored packs, with nothing referencing them yet:
// the UpdateImage calls that follow do, and FreeIdlePacks frees those left
// unreferenced.
func (db *DB) AddPacks(ctx context.Context, packs []Pack) error {
	err := db.write(func() error {
		now := time.Now().UnixNano()
		for _, p := range packs {
			if _, err := db.c.exec("INSERT INTO packs (id, pages, live, created_ns) VALUES (?, ?, 0, ?)", p.ID, p.Pages, now); err != nil {
				return fmt.Errorf("pack %d: %w", p.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record packs: %w", err)
	}
	return nil
}

// FreeIdlePacks frees the packs among ids that nothing references.
func (db *DB) FreeIdlePacks(ctx context.Context, ids []uint64) error {
	err := db.write(func() error {
		now := time.Now().UnixNano()
		for _, id := range ids {
			if err := db.livePages(id, 0, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("free idle packs: %w", err)
	}
	return nil
}

// livePages adds d to pack id's live pages and frees the pack when nothing
// references it any more.
func (db *DB) livePages(id uint64, d int64, now int64) error {
	var live int64
	ok, err := db.c.queryRow("UPDATE packs SET live = live + ? WHERE id = ? RETURNING live", []any{d, id}, &live)
	if err != nil {
		return fmt.Errorf("pack %d: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("pack %d is not recorded", id)
	}
	if live < 0 {
		return fmt.Errorf("pack %d: live pages would be negative", id)
	}
	if live > 0 {
		return nil
	}
	if _, err := db.c.exec("DELETE FROM packs WHERE id = ?", id); err != nil {
		return fmt.Errorf("pack %d: %w", id, err)
	}
	return db.freeBlock(id, now)
}

// applyLive applies the live page changes of touched packs.
func (db *DB) applyLive(touched map[uint64]int64, now int64) error {
	for id, d := range touched {
		if d == 0 {
			continue
		}
		if err := db.livePages(id, d, now); err != nil {
			return err
		}
	}
	return nil
}

// dropExtents removes image ino's mapping of pages [from, to): extents
// inside go, extents across an edge are cut. It returns the pages it
// unmapped and counts them off the packs in touched.
func (db *DB) dropExtents(ino Ino, from, to uint64, touched map[uint64]int64) (uint64, error) {
	es, err := db.extents(ino, from, to)
	if err != nil {
		return 0, fmt.Errorf("extents of %d: %w", ino, err)
	}
	var removed uint64
	for _, e := range es {
		if e.Page >= to {
			break
		}
		if _, err := db.c.exec("DELETE FROM extents WHERE ino = ? AND page = ?", ino, clampIdx(e.Page)); err != nil {
			return 0, fmt.Errorf("drop extent of %d: %w", ino, err)
		}
		lo, hi := max(e.Page, from), min(e.End(), to)
		removed += hi - lo
		touched[e.Block] -= int64(hi - lo)
		if e.Page < from {
			if err := db.insertExtent(ino, Extent{Page: e.Page, N: uint32(from - e.Page), Block: e.Block, BlockPage: e.BlockPage}); err != nil {
				return 0, err
			}
		}
		if e.End() > to {
			if err := db.insertExtent(ino, Extent{Page: to, N: uint32(e.End() - to), Block: e.Block, BlockPage: e.BlockPage + uint32(to-e.Page)}); err != nil {
				return 0, err
			}
		}
	}
	return removed, nil
}

func (db *DB) insertExtent(ino Ino, e Extent) error {
	if _, err := db.c.exec("INSERT INTO extents (ino, page, n, block, bpage) VALUES (?, ?, ?, ?, ?)",
		ino, clampIdx(e.Page), e.N, e.Block, e.BlockPage); err != nil {
		return fmt.Errorf("put extent %d of %d: %w", e.Page, ino, err)
	}
	return nil
}

// pagesFor is the number of pages that hold size bytes.
func pagesFor(size uint64) uint64 { return (size + PageSize - 1) / PageSize }

// UpdateImage applies u to image u.Ino atomically. It fails with ENOENT
// if the inode is gone and EINVAL if it is not a device image.
func (db *DB) UpdateImage(ctx context.Context, u ImageUpdate) (Attr, error) {
	var a Attr
	err := db.write(func() (err error) {
		a, err = db.getAttr(u.Ino)
		if err != nil {
			return err
		}
		if a.Mode&syscall.S_IFMT != syscall.S_IFREG || a.Layout != LayoutImage {
			return syscall.EINVAL
		}
		touched := make(map[uint64]int64)
		mapped := int64(a.Used / PageSize)
		for _, h := range u.Holes {
			n, err := db.dropExtents(u.Ino, h.Page, h.Page+h.N, touched)
			if err != nil {
				return err
			}
			mapped -= int64(n)
		}
		for _, e := range u.Extents {
			if e.N == 0 || e.N > MaxExtentPages {
				return fmt.Errorf("extent %d of %d: %d pages: %w", e.Page, u.Ino, e.N, syscall.EINVAL)
			}
			n, err := db.dropExtents(u.Ino, e.Page, e.End(), touched)
			if err != nil {
				return err
			}
			if err := db.insertExtent(u.Ino, e); err != nil {
				return err
			}
			touched[e.Block] += int64(e.N)
			mapped += int64(e.N) - int64(n)
		}
		// Nothing is mapped past the end of the file.
		n, err := db.dropExtents(u.Ino, pagesFor(u.Size), math.MaxInt64, touched)
		if err != nil {
			return err
		}
		mapped -= int64(n)
		if mapped < 0 {
			return fmt.Errorf("inode %d: mapped pages would be negative", u.Ino)
		}
		if err := db.applyLive(touched, time.Now().UnixNano()); err != nil {
			return err
		}
		used := uint64(mapped) * PageSize
		db.ctr.usedBytes += used - a.Used
		a.Used, a.Size = used, u.Size
		if !u.Mtime.IsZero() {
			a.Mtime = u.Mtime
		}
		if !u.Ctime.IsZero() {
			a.Ctime = u.Ctime
		}
		if _, err := db.c.exec("UPDATE inodes SET size = ?, used = ?, mtime_ns = ?, ctime_ns = ? WHERE ino = ?",
			a.Size, a.Used, a.Mtime.UnixNano(), a.Ctime.UnixNano(), u.Ino); err != nil {
			return fmt.Errorf("update inode %d: %w", u.Ino, err)
		}
		return nil
	})
	return a, err
}

// dropAllExtents unmaps every page of ino (for Purge).
func (db *DB) dropAllExtents(ino Ino, now int64) error {
	touched := make(map[uint64]int64)
	err := db.c.each("SELECT block, sum(n) FROM extents WHERE ino = ? GROUP BY block", []any{ino}, func(r *rows) error {
		touched[uint64(r.int(0))] -= r.int(1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("extents of %d: %w", ino, err)
	}
	if len(touched) == 0 {
		return nil
	}
	if _, err := db.c.exec("DELETE FROM extents WHERE ino = ?", ino); err != nil {
		return fmt.Errorf("drop extents of %d: %w", ino, err)
	}
	return db.applyLive(touched, now)
}
