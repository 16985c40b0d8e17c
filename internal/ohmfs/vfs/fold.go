package vfs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"ohm/internal/ohmfs/meta"
)

// The folder turns the write-ahead log's records into packs and extents
// (docs/durability.md). A round takes the log's end E, and for every image
// with spans set before E reads the current content of the pages those
// spans touch (through the read path: spans first, then extents), packs
// the pages that are not all zeros into new packs, stores them, and
// records the extents, holes and size in meta together with the
// checkpoint E. The spans before E are dropped then; the log's segments
// before E are recycled once that is committed.
//
// Writes go on meanwhile. A page read after a newer write holds the newer
// bytes, which is harmless: every record at or after E is replayed after
// a crash on top of the extents, and each record sets bytes (or a size)
// to a value, so replaying it over a state that already has it, or has a
// later record's bytes, ends in the state the live image had.

// packBuilder collects pages into packs of up to ChunkSize bytes and
// stores each one as it fills, a few at a time.
type packBuilder struct {
	fs  *FS
	ctx context.Context

	cur   []byte
	curID uint64
	packs []meta.Pack

	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
	sent uint64 // bytes given to the store
}

// add puts one page in the current pack and returns where it went.
func (pb *packBuilder) add(page []byte) (uint64, uint32, error) {
	if pb.cur != nil && len(pb.cur)+pageSize > chunkSize {
		pb.flush()
	}
	if pb.cur == nil {
		id, err := pb.fs.m.NewBlockID(pb.ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("new pack id: %w", err)
		}
		pb.cur, pb.curID = make([]byte, 0, chunkSize), id
	}
	bpage := uint32(len(pb.cur) / pageSize)
	pb.cur = append(pb.cur, page...)
	return pb.curID, bpage, nil
}

// flush stores the current pack in the background.
func (pb *packBuilder) flush() {
	if pb.cur == nil {
		return
	}
	data, id := pb.cur, pb.curID
	pb.cur = nil
	pb.packs = append(pb.packs, meta.Pack{ID: id, Pages: uint32(len(data) / pageSize)})
	pb.wg.Add(1)
	pb.fs.uploadSem <- struct{}{}
	go func() {
		defer pb.wg.Done()
		defer func() { <-pb.fs.uploadSem }()
		err := pb.fs.b.Put(pb.ctx, id, data)
		pb.mu.Lock()
		defer pb.mu.Unlock()
		if err != nil && pb.err == nil {
			pb.err = fmt.Errorf("store pack %d: %w", id, err)
		}
		pb.sent += uint64(len(data))
	}()
}

// wait stores what is left and waits for every pack to be stored.
func (pb *packBuilder) wait() error {
	pb.flush()
	pb.wg.Wait()
	return pb.err
}

// discard deletes the packs of a round that failed: nothing references
// them.
func (pb *packBuilder) discard() {
	for _, p := range pb.packs {
		pb.fs.deleteUnreferenced(p.ID)
	}
}

// foldFile is one image's part of a round.
type foldFile struct {
	f          *file
	update     meta.ImageUpdate
	timesDirty bool
	mtime      time.Time
}

// foldRound folds every record before the log's current end, commits,
// and recycles the segments the committed checkpoint passed: the round of
// the folds group commit.
func (fs *FS) foldRound(ctx context.Context) error {
	cp, err := fs.fold(ctx)
	if cerr := fs.commit(ctx); cerr != nil {
		return errors.Join(err, cerr)
	}
	if err != nil {
		return err
	}
	if w := fs.log(); w != nil {
		fs.walCP.Store(cp)
		if err := w.release(cp, fs.walSpares()); err != nil {
			fs.report("recycle write-ahead log segments", err)
		}
	}
	return nil
}

// walSpares is how many recycled segments the log may keep: none while
// the host that holds it is short of space, so that the space of deleted
// data comes back whole once it is folded and collected, rather than
// staying in segment files kept to make fdatasyncs cheaper.
func (fs *FS) walSpares() int {
	if fs.space.free == nil {
		return walSpares
	}
	avail, err := fs.space.free()
	if err == nil && avail < fs.space.reserve+walSpareRoom {
		return 0
	}
	return walSpares
}

// fold folds the log's records into meta's open transaction and returns
// the checkpoint it recorded.
func (fs *FS) fold(ctx context.Context) (uint64, error) {
	fs.foldMu.Lock()
	defer fs.foldMu.Unlock()
	w := fs.log()
	if w == nil {
		return 0, nil
	}
	end := w.position()
	if end == fs.walCP.Load() {
		return end, nil
	}
	fs.mu.Lock()
	var files []*file
	for _, f := range fs.files {
		files = append(files, f)
	}
	fs.mu.Unlock()

	pb := &packBuilder{fs: fs, ctx: ctx}
	var parts []*foldFile
	for _, f := range files {
		part, err := fs.captureFile(ctx, f, end, pb)
		if err != nil {
			pb.wait()
			pb.discard()
			return 0, err
		}
		if part != nil {
			parts = append(parts, part)
		}
	}
	if err := pb.wait(); err != nil {
		pb.discard()
		return 0, err
	}
	var ids []uint64
	for _, p := range pb.packs {
		ids = append(ids, p.ID)
	}
	// The packs may hold bytes of records after end that the capture
	// read: those records are made durable before anything can commit
	// the extents that hold their bytes, or a crash could keep a write
	// without the writes acknowledged before it, and the log's order is
	// what a filesystem without flushes relies on (XattrDurableRanges).
	if err := w.sync(); err != nil {
		pb.discard()
		return 0, fmt.Errorf("sync the write-ahead log before folding: %w", err)
	}
	if err := fs.applyFold(ctx, pb.packs, parts, end); err != nil {
		if ferr := fs.m.FreeIdlePacks(ctx, ids); ferr != nil {
			err = errors.Join(err, ferr)
		}
		return 0, err
	}
	for _, p := range parts {
		f := p.f
		f.mu.Lock()
		f.spans.dropBefore(end)
		f.metaSize = p.update.Size
		if p.timesDirty && f.mtime.Equal(p.mtime) {
			f.timesDirty = false
		}
		fs.maybeDetachLocked(f)
		f.mu.Unlock()
	}
	return end, nil
}

