package vfs

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats are an FS's counters since New, for status and metrics.
type Stats struct {
	// BackgroundErrors counts failures of background work no caller waits
	// for (commit loop rounds, garbage collections, deletes); LastError is
	// the latest one ("" if none).
	BackgroundErrors uint64
	LastError        string
	GCRuns           uint64 // online garbage collections run
	GCDeletedBlocks  uint64 // blocks they deleted
}

type counters struct {
	bgErrors  atomic.Uint64
	gcRuns    atomic.Uint64
	gcDeleted atomic.Uint64
}

// reportState keeps repeated background errors from flooding the log: the
// same message is logged again only after reportEvery.
type reportState struct {
	mu       sync.Mutex
	last     string
	loggedAt time.Time
}

const reportEvery = time.Minute

// Stats returns the FS's counters.
func (fs *FS) Stats() Stats {
	fs.reported.mu.Lock()
	last := fs.reported.last
	fs.reported.mu.Unlock()
	return Stats{
		BackgroundErrors: fs.stats.bgErrors.Load(),
		LastError:        last,
		GCRuns:           fs.stats.gcRuns.Load(),
		GCDeletedBlocks:  fs.stats.gcDeleted.Load(),
	}
}

// report records a failure of background work named op: it goes to
// OnError, is kept as the last error and logged (once a minute while it
// repeats), and counted last, so that whoever sees the count sees the rest.
func (fs *FS) report(op string, err error) {
	defer fs.stats.bgErrors.Add(1)
	if fs.cfg.OnError != nil {
		fs.cfg.OnError(op, err)
	}
	msg := "ohmfs: " + op + ": " + err.Error()
	r := &fs.reported
	r.mu.Lock()
	defer r.mu.Unlock()
	if msg == r.last && time.Since(r.loggedAt) < reportEvery {
		return
	}
	r.last, r.loggedAt = msg, time.Now()
	fs.cfg.Logger.Error("ohmfs background work failed", "op", op, "err", err)
}
