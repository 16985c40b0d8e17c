package vfs

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
)

// memGauge counts the bytes of dirty buffers and makes writers wait when
// there are too many.
type memGauge struct {
	n      atomic.Int64
	max    int64
	mu     sync.Mutex
	cond   *sync.Cond
	closed bool
}

func (g *memGauge) init(max int64) {
	g.max = max
	g.cond = sync.NewCond(&g.mu)
}

func (g *memGauge) load() int64 { return g.n.Load() }

func (g *memGauge) charge(n int) { g.n.Add(int64(n)) }

func (g *memGauge) release(n int) {
	if g.n.Add(-int64(n)) <= g.max {
		g.wake()
	}
}

func (g *memGauge) wake() {
	g.mu.Lock()
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *memGauge) close() {
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// throttle makes a writer wait while too much dirty data is in memory,
// asking the commit loop to flush.
func (fs *FS) throttle() error {
	g := &fs.mem
	if g.n.Load() <= g.max {
		return nil
	}
	fs.kickCommit()
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.n.Load() > g.max && !g.closed {
		g.cond.Wait()
		if g.n.Load() <= g.max {
			break
		}
		if p := fs.flushErr.Load(); p != nil {
			return fmt.Errorf("flush dirty data: %v: %w", *p, syscall.EIO)
		}
		fs.kickCommit()
	}
	return nil
}
