package vfs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"ohm/internal/filecopy"
)

// The write-ahead log of device images (docs/durability.md).
//
// Every change to an image's data (a write, a punched hole, a new size) is
// appended to the log as one record before it is acknowledged, and a flush
// of the image is one fdatasync of the log. In the background the folder
// turns the log's records into immutable packs in the object store and
// extents in meta, in the transaction that moves meta's checkpoint past
// them; once that transaction is committed, the segments before the
// checkpoint are recycled.
//
// The log is a sequence of segment files named by the log position of
// their first byte. A record is a 40-byte header and its payload:
//
//	0  uint32le  CRC-32C of bytes 4..40 and the payload
//	4  uint8     kind: 1 write, 2 punch, 3 size, 4 seal
//	5  3 bytes   zero
//	8  uint64le  position of the segment's first byte (stale records of a recycled file never match)
//	16 uint64le  inode
//	24 uint64le  offset (write, punch) or new size (size)
//	32 uint64le  length: payload bytes (write), bytes punched (punch)
//
// Appends are serialized, so the log's bytes up to its end are complete
// records: a flush that syncs them covers every write acknowledged before
// it. A seal record ends a segment; replay stops at the first record that
// fails its checks (the unsynced tail of a crash: torn, half written or
// stale), so a record is applied whole or not at all.
const (
	walHeaderLen   = 40
	walSegmentSize = 64 << 20
	walSuffix      = ".wal"
	walSparePrefix = "spare-"
	walIDFile      = "id"

	recWrite = 1
	recPunch = 2
	recSize  = 3
	recSeal  = 4
)

// walRecord is a decoded record header.
type walRecord struct {
	kind     uint8
	ino      uint64
	off, n   uint64
	pos      uint64 // log position of the record
	data     uint64 // log position of its payload
	segStart uint64
}

type walSegment struct {
	start     uint64
	f         *os.File
	size      uint64 // bytes of records in it
	allocated uint64 // bytes the file holds (written, zeros past size)
	dirty     bool   // appended to since its last fdatasync
	synced    uint64 // bytes of records the last fdatasync covered (for tests)
}

// walExtendBy is how far ahead of its records a new segment file is
// filled with zeros: an fdatasync of data written within a file's size
// needs no journal commit on the host filesystem (measured several times
// cheaper than one after an append that grows the file), so the file
// grows in steps instead of with every record.
const walExtendBy = 4 << 20

var walZeros = make([]byte, 1<<20)

// ensure makes seg's file hold at least n bytes.
func (seg *walSegment) ensure(n uint64) error {
	if n <= seg.allocated {
		return nil
	}
	target := min((n+walExtendBy-1)/walExtendBy*walExtendBy, max(walSegmentSize, n))
	for seg.allocated < target {
		k := min(uint64(len(walZeros)), target-seg.allocated)
		if _, err := seg.f.WriteAt(walZeros[:k], int64(seg.allocated)); err != nil {
			return err
		}
		seg.allocated += k
	}
	return nil
}

func (s *walSegment) end() uint64 { return s.start + s.size }

// wal is the write-ahead log of a volume's device images. Its methods are
// safe for concurrent use.
type wal struct {
	dir string
	id  string

	// syncMu keeps release from closing a segment that syncDirty is
	// syncing; syncDirty's rounds are serialized by commit already.
	syncMu sync.Mutex

	mu     sync.Mutex
	segs   []*walSegment // by start; the last one is appended to
	end    uint64        // position after the last record
	spares []string      // recycled segment files, ready to be overwritten
	broken error         // a failed write or fdatasync: nothing more is durable

	appended atomic.Uint64 // bytes appended, for the IO counters
	commit   *groupCommit  // fdatasync of the dirty segments, grouped
}

var errWALClosed = errors.New("write-ahead log is closed")

func walSegmentName(start uint64) string { return fmt.Sprintf("%016x%s", start, walSuffix) }

// openWAL opens the log in dir, replaying through fn every record from
// checkpoint on. metaID is the identity meta records for the log its
// extents were folded from: a log with another identity (or none) is not
// the continuation of those extents (an S3 volume restored from its
// replica, a volume formatted before logs) and is discarded. fresh says
// that the log was made anew: the caller records its identity and start
// with meta.SetWAL and commits before relying on it.
func openWAL(ctx context.Context, dir, metaID string, checkpoint uint64, fn func(walRecord) error) (w *wal, fresh bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("write-ahead log %s: %w", dir, err)
	}
	w = &wal{dir: dir}
	w.commit = newGroupCommit(context.WithoutCancel(ctx), w.syncDirty)
	id, err := os.ReadFile(filepath.Join(dir, walIDFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("write-ahead log %s: %w", dir, err)
	}
	if metaID == "" || strings.TrimSpace(string(id)) != metaID {
		if err := w.reset(checkpoint); err != nil {
			return nil, false, fmt.Errorf("write-ahead log %s: %w", dir, err)
		}
		return w, true, nil
	}
	w.id = metaID
	if err := w.recover(checkpoint, fn); err != nil {
		w.close()
		return nil, false, fmt.Errorf("write-ahead log %s: %w", dir, err)
	}
	return w, false, nil
}

