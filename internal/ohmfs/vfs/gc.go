package vfs

import (
	"context"
	"fmt"
	"time"
)

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
		_ = fs.GC(fs.bg)
	}
}

// GC deletes the blocks freed longer than the grace period ago and forgets
// them. Only frees that are committed are considered, so that a crash can
// never bring back a chunk whose block is gone.
func (fs *FS) GC(ctx context.Context) error {
	start := time.Now()
	if err := fs.commit(ctx); err != nil {
		return err
	}
	cutoff := time.Now().Add(-fs.cfg.GCGrace)
	if committed := start.Add(-time.Millisecond); committed.Before(cutoff) {
		cutoff = committed
	}
	freed, err := fs.m.FreedBlocks(ctx, cutoff)
	if err != nil {
		return fmt.Errorf("list freed blocks: %w", err)
	}
	if len(freed) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(freed))
	var firstErr error
	for _, fb := range freed {
		if err := fs.b.Delete(ctx, fb.ID); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("delete block %d: %w", fb.ID, err)
			}
			continue
		}
		ids = append(ids, fb.ID)
	}
	if len(ids) > 0 {
		if err := fs.m.ForgetFreed(ctx, ids); err != nil {
			return fmt.Errorf("forget freed blocks: %w", err)
		}
	}
	return firstErr
}
