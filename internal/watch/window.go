package watch

import (
	"strings"

	"golang.org/x/sys/unix"
)

// raw is one kernel event as read: what happened, to names in directories
// given by file handles not yet resolved to paths.
//
// A handle resolves to the path its directory has when it is resolved,
// not when the event happened: `mv a src/c && mv src renamed` read after
// both renames would report a moved to renamed/c. So a window's events are
// resolved together, at its end, and each is given the paths of its own
// moment by undoing the directory renames that came after it (translate).
type raw struct {
	mask                 uint64
	dfid, oldFid, newFid *fid
}

// dirRename reports whether r is the rename of a directory.
func (r raw) dirRename() bool {
	return r.mask&unix.FAN_RENAME != 0 && r.mask&unix.FAN_ONDIR != 0
}

// maxWindow is how many events a window holds before it is flushed early,
// for the memory a burst can take (a few hundred bytes each).
func maxWindow(maxPending int) int { return 2 * maxPending }

// resolved is one event with the paths it names at the moment it happened.
type resolved struct {
	mask             uint64
	from, to, p      string
	okFrom, okTo, ok bool
}

// translate turns the window's events into coalescer entries and empties
// the window. Walking back from the newest event, every directory rename
// met is undone on the paths of the events before it.
func (f *Feed) translate() {
	clear(f.batch) // paths resolved for earlier windows may have moved since
	type rename struct{ from, to string }
	var later []rename // newest first
	back := func(p string) string {
		for _, r := range later {
			if p == r.to {
				p = r.from
			} else if rest, ok := strings.CutPrefix(p, r.to+"/"); ok {
				p = r.from + "/" + rest
			}
		}
		return p
	}
	out := make([]resolved, len(f.window))
	for i := len(f.window) - 1; i >= 0; i-- {
		r := f.window[i]
		e := resolved{mask: r.mask}
		if r.mask&unix.FAN_RENAME != 0 {
			e.from, e.okFrom = f.pathOf(r.oldFid)
			e.to, e.okTo = f.pathOf(r.newFid)
			e.from, e.to = back(e.from), back(e.to)
		}
		if e.p, e.ok = f.pathOf(r.dfid); e.ok {
			e.p = back(e.p)
		}
		if r.dirRename() && e.okFrom && e.okTo {
			later = append(later, rename{from: e.from, to: e.to})
		}
		out[i] = e
	}
	for _, e := range out {
		f.event(e)
	}
	if len(later) > 0 {
		// Paths remembered from before a window's renames may be stale:
		// keep only those of this pass.
		clear(f.known)
		for k, p := range f.batch {
			f.known[k] = p
		}
	}
	clear(f.window)
	f.window = f.window[:0]
}

// event adds the events of one kernel event. A merged mask is replayed in
// the only order one inode allows (the fid of the target keeps different
// inodes apart): created, changed, deleted.
func (f *Feed) event(e resolved) {
	dir := e.mask&unix.FAN_ONDIR != 0
	if e.mask&unix.FAN_RENAME != 0 {
		inFrom, inTo := e.okFrom && under(e.from, f.opts.Path), e.okTo && under(e.to, f.opts.Path)
		switch {
		case inFrom && inTo:
			f.co.add(Event{Kind: Moved, Path: e.to, OldPath: e.from, Dir: dir})
		case inFrom:
			f.co.add(Event{Kind: Deleted, Path: e.from, Dir: dir})
		case inTo:
			f.co.add(Event{Kind: Created, Path: e.to, Dir: dir})
		}
	}
	// An entry of a directory gone before its event was read resolves
	// to nothing: the directory's own deletion, in its parent, reports it.
	if !e.ok || !under(e.p, f.opts.Path) {
		return
	}
	if e.mask&unix.FAN_CREATE != 0 {
		f.co.add(Event{Kind: Created, Path: e.p, Dir: dir})
	}
	if e.mask&(unix.FAN_MODIFY|unix.FAN_ATTRIB) != 0 {
		f.co.add(Event{Kind: Modified, Path: e.p, Dir: dir})
	}
	if e.mask&unix.FAN_DELETE != 0 {
		f.co.add(Event{Kind: Deleted, Path: e.p, Dir: dir})
	}
}