// reset empties dir and starts a new log at position start.
func (w *wal) reset(start uint64) error {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(w.dir, e.Name())); err != nil {
			return err
		}
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	w.id = hex.EncodeToString(raw[:])
	if err := writeSynced(filepath.Join(w.dir, walIDFile), []byte(w.id+"\n")); err != nil {
		return err
	}
	w.end = start
	return w.newSegment(start)
}

// recover replays the log from checkpoint, ends it at its last good record
// and starts a new segment after it.
func (w *wal) recover(checkpoint uint64, fn func(walRecord) error) error {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return err
	}
	var starts []uint64
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, walSuffix):
			start, err := strconv.ParseUint(strings.TrimSuffix(name, walSuffix), 16, 64)
			if err != nil || walSegmentName(start) != name {
				continue
			}
			starts = append(starts, start)
		case strings.HasPrefix(name, walSparePrefix):
			w.spares = append(w.spares, name)
		}
	}
	slices.Sort(starts)
	// The segment holding the checkpoint, and those after it, are
	// replayed; the ones before hold only what meta has.
	first := -1
	for i, s := range starts {
		if s <= checkpoint {
			first = i
		}
	}
	var keep []*walSegment
	pos := checkpoint
	sealed := false // pos is after a seal: the log goes on in the segment starting there
	for i, s := range starts {
		path := filepath.Join(w.dir, walSegmentName(s))
		switch {
		case i < first:
			if err := w.retire(path, walSpares); err != nil {
				return err
			}
			continue
		case i > first && !(sealed && s == pos):
			// After the end of the log: records nobody was told were
			// durable.
			if err := w.retire(path, walSpares); err != nil {
				return err
			}
			continue
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		seg := &walSegment{start: s, f: f, allocated: uint64(fi.Size())}
		keep = append(keep, seg)
		if i == first && pos < s {
			pos = s
		}
		next, sealedHere, err := replaySegment(seg, pos, fn)
		if err != nil {
			return err
		}
		seg.size = next - s
		pos, sealed = next, sealedHere
		if !sealed {
			first = len(starts) // everything after is past the end
		}
	}
	w.segs = keep
	w.end = pos
	if n := len(keep); n > 0 && !sealed {
		// Seal the log where it ends, overwriting whatever torn or stale
		// bytes follow, so that the next replay goes on to the segment
		// this one starts.
		if err := w.appendSeal(keep[n-1]); err != nil {
			return err
		}
		if err := unix.Fdatasync(int(keep[n-1].f.Fd())); err != nil {
			return err
		}
		keep[n-1].dirty = false
	}
	return w.newSegment(w.end)
}

