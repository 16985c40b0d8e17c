// Package volume manages ohmfs volumes as a whole: format, open with the
// single-writer lock, status, fsck, gc and destroy. A volume is named by a
// URL: a plain path (or file://path) is the embedded default, with blocks
// under that directory and the SQLite metadata beside them; s3://bucket/prefix
// comes with the S3 backend.
//
// Layout of a file volume:
//
//	<dir>/ohmfs.json      volume identity and settings (written last by Format)
//	<dir>/meta/meta.db    SQLite metadata (with -wal, -shm)
//	<dir>/blocks/...      immutable data blocks (objstore keys "blocks/...")
//	<dir>/lock            flock'ed by the one process that has it open; holds the Holder as JSON
//	<dir>/meta-replica/   Litestream's replica of meta.db
//
// An S3 volume (s3://bucket/prefix) keeps ohmfs.json, blocks/, lease and
// meta-replica/ under the prefix; its SQLite database lives in a local
// cache directory (default /var/lib/ohm/cache/<uuid>) and is restored from
// the replica when missing, so any host can open it. The lease object
// fences a second host.
//
// What differs between the two is behind the backend interface
// (backend.go), one file per backend: file.go and s3.go.
package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/objstore"
	"ohm/internal/ohmfs/replica"
	"ohm/internal/ohmfs/vfs"
)

// DefaultCacheRoot holds the local metadata of S3 volumes, one directory
// per volume uuid.
const DefaultCacheRoot = "/var/lib/ohm/cache"

// DefaultCapacity is what statfs reports as the size of a volume unless
// Format is given another: 1 PiB, shown by df as 1.0P.
const DefaultCapacity = 1 << 50

// FormatVersion is the version of the volume layout Format writes.
const FormatVersion = 1

// ErrNotVolume is returned (wrapped) for a location that holds no ohmfs volume.
var ErrNotVolume = errors.New("not an ohmfs volume")

// ErrBusy is returned (wrapped) by Open when another process has the volume open.
var ErrBusy = errors.New("volume is in use")

const (
	identityKey = "ohmfs.json"
	metaPath    = "meta/meta.db"
	lockName    = "lock"
)

// identity is the content of ohmfs.json.
type identity struct {
	UUID          string    `json:"uuid"`
	Capacity      uint64    `json:"capacity"`
	Created       time.Time `json:"created"`
	FormatVersion int       `json:"format_version"`
}

// identityOf reads ohmfs.json, failing with ErrNotVolume if it is absent.
func identityOf(ctx context.Context, url string, b backend) (identity, error) {
	var id identity
	raw, err := b.objects().Get(ctx, identityKey, 0, -1)
	if errors.Is(err, objstore.ErrNotFound) {
		return id, fmt.Errorf("%s: %w (%s)", url, ErrNotVolume, b.absent())
	}
	if err != nil {
		return id, fmt.Errorf("volume %s: %w", url, err)
	}
	if err := json.Unmarshal(raw, &id); err != nil || id.UUID == "" {
		return id, fmt.Errorf("%s: %w (unreadable %s)", url, ErrNotVolume, identityKey)
	}
	if id.FormatVersion > FormatVersion {
		return id, fmt.Errorf("volume %s has format version %d; this ohm knows up to %d", url, id.FormatVersion, FormatVersion)
	}
	return id, nil
}

// FormatOptions tune Format.
type FormatOptions struct {
	Capacity uint64 // bytes reported by statfs; 0 means DefaultCapacity
}

// Format creates a new, empty volume at url. It refuses a location that
// already holds a volume or any other files.
func Format(ctx context.Context, url string, opts FormatOptions) error {
	b, err := resolve(ctx, url, backendOptions{})
	if err != nil {
		return err
	}
	capacity := opts.Capacity
	if capacity == 0 {
		capacity = DefaultCapacity
	}
	id, err := newIdentity(capacity)
	if err != nil {
		return fmt.Errorf("format %s: %w", url, err)
	}
	undo, err := b.format(ctx, func(path string) error { return createMeta(ctx, path, id, b.replica()) })
	if err != nil {
		return fmt.Errorf("format %s: %w", url, err)
	}
	if err := putIdentity(ctx, b.objects(), id); err != nil {
		undo()
		return fmt.Errorf("format %s: %w", url, err)
	}
	return nil
}

