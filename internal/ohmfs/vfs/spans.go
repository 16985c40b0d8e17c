package vfs

import "github.com/google/btree"

// span says where the newest bytes [start, end) of a device image are,
// when they are newer than the image's extents in meta: in the
// write-ahead log from position data on, or nowhere (hole: the range was
// punched or cut off and reads as zeros).
type span struct {
	start, end uint64
	rec        uint64 // position of the WAL record that set the range (its order)
	hole       bool
	data       uint64 // WAL position of the byte at start, unless hole
}

// from returns the part of s that starts at off (start <= off < end).
func (s span) from(off uint64) span {
	if !s.hole {
		s.data += off - s.start
	}
	s.start = off
	return s
}

// spans is an image's map of ranges newer than its extents: ordered by
// start, never overlapping. Setting a range replaces whatever covered it.
// It is the in-memory index of the write-ahead log's records of one file
// until they are folded into extents.
type spans struct {
	t *btree.BTreeG[span]
}

func newSpans() spans {
	return spans{t: btree.NewG(32, func(a, b span) bool { return a.start < b.start })}
}

func (m spans) len() int {
	if m.t == nil {
		return 0
	}
	return m.t.Len()
}

// set makes s the newest content of [s.start, s.end).
func (m spans) set(s span) {
	if s.end <= s.start {
		return
	}
	var prev span
	found := false
	m.t.DescendLessOrEqual(span{start: s.start}, func(x span) bool {
		prev, found = x, true
		return false
	})
	if found && prev.end > s.start {
		m.t.Delete(prev)
		if prev.start < s.start {
			left := prev
			left.end = s.start
			m.t.ReplaceOrInsert(left)
		}
		if prev.end > s.end {
			m.t.ReplaceOrInsert(prev.from(s.end))
		}
	}
	var inside []span
	m.t.AscendRange(span{start: s.start}, span{start: s.end}, func(x span) bool {
		inside = append(inside, x)
		return true
	})
	for _, x := range inside {
		m.t.Delete(x)
		if x.end > s.end {
			m.t.ReplaceOrInsert(x.from(s.end))
		}
	}
	m.t.ReplaceOrInsert(s)
}

// overlapping calls fn, in order, for the spans that overlap [start, end),
// until fn returns false. The spans are not clipped.
func (m spans) overlapping(start, end uint64, fn func(span) bool) {
	if m.len() == 0 || end <= start {
		return
	}
	stop := false
	m.t.DescendLessOrEqual(span{start: start}, func(x span) bool {
		if x.end > start {
			stop = !fn(x)
		}
		return false
	})
	if stop {
		return
	}
	m.t.AscendRange(span{start: start + 1}, span{start: end}, fn)
}

// each calls fn for every span in order.
func (m spans) each(fn func(span) bool) {
	if m.len() > 0 {
		m.t.Ascend(fn)
	}
}

// dropBefore forgets the spans set by records before position pos: their
// content is in the extents now.
func (m spans) dropBefore(pos uint64) {
	var old []span
	m.each(func(x span) bool {
		if x.rec < pos {
			old = append(old, x)
		}
		return true
	})
	for _, x := range old {
		m.t.Delete(x)
	}
}