// replaySegment reads the records of seg from position pos on, calling fn
// for each, and returns the position after the last good one and whether
// that was a seal.
func replaySegment(seg *walSegment, pos uint64, fn func(walRecord) error) (uint64, bool, error) {
	var hdr [walHeaderLen]byte
	var payload []byte
	for {
		off := int64(pos - seg.start)
		if _, err := seg.f.ReadAt(hdr[:], off); err != nil {
			if errors.Is(err, io.EOF) {
				return pos, false, nil
			}
			return 0, false, err
		}
		r, ok := decodeHeader(hdr[:])
		if !ok || r.segStart != seg.start || r.kind < recWrite || r.kind > recSeal {
			return pos, false, nil
		}
		plen := uint64(0)
		if r.kind == recWrite {
			plen = r.n
			if plen > walSegmentSize {
				return pos, false, nil
			}
		}
		if uint64(cap(payload)) < plen {
			payload = make([]byte, plen)
		}
		payload = payload[:plen]
		if _, err := seg.f.ReadAt(payload, off+walHeaderLen); err != nil {
			if errors.Is(err, io.EOF) {
				return pos, false, nil
			}
			return 0, false, err
		}
		if recordSum(hdr[:], payload) != binary.LittleEndian.Uint32(hdr[0:]) {
			return pos, false, nil
		}
		r.pos, r.data = pos, pos+walHeaderLen
		next := pos + walHeaderLen + plen
		if r.kind == recSeal {
			return next, true, nil
		}
		if err := fn(r); err != nil {
			return 0, false, err
		}
		pos = next
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func recordSum(hdr, payload []byte) uint32 {
	sum := crc32.Checksum(hdr[4:walHeaderLen], castagnoli)
	return crc32.Update(sum, castagnoli, payload)
}

func encodeHeader(hdr []byte, kind uint8, segStart, ino, off, n uint64) {
	clear(hdr[:8])
	hdr[4] = kind
	binary.LittleEndian.PutUint64(hdr[8:], segStart)
	binary.LittleEndian.PutUint64(hdr[16:], ino)
	binary.LittleEndian.PutUint64(hdr[24:], off)
	binary.LittleEndian.PutUint64(hdr[32:], n)
}

func decodeHeader(hdr []byte) (walRecord, bool) {
	if hdr[5]|hdr[6]|hdr[7] != 0 {
		return walRecord{}, false
	}
	return walRecord{
		kind:     hdr[4],
		segStart: binary.LittleEndian.Uint64(hdr[8:]),
		ino:      binary.LittleEndian.Uint64(hdr[16:]),
		off:      binary.LittleEndian.Uint64(hdr[24:]),
		n:        binary.LittleEndian.Uint64(hdr[32:]),
	}, true
}

// walSpares is how many recycled segment files the log keeps to
// overwrite, and walSpareRoom how much host space beyond the reserve it
// needs to keep them: a spare holds a whole segment of the host's disk,
// which a host short of space needs more than a cheaper fdatasync.
const (
	walSpares    = 2
	walSpareRoom = 16 * walSegmentSize
)

// retire keeps a segment file nobody needs as a spare to overwrite (an
// overwrite within a file's size needs no journal commit on the host's
// filesystem, so its fdatasync costs less than an append's), or removes
// it when there are keep spares already.
func (w *wal) retire(path string, keep int) error {
	if len(w.spares) < keep {
		name := fmt.Sprintf("%s%d", walSparePrefix, len(w.spares))
		for slices.Contains(w.spares, name) {
			name += "x"
		}
		if err := os.Rename(path, filepath.Join(w.dir, name)); err == nil {
			w.spares = append(w.spares, name)
			return nil
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// newSegment starts the segment appended to from position start, in a
// spare file if there is one. The directory is synced, so that a flush
// that syncs the segment's data finds it after a crash.
func (w *wal) newSegment(start uint64) error {
	path := filepath.Join(w.dir, walSegmentName(start))
	var f *os.File
	var err error
	if n := len(w.spares); n > 0 {
		spare := filepath.Join(w.dir, w.spares[n-1])
		w.spares = w.spares[:n-1]
		if err = os.Rename(spare, path); err == nil {
			f, err = os.OpenFile(path, os.O_RDWR, 0)
		}
	} else {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return fmt.Errorf("new segment: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = filecopy.SyncDir(w.dir)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("new segment: %w", err)
	}
	w.segs = append(w.segs, &walSegment{start: start, f: f, allocated: uint64(fi.Size())})
	return nil
}

// appendSeal ends seg with a seal record.
func (w *wal) appendSeal(seg *walSegment) error {
	var hdr [walHeaderLen]byte
	encodeHeader(hdr[:], recSeal, seg.start, 0, 0, 0)
	binary.LittleEndian.PutUint32(hdr[0:], recordSum(hdr[:], nil))
	if _, err := seg.f.WriteAt(hdr[:], int64(seg.size)); err != nil {
		return err
	}
	seg.size += walHeaderLen
	seg.dirty = true
	w.end = seg.end()
	return nil
}

// append adds a record and returns its position and its payload's.
func (w *wal) append(kind uint8, ino, off, n uint64, payload []byte) (rec, data uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return 0, 0, w.broken
	}
	if len(w.segs) == 0 {
		return 0, 0, errWALClosed
	}
	seg := w.segs[len(w.segs)-1]
	need := uint64(walHeaderLen + len(payload))
	if seg.size > 0 && seg.size+need+walHeaderLen > walSegmentSize {
		if err := w.roll(seg); err != nil {
			w.broken = fmt.Errorf("write-ahead log: %w", err)
			return 0, 0, w.broken
		}
		seg = w.segs[len(w.segs)-1]
	}
	if err := seg.ensure(seg.size + need + walHeaderLen); err != nil {
		w.broken = fmt.Errorf("write-ahead log: extend segment: %w", err)
		return 0, 0, w.broken
	}
	var hdr [walHeaderLen]byte
	encodeHeader(hdr[:], kind, seg.start, ino, off, n)
	binary.LittleEndian.PutUint32(hdr[0:], recordSum(hdr[:], payload))
	iov := [][]byte{hdr[:]}
	if len(payload) > 0 {
		iov = append(iov, payload)
	}
	at := int64(seg.size)
	for len(iov) > 0 {
		k, err := unix.Pwritev(int(seg.f.Fd()), iov, at)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			// The record may be half written: nothing after it can be
			// appended (replay would stop at it).
			w.broken = fmt.Errorf("write-ahead log: append: %w", err)
			return 0, 0, w.broken
		}
		at += int64(k)
		for k > 0 && len(iov) > 0 {
			if k >= len(iov[0]) {
				k -= len(iov[0])
				iov = iov[1:]
			} else {
				iov[0] = iov[0][k:]
				k = 0
			}
		}
	}
	rec = seg.end()
	seg.size += need
	seg.dirty = true
	w.end = seg.end()
	w.appended.Add(need)
	return rec, rec + walHeaderLen, nil
}

// roll seals the segment appended to and starts the next one.
func (w *wal) roll(seg *walSegment) error {
	if err := w.appendSeal(seg); err != nil {
		return err
	}
	return w.newSegment(seg.end())
}

// syncDirty makes every record appended before it was called durable: the
// group commit's round.
func (w *wal) syncDirty(context.Context) error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	if w.broken != nil {
		defer w.mu.Unlock()
		return w.broken
	}
	type pending struct {
		seg  *walSegment
		size uint64
	}
	var dirty []pending
	for _, s := range w.segs {
		if s.dirty {
			dirty = append(dirty, pending{s, s.size})
			s.dirty = false
		}
	}
	w.mu.Unlock()
	for _, d := range dirty {
		if err := unix.Fdatasync(int(d.seg.f.Fd())); err != nil {
			w.mu.Lock()
			// The kernel may have dropped the pages it failed to write:
			// what the log holds is unknown from here on.
			w.broken = fmt.Errorf("write-ahead log: fdatasync: %w", err)
			w.mu.Unlock()
			return w.broken
		}
		w.mu.Lock()
		d.seg.synced = max(d.seg.synced, d.size)
		w.mu.Unlock()
	}
	return nil
}

// sync returns once every record appended before it was called is durable.
func (w *wal) sync() error { return w.commit.Wait() }

// position returns the position after the last record appended.
func (w *wal) position() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.end
}

// read fills p from the log at position pos (within one record's payload).
func (w *wal) read(pos uint64, p []byte) error {
	w.mu.Lock()
	i, _ := slices.BinarySearchFunc(w.segs, pos, func(s *walSegment, pos uint64) int {
		switch {
		case s.end() <= pos:
			return -1
		case s.start > pos:
			return 1
		}
		return 0
	})
	var seg *walSegment
	if i < len(w.segs) && w.segs[i].start <= pos && pos < w.segs[i].end() {
		seg = w.segs[i]
	}
	w.mu.Unlock()
	if seg == nil {
		return fmt.Errorf("write-ahead log: position %d is in no open segment", pos)
	}
	_, err := seg.f.ReadAt(p, int64(pos-seg.start))
	if err != nil {
		return fmt.Errorf("write-ahead log: read at %d: %w", pos, err)
	}
	return nil
}

// release retires the segments that lie wholly before position cp, which
// a committed meta transaction holds now, keeping at most spares of them
// (and of the spares kept before) to overwrite. Nothing reads them any
// more: the spans that pointed into them were dropped when their records
// were folded.
func (w *wal) release(cp uint64, spares int) error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for len(w.segs) > 1 && w.segs[0].end() <= cp {
		s := w.segs[0]
		w.segs = w.segs[1:]
		s.f.Close()
		if err := w.retire(s.f.Name(), spares); err != nil {
			errs = append(errs, err)
		}
	}
	for len(w.spares) > spares {
		n := len(w.spares) - 1
		if err := os.Remove(filepath.Join(w.dir, w.spares[n])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			break
		}
		w.spares = w.spares[:n]
	}
	return errors.Join(errs...)
}

// backlog is how many bytes of records lie after position cp.
func (w *wal) backlog(cp uint64) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.end < cp {
		return 0
	}
	return w.end - cp
}

// close syncs and closes the segments.
func (w *wal) close() error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, s := range w.segs {
		if s.dirty && w.broken == nil {
			if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
				errs = append(errs, err)
			}
		}
		s.f.Close()
	}
	w.segs = nil
	if w.broken == nil {
		w.broken = errWALClosed
	}
	return errors.Join(errs...)
}

// writeSynced writes a small file durably (file, then directory).
func writeSynced(path string, data []byte) error {
	if err := filecopy.WriteSynced(path, data, 0o600); err != nil {
		return err
	}
	return filecopy.SyncDir(filepath.Dir(path))
}