func newIdentity(capacity uint64) (identity, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return identity{}, err
	}
	return identity{
		UUID:          hex.EncodeToString(raw[:]),
		Capacity:      capacity,
		Created:       time.Now().UTC().Truncate(time.Second),
		FormatVersion: FormatVersion,
	}, nil
}

// createMeta creates the metadata database at path and ships its first
// replica to t.
func createMeta(ctx context.Context, path string, id identity, t replica.Target) error {
	settings := map[string]string{
		"uuid":           id.UUID,
		"capacity":       strconv.FormatUint(id.Capacity, 10),
		"chunk_size":     strconv.Itoa(meta.ChunkSize),
		"format_version": strconv.Itoa(FormatVersion),
	}
	if err := meta.Create(ctx, path, 0, 0, settings); err != nil {
		return err
	}
	db, err := meta.Open(ctx, path, meta.Options{})
	if err != nil {
		return err
	}
	rep, err := replica.Start(ctx, db, t, replica.Options{})
	if err != nil {
		db.Close(ctx)
		return err
	}
	err = db.Close(ctx)
	if cerr := rep.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// putIdentity writes ohmfs.json: last, and atomically, for a location
// with ohmfs.json is a whole volume.
func putIdentity(ctx context.Context, objs objstore.Store, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return objs.Put(ctx, identityKey, append(b, '\n'))
}

// Holder says who has a volume open; it is stored in the lock so that
// status can tell.
type Holder struct {
	PID        int       `json:"pid"`
	Mountpoint string    `json:"mountpoint,omitempty"`
	Command    string    `json:"command,omitempty"` // what holds it when not a mount, e.g. "ohm fs gc"
	Since      time.Time `json:"since"`
}

// BusyError is the error of an attempt to open a volume that another
// process holds. It matches ErrBusy with errors.Is.
type BusyError struct {
	URL    string
	Holder *Holder // nil if the holder could not be read
}

func (e *BusyError) Error() string {
	h := e.Holder
	switch {
	case h == nil || h.PID == 0:
		return fmt.Sprintf("volume %s is in use by another process", e.URL)
	case h.Mountpoint != "":
		return fmt.Sprintf("volume %s is already mounted at %s by pid %d", e.URL, h.Mountpoint, h.PID)
	case h.Command != "":
		return fmt.Sprintf("volume %s is in use by pid %d (%s)", e.URL, h.PID, h.Command)
	default:
		return fmt.Sprintf("volume %s is in use by pid %d", e.URL, h.PID)
	}
}

// Unwrap makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Unwrap() error { return ErrBusy }

// OpenOptions tune Open.
type OpenOptions struct {
	Mountpoint string // recorded in the Holder
	CacheBytes int64  // block cache bound; 0 for the default
	// CacheDir is where an S3 volume keeps its local metadata; default
	// DefaultCacheRoot/<uuid>. A missing database there is restored from
	// the replica.
	CacheDir string
	// Lease tunes an S3 volume's lease (zero fields for the defaults);
	// ignored for a file volume.
	Lease LeaseTiming
}

// Volume is an open volume, held with the single-writer lock until Close.
type Volume struct {
	URL      string
	UUID     string
	Capacity uint64
	Objects  objstore.Store
	Blocks   *blockstore.Store
	Meta     *meta.DB
	// Replica ships Meta's changes off the host; Flush it to wait until
	// everything committed is in the replica (--fsync=replica).
	Replica *replica.Replicator
	// LeaseLost is closed when an S3 volume's lease is lost (another host
	// took it over, or it could not be renewed in time): from then on
	// writes to the store fail and the holder must stop. nil for a file
	// volume, whose flock cannot be lost.
	LeaseLost <-chan struct{}

	lock  *lockFile
	claim claim
}

// Open opens the volume at url for writing. It fails with ErrBusy (naming
// the holder's pid and mountpoint) if another process has it open, and with
// ErrNotVolume if url holds no volume.
func Open(ctx context.Context, url string, opts OpenOptions) (*Volume, error) {
	b, err := resolve(ctx, url, backendOptions{cacheDir: opts.CacheDir, lease: opts.Lease})
	if err != nil {
		return nil, err
	}
	return openBackend(ctx, url, b, Holder{Mountpoint: opts.Mountpoint}, opts.CacheBytes)
}

func openBackend(ctx context.Context, url string, b backend, h Holder, cacheBytes int64) (v *Volume, err error) {
	id, err := identityOf(ctx, url, b)
	if err != nil {
		return nil, err
	}
	// The local lock first (two processes on this host), then the
	// backend's claim (two hosts).
	lock, err := lockVolume(url, b.lockPath(id.UUID), h)
	if err != nil {
		return nil, err
	}
	c, err := b.claim(ctx, h)
	if err != nil {
		lock.release()
		return nil, err
	}
	defer func() {
		if err != nil {
			c.release(context.WithoutCancel(ctx))
			lock.release()
		}
	}()
	path := b.metaPath(id.UUID)
	if err := ensureMeta(ctx, b, path); err != nil {
		return nil, fmt.Errorf("open volume %s: %w", url, err)
	}
	db, err := meta.Open(ctx, path, meta.Options{})
	if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", url, err)
	}
	uuid, err := db.Setting(ctx, "uuid")
	if err == nil && uuid != id.UUID {
		err = fmt.Errorf("%w (its metadata belongs to volume %q, %s says %q)", ErrNotVolume, uuid, identityKey, id.UUID)
	}
	if err != nil {
		db.Close(ctx)
		return nil, fmt.Errorf("open volume %s: %w", url, err)
	}
	objs := c.fence(b.objects())
	rep, err := replica.Start(ctx, db, b.replica(), replica.Options{Fenced: c.lost})
	if err != nil {
		db.Close(ctx)
		return nil, fmt.Errorf("open volume %s: %w", url, err)
	}
	return &Volume{
		URL:       url,
		UUID:      id.UUID,
		Capacity:  id.Capacity,
		Objects:   objs,
		Blocks:    blockstore.New(objs, blockstore.Options{CacheBytes: cacheBytes}),
		Meta:      db,
		Replica:   rep,
		LeaseLost: c.lostCh(),
		lock:      lock,
		claim:     c,
	}, nil
}

