package vfs

import (
	"context"
	"fmt"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
)

// GCOptions tune a garbage collection.
type GCOptions struct {
	// Grace is how long a block stays in the store after nothing
	// references it any more: a read that looked the block up before it
	// was freed may still be loading it.
	Grace time.Duration
	// Offline says that nothing else has the volume open (`ohm fs gc`).
	// The collection then also purges orphans (inodes unlinked while open
	// when a mount died), deletes blocks that nothing references and the
	// freed list does not know (stored by a mount that died before it
	// recorded them; kept while younger than Grace, as an upload of a
	// running mount would be), and removes the object store's temporary
	// leftovers of interrupted writes. It lists the whole store, which a
	// mounted volume does not do every minute.
	Offline bool
}

// GCResult says what a garbage collection did.
type GCResult struct {
	DeletedBlocks uint64 `json:"deleted_blocks"`
	DeletedBytes  uint64 `json:"deleted_bytes"`  // stored sizes, known when the store was listed (offline)
	KeptYoung     uint64 `json:"kept_young"`     // unreferenced but younger than the grace period
	PurgedOrphans uint64 `json:"purged_orphans"` // files unlinked while open before a crash, now deleted
	TempFiles     uint64 `json:"temp_files"`     // crash leftovers of interrupted writes, removed
}

// collector is the one garbage collector of a volume: the mounted FS runs
// it every GCInterval (online) and `ohm fs gc` runs it on a volume nothing
// has open (offline, see GCOptions.Offline).
//
// A block is deleted only once a committed transaction has dropped every
// reference to it: a crash rolls back the open transaction, and a block
// whose free was not committed could come back referenced. So a
// collection commits first and considers only what was freed before that
// commit began.
type collector struct {
	m      *meta.DB
	b      *blockstore.Store
	commit func(ctx context.Context) error
}

// Collect runs one garbage collection over the volume whose metadata is m
// and blocks are b, with nothing else holding it open when opts.Offline.
func Collect(ctx context.Context, m *meta.DB, b *blockstore.Store, opts GCOptions) (GCResult, error) {
	c := collector{m: m, b: b, commit: m.Commit}
	return c.collect(ctx, opts)
}

func (c collector) collect(ctx context.Context, opts GCOptions) (GCResult, error) {
	var res GCResult
	if opts.Offline {
		n, err := purgeOrphans(ctx, c.m)
		res.PurgedOrphans = uint64(n)
		if err != nil {
			return res, err
		}
	}
	start := time.Now()
	if err := c.commit(ctx); err != nil {
		return res, fmt.Errorf("gc: commit: %w", err)
	}
	cutoff := time.Now().Add(-opts.Grace)
	if start.Before(cutoff) {
		cutoff = start
	}

	var stored map[uint64]StoredBlock
	var referenced map[uint64]bool
	if opts.Offline {
		var err error
		if stored, err = ListBlocks(ctx, c.b); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		referenced = make(map[uint64]bool)
		if err := c.m.ReferencedBlocks(ctx, func(id uint64) error { referenced[id] = true; return nil }); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	freed, err := c.m.FreedBlocks(ctx, time.Now())
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	inFreed := make(map[uint64]bool, len(freed))
	var forget []uint64
	var firstErr error
	for _, fb := range freed {
		inFreed[fb.ID] = true
		if fb.FreedAt.After(cutoff) || referenced[fb.ID] {
			continue // a referenced block in the freed list would be a meta bug: never delete it
		}
		// The objects go first: a crash before ForgetFreed only leaves
		// ids whose deletion is repeated.
		if err := c.b.Delete(ctx, fb.ID); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("gc: %w", err)
			}
			continue
		}
		res.DeletedBlocks++
		if sb, ok := stored[fb.ID]; ok {
			res.DeletedBytes += uint64(sb.Size)
			delete(stored, fb.ID)
		}
		forget = append(forget, fb.ID)
	}
	if len(forget) > 0 {
		if err := c.m.ForgetFreed(ctx, forget); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		if err := c.commit(ctx); err != nil {
			return res, fmt.Errorf("gc: commit: %w", err)
		}
	}
	if !opts.Offline {
		return res, firstErr
	}

	// Blocks nothing references and the freed list does not know: stored
	// by a mount that died before committing the chunks that named them.
	for id, sb := range stored {
		if referenced[id] {
			continue
		}
		if inFreed[id] || !sb.MTime.Before(cutoff) {
			res.KeptYoung++
			continue
		}
		if err := c.b.Delete(ctx, id); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		res.DeletedBlocks++
		res.DeletedBytes += uint64(sb.Size)
	}
	n, err := c.b.CleanTemp(ctx, opts.Grace)
	res.TempFiles = uint64(n)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	return res, firstErr
}

// StoredBlock is a block as its store lists it.
type StoredBlock struct {
	Size  int64     // bytes stored (compressed, with its header)
	MTime time.Time // when it was written
}

// ListBlocks lists the blocks in b by ID: what GC and fsck compare with
// the blocks the metadata references.
func ListBlocks(ctx context.Context, b *blockstore.Store) (map[uint64]StoredBlock, error) {
	stored := make(map[uint64]StoredBlock)
	err := b.List(ctx, func(id uint64, size int64, mtime time.Time) error {
		stored[id] = StoredBlock{size, mtime}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	return stored, nil
}

// purgeOrphans deletes the inodes unlinked while open before the volume
// was last closed (or its mount died): nothing can open them again. It
// commits, so that their blocks are freed for a later collection.
func purgeOrphans(ctx context.Context, m *meta.DB) (int, error) {
	orphans, err := m.Orphans(ctx)
	if err != nil {
		return 0, fmt.Errorf("list orphans: %w", err)
	}
	for i, ino := range orphans {
		if err := m.Purge(ctx, ino); err != nil {
			return i, fmt.Errorf("purge orphan inode %d: %w", ino, err)
		}
	}
	if len(orphans) > 0 {
		if err := m.Commit(ctx); err != nil {
			return 0, fmt.Errorf("commit orphan purge: %w", err)
		}
	}
	return len(orphans), nil
}

// gcLoop collects garbage every GCInterval until the FS closes, reporting
// what fails.
func (fs *FS) gcLoop() {
	defer fs.loops.Done()
	t := time.NewTicker(fs.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-t.C:
		}
		if _, err := fs.GC(fs.bg); err != nil && fs.bg.Err() == nil {
			fs.report("gc", err)
		}
	}
}

// GC runs one online garbage collection: blocks freed (by committed
// transactions) longer than Config.GCGrace ago are deleted.
func (fs *FS) GC(ctx context.Context) (GCResult, error) {
	c := collector{m: fs.m, b: fs.b, commit: fs.commit}
	res, err := c.collect(ctx, GCOptions{Grace: fs.cfg.GCGrace})
	fs.stats.gcRuns.Add(1)
	fs.stats.gcDeleted.Add(res.DeletedBlocks)
	return res, err
}
