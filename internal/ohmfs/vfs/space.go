package vfs

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultReserve is the host disk space a volume leaves free by default:
// writes that would eat into it fail with ENOSPC, so that a workspace can
// fill neither the host's disk nor its neighbours'.
const DefaultReserve = 1 << 30

// spaceGuard refuses writes once the host filesystem that holds the
// volume's local data would drop below the reserve. Asking the host for its
// free space on every write would cost a syscall per FUSE request, so the
// answer is reused until 100 ms have passed or 64 MiB were accepted since.
type spaceGuard struct {
	free    func() (uint64, error) // nil: no check
	reserve uint64

	mu      sync.Mutex
	checked time.Time
	avail   uint64 // free bytes at checked
	since   atomic.Uint64
}

const (
	spaceRecheckAfter = 100 * time.Millisecond
	spaceRecheckBytes = 64 << 20
)

// admit accounts for n more bytes about to be stored (pending counts what
// is accepted but not yet on the host's disk) and fails with ENOSPC when
// they would cut into the reserve.
func (g *spaceGuard) admit(n, pending uint64) error {
	if g.free == nil {
		return nil
	}
	since := g.since.Add(n)
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.checked) > spaceRecheckAfter || since > spaceRecheckBytes || g.checked.IsZero() {
		avail, err := g.free()
		if err != nil {
			// Not knowing is no reason to refuse work: the host's own
			// ENOSPC still stops a write that cannot be stored.
			return nil
		}
		g.avail, g.checked = avail, time.Now()
		g.since.Store(n)
		since = n
	}
	if g.avail < g.reserve || g.avail-g.reserve < pending+since {
		return syscall.ENOSPC
	}
	return nil
}

// inodeBytes is what a new inode or entry is taken to cost on the host.
const inodeBytes = 512

// admitSpace is the reserve check for n more bytes, counting the dirty data
// held in memory as already on its way to the host's disk.
func (fs *FS) admitSpace(n uint64) error {
	return fs.space.admit(n, uint64(max(fs.mem.load(), 0)))
}
