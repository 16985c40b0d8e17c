package vfs

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// groupCommit is the group commit: it runs an expensive durability step
// (an fsync, a database commit) on behalf of every caller that asks for
// durability, and callers that ask while a round runs share the next round
// instead of starting one each. Like Pebble's commit pipeline, the effect is
// passed in (sync), so that tests can drive it with faults.
//
// A caller's changes are durable when Wait returns nil: the round it waited
// for started after the caller's changes were made, and sync makes
// everything made before it started durable.
type groupCommit struct {
	// sync makes every change made before it was called durable.
	sync func(ctx context.Context) error
	// ctx is what sync runs with, not a caller's: a cancelled request must
	// not break a round that others wait for.
	ctx context.Context

	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // number of the latest round started
	done    uint64 // number of the latest round finished
	running bool
	err     error // of the latest round finished
	waiters int   // callers inside Wait (for tests)
}

func newGroupCommit(ctx context.Context, syncFn func(context.Context) error) *groupCommit {
	g := &groupCommit{sync: syncFn, ctx: ctx}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// next is the number of the first round that will start after now: once
// finished() reaches it, everything made before now is durable.
func (g *groupCommit) next() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started + 1
}

// finished is the number of the latest round finished without error.
func (g *groupCommit) finished() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return 0
	}
	return g.done
}

// Wait returns once a round that started after Wait was called has
// finished, with that round's error.
func (g *groupCommit) Wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiters++
	defer func() { g.waiters-- }()
	target := g.started + 1
	for g.done < target {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		round := g.started
		g.mu.Unlock()
		err := g.sync(g.ctx)
		g.mu.Lock()
		g.running = false
		g.done = round
		g.err = err
		g.cond.Broadcast()
	}
	return g.err
}

// commitLoop makes everything durable every CommitInterval (the bound on
// losing writes that were never fsynced), or at once when kicked.
func (fs *FS) commitLoop() {
	defer fs.loops.Done()
	t := time.NewTicker(fs.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-t.C:
		case <-fs.kick:
		}
		err := fs.Sync(fs.bg)
		if err != nil {
			fs.flushErr.Store(&err)
			if fs.bg.Err() == nil {
				fs.report("commit", err)
			}
		} else {
			fs.flushErr.Store(nil)
		}
		fs.mem.wake()
	}
}

// kickCommit asks the commit loop for a round as soon as possible.
func (fs *FS) kickCommit() {
	select {
	case fs.kick <- struct{}{}:
	default:
	}
}

// commit makes every meta call made before it was called durable. Callers
// that arrive while a commit runs share the next one.
func (fs *FS) commit(ctx context.Context) error {
	if err := fs.metaCommit.Wait(); err != nil {
		return fmt.Errorf("commit metadata: %w", err)
	}
	return nil
}