// lockVolume takes the local lock at path, making its directory first
// (an S3 volume's cache directory may not exist yet).
func lockVolume(url, path string, h Holder) (*lockFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock volume %s: %w", url, err)
	}
	return acquire(url, path, h)
}

// ensureMeta makes sure the local metadata database at path exists and is
// current: restored from the replica when missing (the host lost it) or
// when the backend says another host has shipped changes since this one
// last held the volume.
func ensureMeta(ctx context.Context, b backend, path string) error {
	switch _, err := os.Stat(path); {
	case err == nil:
		stale, err := b.stale(ctx, path)
		if err != nil || !stale {
			return err
		}
		if err := replica.Discard(path); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := replica.Restore(ctx, path, b.replica()); err != nil {
		if errors.Is(err, replica.ErrNoReplica) {
			return fmt.Errorf("its metadata is missing from %s and there is no replica to restore it from", filepath.Dir(path))
		}
		return err
	}
	return nil
}

// Close stops the block store's background loads, commits the metadata,
// closes it, ships the last changes to the replica and releases the lock
// (and lease): nothing of this volume touches its store after Close.
func (v *Volume) Close(ctx context.Context) error {
	if v.lock == nil {
		return nil
	}
	if v.Blocks != nil {
		v.Blocks.Close()
	}
	err := v.Meta.Close(ctx)
	if v.Replica != nil {
		if rerr := v.Replica.Close(ctx); err == nil {
			err = rerr
		}
	}
	v.claim.release(ctx)
	v.lock.release()
	v.lock = nil
	if err != nil {
		return fmt.Errorf("close volume %s: %w", v.URL, err)
	}
	return nil
}

// Status is what `ohm fs status` reports.
type Status struct {
	URL         string  `json:"url"`
	UUID        string  `json:"uuid"`
	Capacity    uint64  `json:"capacity_bytes"`
	Files       uint64  `json:"files"`      // live inodes
	UsedBytes   uint64  `json:"used_bytes"` // logical bytes files hold
	Blocks      uint64  `json:"blocks"`
	StoredBytes uint64  `json:"stored_bytes"` // bytes the blocks take in the store, compressed
	FreedBlocks uint64  `json:"freed_blocks"` // waiting for gc
	Mounted     bool    `json:"mounted"`
	Holder      *Holder `json:"holder,omitempty"`
	// Replica is the metadata replica's state as its replicator last
	// recorded it on this host (nil if none ran here).
	Replica *replica.Status `json:"replica,omitempty"`
	// IO counts bytes since the volume was formatted, as of its last
	// commit: what files were written and what the store received, the
	// terms of write amplification (uploaded_bytes / written_bytes).
	IO meta.IOStats `json:"io"`
}

// Inspect reports a volume's status. It works whether or not the volume is
// mounted (it reads the committed metadata only).
func Inspect(ctx context.Context, url string) (Status, error) {
	return InspectWith(ctx, url, OpenOptions{})
}

// InspectWith is Inspect with the cache directory of OpenOptions (the
// other fields are ignored). An S3 volume whose local metadata is missing is
// read from a scratch restore of its replica.
func InspectWith(ctx context.Context, url string, opts OpenOptions) (Status, error) {
	b, err := resolve(ctx, url, backendOptions{cacheDir: opts.CacheDir})
	if err != nil {
		return Status{}, err
	}
	id, err := identityOf(ctx, url, b)
	if err != nil {
		return Status{}, err
	}
	st := Status{URL: url, UUID: id.UUID, Capacity: id.Capacity}
	if st.Mounted, st.Holder, err = held(b.lockPath(id.UUID)); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	if !st.Mounted {
		st.Holder, st.Mounted = b.remoteHolder(ctx)
	}
	path := b.metaPath(id.UUID)
	if _, err := os.Stat(path); err != nil {
		// This host has no copy (an S3 volume never mounted here): read
		// a scratch restore of the replica.
		scratch, err := os.MkdirTemp("", "ohm-status-")
		if err != nil {
			return Status{}, fmt.Errorf("status of %s: %w", url, err)
		}
		defer os.RemoveAll(scratch)
		path = filepath.Join(scratch, "meta.db")
		if err := replica.Restore(ctx, path, b.replica()); err != nil {
			return Status{}, fmt.Errorf("status of %s: %w", url, err)
		}
	}
	if rs, ok := replica.ReadStatus(path); ok {
		st.Replica = &rs
	}
	db, err := meta.Open(ctx, path, meta.Options{ReadOnly: true})
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	defer db.Close(ctx)
	u, err := db.Usage(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	st.Files, st.UsedBytes = u.Inodes, u.UsedBytes
	if st.FreedBlocks, err = db.FreedCount(ctx); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	if st.IO, err = db.IO(ctx); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	bs := blockstore.New(b.objects(), blockstore.Options{CacheBytes: -1})
	err = bs.List(ctx, func(_ uint64, size int64, _ time.Time) error {
		st.Blocks++
		st.StoredBytes += uint64(size)
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	return st, nil
}

// FsckOptions tune FsckVolume.
type FsckOptions struct {
	// Deep reads every referenced block and verifies its checksum, instead
	// of only checking that it exists.
	Deep bool
	// CacheDir is an S3 volume's local metadata directory, as in
	// OpenOptions; a missing database there is restored from the replica.
	CacheDir string
}

// FsckReport is what FsckVolume finds.
type FsckReport struct {
	Problems           []meta.Problem
	ReferencedBlocks   uint64 // distinct blocks the metadata references
	UnreferencedBlocks uint64 // blocks in the store nothing references (gc's business, not a problem)
}

// Fsck checks a volume that is not mounted: the metadata's own invariants
// and that every referenced block exists in the store. It returns the
// problems found (none on a healthy volume).
func Fsck(ctx context.Context, url string) ([]meta.Problem, error) {
	r, err := FsckVolume(ctx, url, FsckOptions{})
	if err != nil {
		return nil, err
	}
	return r.Problems, nil
}

// FsckVolume is Fsck with options and a fuller report.
func FsckVolume(ctx context.Context, url string, opts FsckOptions) (*FsckReport, error) {
	b, err := resolve(ctx, url, backendOptions{cacheDir: opts.CacheDir})
	if err != nil {
		return nil, err
	}
	v, err := openBackend(ctx, url, b, Holder{Command: "ohm fs fsck"}, -1)
	if err != nil {
		return nil, err
	}
	r, err := v.fsck(ctx, opts)
	if cerr := v.Close(ctx); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("fsck %s: %w", url, err)
	}
	return r, nil
}

func (v *Volume) fsck(ctx context.Context, opts FsckOptions) (*FsckReport, error) {
	r := &FsckReport{}
	problems, err := v.Meta.Check(ctx)
	if err != nil {
		return nil, err
	}
	r.Problems = problems
	stored, err := vfs.ListBlocks(ctx, v.Blocks)
	if err != nil {
		return nil, err
	}
	referenced := make(map[uint64]bool)
	err = v.Meta.ReferencedBlocks(ctx, func(id uint64) error {
		if referenced[id] {
			return nil // shared blocks are fine (hard links share inodes, snapshots share blocks)
		}
		referenced[id] = true
		b, ok := stored[id]
		switch {
		case !ok:
			r.Problems = append(r.Problems, meta.Problem{Detail: fmt.Sprintf("block %d (%s) is referenced but missing from the store", id, blockstore.Key(id))})
		case opts.Deep:
			if err := v.Blocks.Verify(ctx, id); err != nil {
				r.Problems = append(r.Problems, meta.Problem{Detail: err.Error()})
			}
		case b.Size < 16:
			r.Problems = append(r.Problems, meta.Problem{Detail: fmt.Sprintf("block %d (%s) is truncated: %d bytes", id, blockstore.Key(id), b.Size)})
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	r.ReferencedBlocks = uint64(len(referenced))
	for id := range stored {
		if !referenced[id] {
			r.UnreferencedBlocks++
		}
	}
	return r, nil
}

// GCResult says what GC did.
type GCResult = vfs.GCResult

// GC deletes blocks that nothing references and that were freed (or, for
// blocks never referenced, written) more than grace ago. A volume that is
// mounted is collected through its mount, not here: GC fails with ErrBusy.
func GC(ctx context.Context, url string, grace time.Duration) (GCResult, error) {
	return GCWith(ctx, url, GCOptions{Grace: grace})
}

// GCOptions tune GCWith.
type GCOptions struct {
	Grace time.Duration // keep unreferenced blocks younger than this
	// CacheDir is an S3 volume's local metadata directory, as in
	// OpenOptions.
	CacheDir string
}

// GCWith is GC with options: an S3 volume's metadata cache elsewhere than
// the default.
func GCWith(ctx context.Context, url string, opts GCOptions) (GCResult, error) {
	grace := opts.Grace
	b, err := resolve(ctx, url, backendOptions{cacheDir: opts.CacheDir})
	if err != nil {
		return GCResult{}, err
	}
	v, err := openBackend(ctx, url, b, Holder{Command: "ohm fs gc"}, -1)
	if errors.Is(err, ErrBusy) {
		return GCResult{}, fmt.Errorf("%w; it collects its own garbage while mounted", err)
	}
	if err != nil {
		return GCResult{}, err
	}
	res, err := v.gc(ctx, grace)
	if cerr := v.Close(ctx); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return res, fmt.Errorf("gc %s: %w", url, err)
	}
	return res, nil
}

// gc runs the offline collection of package vfs, which is also what a
// mount runs online.
func (v *Volume) gc(ctx context.Context, grace time.Duration) (GCResult, error) {
	return vfs.Collect(ctx, v.Meta, v.Blocks, vfs.GCOptions{Grace: grace, Offline: true})
}

// Destroy removes the volume and all its data. It fails with ErrBusy if the
// volume is open, and with ErrNotVolume (removing nothing) if url holds no
// volume.
func Destroy(ctx context.Context, url string) error {
	return DestroyWith(ctx, url, DestroyOptions{})
}

// DestroyOptions tune DestroyWith.
type DestroyOptions struct {
	// CacheDir is an S3 volume's local metadata directory, as in
	// OpenOptions; it goes with the volume.
	CacheDir string
}

// DestroyWith is Destroy with options: an S3 volume's metadata cache
// elsewhere than the default.
func DestroyWith(ctx context.Context, url string, opts DestroyOptions) error {
	b, err := resolve(ctx, url, backendOptions{cacheDir: opts.CacheDir})
	if err != nil {
		return err
	}
	id, err := identityOf(ctx, url, b)
	if err != nil {
		return err
	}
	h := Holder{Command: "ohm fs destroy"}
	lock, err := lockVolume(url, b.lockPath(id.UUID), h)
	if err != nil {
		return err
	}
	defer lock.release()
	c, err := b.claim(ctx, h)
	if err != nil {
		return err
	}
	// The claim's own object (an S3 lease) goes with everything else:
	// nothing may write it again.
	c.abandon()
	err = b.destroy(ctx, id.UUID)
	c.release(ctx)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", url, err)
	}
	return nil
}
