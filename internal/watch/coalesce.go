package watch

import "strings"

// coalescer merges the events of one window per path, so that a burst
// (an npm install writes each of its tens of thousands of files several
// times) comes out as one event per path: created then modified is
// created, modified then deleted is deleted, created then deleted is
// nothing. A move is kept as it is and is a barrier: events on its old or
// new path (or below, for a directory) after it are not merged into ones
// before it, so the order a client replays them in stays right.
//
// It holds at most max pending entries; events beyond are dropped and
// counted, for the Overflow event that tells the client to rescan.
type coalescer struct {
	max     int
	pending []Event        // in order of first appearance; Kind "" is a removed entry
	live    int            // entries of pending not removed
	index   map[string]int // path -> its mergeable entry in pending
	dropped int
}

func newCoalescer(max int) *coalescer {
	return &coalescer{max: max, index: map[string]int{}}
}

// add adds e (never an Overflow) to the window.
func (c *coalescer) add(e Event) {
	if e.Kind == Moved {
		c.cut(e.OldPath, e.Dir)
		c.cut(e.Path, e.Dir)
		c.push(e)
		return
	}
	i, ok := c.index[e.Path]
	if !ok {
		if c.push(e) {
			c.index[e.Path] = len(c.pending) - 1
		}
		return
	}
	prev := &c.pending[i]
	switch merge(prev.Kind, e.Kind) {
	case "":
		prev.Kind = ""
		c.live--
		delete(c.index, e.Path)
	case Created:
		prev.Kind, prev.Dir = Created, e.Dir
	case Modified:
		prev.Kind = Modified
	case Deleted:
		prev.Kind, prev.Dir = Deleted, e.Dir
	}
}

// merge is the kind of an entry of kind prev after an event of kind next
// on the same path; "" removes it.
func merge(prev, next Kind) Kind {
	switch {
	case prev == Created && next == Deleted:
		return "" // came and went within the window
	case prev == Created:
		return Created // created then modified (or created again) is created
	case next == Created:
		return Created // deleted then created: a new object at the path
	case next == Deleted:
		return Deleted
	default:
		return Modified
	}
}

// push appends e unless the window is full, in which case e is counted as
// dropped.
func (c *coalescer) push(e Event) bool {
	if c.live >= c.max {
		c.dropped++
		return false
	}
	c.pending = append(c.pending, e)
	c.live++
	return true
}

// cut makes later events on p (and, for a directory, below it) start new
// entries.
func (c *coalescer) cut(p string, dir bool) {
	delete(c.index, p)
	if !dir {
		return
	}
	prefix := p + "/"
	for q := range c.index {
		if strings.HasPrefix(q, prefix) {
			delete(c.index, q)
		}
	}
}

// take returns the window's events, in order, and how many were dropped,
// and starts a new window.
func (c *coalescer) take() ([]Event, int) {
	out := make([]Event, 0, c.live)
	for _, e := range c.pending {
		if e.Kind != "" {
			out = append(out, e)
		}
	}
	dropped := c.dropped
	c.pending, c.live, c.dropped = c.pending[:0], 0, 0
	clear(c.index)
	return out, dropped
}

// empty reports whether the window holds nothing.
func (c *coalescer) empty() bool { return c.live == 0 && c.dropped == 0 }