// applyFold records a round's packs, image updates and checkpoint in
// meta's open transaction.
func (fs *FS) applyFold(ctx context.Context, packs []meta.Pack, parts []*foldFile, end uint64) error {
	if len(packs) > 0 {
		if err := fs.m.AddPacks(ctx, packs); err != nil {
			return err
		}
	}
	for _, p := range parts {
		_, err := fs.m.UpdateImage(ctx, p.update)
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL) {
			continue // purged meanwhile: its packs' pages are dead
		}
		if err != nil {
			return fmt.Errorf("fold inode %d: %w", p.update.Ino, err)
		}
	}
	ids := make([]uint64, len(packs))
	for i, p := range packs {
		ids[i] = p.ID
	}
	if err := fs.m.FreeIdlePacks(ctx, ids); err != nil {
		return err
	}
	return fs.m.SetWALCheckpoint(ctx, end)
}

// pageRun is a run of pages [start, end).
type pageRun struct{ start, end uint64 }

// captureFile reads the pages of f that its spans before end touch and
// adds them to pb; nil if f has nothing to fold.
func (fs *FS) captureFile(ctx context.Context, f *file, end uint64, pb *packBuilder) (*foldFile, error) {
	f.mu.Lock()
	if !f.image || f.dead || f.spans.len() == 0 {
		f.mu.Unlock()
		return nil, nil
	}
	part := &foldFile{f: f, update: meta.ImageUpdate{Ino: f.ino, Size: f.size}, timesDirty: f.timesDirty, mtime: f.mtime}
	if f.timesDirty {
		part.update.Mtime, part.update.Ctime = f.mtime, f.ctime
	}
	var data, holes []pageRun
	f.spans.each(func(s span) bool {
		if s.rec >= end {
			return true
		}
		first, last := s.start/pageSize, (s.end+pageSize-1)/pageSize
		if !s.hole {
			data = append(data, pageRun{first, last})
			return true
		}
		// Whole pages inside a hole are dropped; a page it covers only
		// in part keeps its other bytes, so it is read and stored.
		in0, in1 := (s.start+pageSize-1)/pageSize, s.end/pageSize
		if in0 >= in1 {
			data = append(data, pageRun{first, last})
			return true
		}
		holes = append(holes, pageRun{in0, in1})
		if first < in0 {
			data = append(data, pageRun{first, in0})
		}
		if in1 < last {
			data = append(data, pageRun{in1, last})
		}
		return true
	})
	size := f.size
	f.mu.Unlock()

	limit := (size + pageSize - 1) / pageSize
	for _, h := range holes {
		part.update.Holes = append(part.update.Holes, meta.PageRange{Page: h.start, N: h.end - h.start})
	}
	buf := make([]byte, chunkSize)
	for _, r := range mergeRuns(data) {
		r.end = min(r.end, limit)
		for p := r.start; p < r.end; {
			n := min(r.end-p, chunkSize/pageSize)
			chunk := buf[:n*pageSize]
			if err := fs.readImageRange(ctx, f, p*pageSize, chunk); err != nil {
				return nil, err
			}
			if err := part.addPages(pb, p, chunk); err != nil {
				return nil, err
			}
			p += n
		}
	}
	return part, nil
}

// addPages adds the pages of chunk, the content of file pages from first
// on, to the update: pages of zeros as holes, the others into packs.
func (part *foldFile) addPages(pb *packBuilder, first uint64, chunk []byte) error {
	u := &part.update
	for i := 0; i*pageSize < len(chunk); i++ {
		page := chunk[i*pageSize : (i+1)*pageSize]
		fp := first + uint64(i)
		if allZero(page) {
			if n := len(u.Holes); n > 0 && u.Holes[n-1].Page+u.Holes[n-1].N == fp {
				u.Holes[n-1].N++
			} else {
				u.Holes = append(u.Holes, meta.PageRange{Page: fp, N: 1})
			}
			continue
		}
		block, bpage, err := pb.add(page)
		if err != nil {
			return err
		}
		if n := len(u.Extents); n > 0 {
			e := &u.Extents[n-1]
			if e.End() == fp && e.Block == block && e.BlockPage+e.N == bpage {
				e.N++
				continue
			}
		}
		u.Extents = append(u.Extents, meta.Extent{Page: fp, N: 1, Block: block, BlockPage: bpage})
	}
	return nil
}

// mergeRuns sorts runs and merges those that overlap or touch.
func mergeRuns(runs []pageRun) []pageRun {
	slices.SortFunc(runs, func(a, b pageRun) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	var out []pageRun
	for _, r := range runs {
		if n := len(out); n > 0 && r.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// readImageRange reads [off, off+len(buf)) of image f as it is now,
// whatever its size (pages past the end read as zeros).
func (fs *FS) readImageRange(ctx context.Context, f *file, off uint64, buf []byte) error {
	f.mu.Lock()
	if f.dead {
		f.mu.Unlock()
		clear(buf)
		return nil
	}
	return fs.readImage(ctx, f, off, buf)
}
