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

// location is a resolved volume URL.
type location struct {
	url  string
	dir  string // the file backend's directory; "" for S3
	s3   *objstore.S3Store
	objs objstore.Store

	cacheRoot     string // S3 volumes: where the local metadata lives
	cacheOverride string // S3 volumes: the cache directory, if given
	uuid          string // set once known, for the S3 cache path
}

func resolve(ctx context.Context, url string) (*location, error) {
	objs, err := objstore.Open(ctx, url)
	if err != nil {
		return nil, err // it names url
	}
	switch s := objs.(type) {
	case *objstore.FileStore:
		return &location{url: url, dir: s.Root(), objs: objs}, nil
	case *objstore.S3Store:
		return &location{url: url, s3: s, objs: objs, cacheRoot: DefaultCacheRoot}, nil
	default:
		return nil, fmt.Errorf("volume %s: unsupported store %T", url, objs)
	}
}

// metaPath is the local SQLite database: beside the blocks for a file
// volume, in the cache directory for an S3 volume.
func (l *location) metaPath() string {
	if l.s3 != nil {
		return filepath.Join(l.cacheDir(), "meta.db")
	}
	return filepath.Join(l.dir, filepath.FromSlash(metaPath))
}

// cacheDir is an S3 volume's local directory.
func (l *location) cacheDir() string {
	if l.cacheOverride != "" {
		return l.cacheOverride
	}
	if l.cacheRoot == "" {
		l.cacheRoot = DefaultCacheRoot
	}
	return filepath.Join(l.cacheRoot, l.uuid)
}

func (l *location) lockPath() string {
	if l.s3 != nil {
		return filepath.Join(l.cacheDir(), lockName)
	}
	return filepath.Join(l.dir, lockName)
}

func (l *location) target() replica.Target {
	t, _ := replica.TargetFor(l.objs) // both kinds of store have one
	return t
}

// identity reads ohmfs.json, failing with ErrNotVolume if it is absent.
func (l *location) identity(ctx context.Context) (identity, error) {
	var id identity
	b, err := l.objs.Get(ctx, identityKey, 0, -1)
	if errors.Is(err, objstore.ErrNotFound) {
		if l.s3 != nil {
			return id, fmt.Errorf("%s: %w (no %s under the prefix)", l.url, ErrNotVolume, identityKey)
		}
		if _, serr := os.Stat(l.dir); errors.Is(serr, fs.ErrNotExist) {
			return id, fmt.Errorf("%s: %w (no such directory)", l.url, ErrNotVolume)
		}
		return id, fmt.Errorf("%s: %w (no %s)", l.url, ErrNotVolume, identityKey)
	}
	if err != nil {
		return id, fmt.Errorf("volume %s: %w", l.url, err)
	}
	if err := json.Unmarshal(b, &id); err != nil || id.UUID == "" {
		return id, fmt.Errorf("%s: %w (unreadable %s)", l.url, ErrNotVolume, identityKey)
	}
	if id.FormatVersion > FormatVersion {
		return id, fmt.Errorf("volume %s has format version %d; this ohm knows up to %d", l.url, id.FormatVersion, FormatVersion)
	}
	l.uuid = id.UUID
	return id, nil
}

// FormatOptions tune Format.
type FormatOptions struct {
	Capacity uint64 // bytes reported by statfs; 0 means DefaultCapacity
}

// Format creates a new, empty volume at url. It refuses a location that
// already holds a volume or any other files.
func Format(ctx context.Context, url string, opts FormatOptions) (err error) {
	l, err := resolve(ctx, url)
	if err != nil {
		return err
	}
	capacity := opts.Capacity
	if capacity == 0 {
		capacity = DefaultCapacity
	}
	if l.s3 != nil {
		return l.formatS3(ctx, capacity)
	}

	created := false
	switch ents, rerr := os.ReadDir(l.dir); {
	case errors.Is(rerr, fs.ErrNotExist):
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			return fmt.Errorf("format %s: %w", url, err)
		}
		if err := syncDir(filepath.Dir(l.dir)); err != nil {
			return fmt.Errorf("format %s: %w", url, err)
		}
		created = true
	case rerr != nil:
		return fmt.Errorf("format %s: %w", url, rerr)
	case len(ents) > 0:
		if _, err := os.Stat(filepath.Join(l.dir, identityKey)); err == nil {
			return fmt.Errorf("format %s: the location already holds an ohmfs volume", url)
		}
		return fmt.Errorf("format %s: the directory is not empty and not an ohmfs volume", url)
	}
	// Leave nothing behind if formatting fails half way.
	defer func() {
		if err == nil {
			return
		}
		if created {
			os.RemoveAll(l.dir)
		} else {
			os.RemoveAll(filepath.Dir(l.metaPath()))
		}
	}()

	id, err := newIdentity(capacity)
	if err != nil {
		return fmt.Errorf("format %s: %w", url, err)
	}
	if err := os.Mkdir(filepath.Dir(l.metaPath()), 0o755); err != nil {
		return fmt.Errorf("format %s: %w", url, err)
	}
	if err := createMeta(ctx, l.metaPath(), id, l.target()); err != nil {
		os.RemoveAll(filepath.Join(l.dir, replica.Dir))
		return fmt.Errorf("format %s: %w", url, err)
	}
	return l.putIdentity(ctx, id)
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

// formatS3 formats an empty S3 prefix: the metadata is made in a scratch
// directory and shipped to the replica; the first mount restores it.
func (l *location) formatS3(ctx context.Context, capacity uint64) error {
	errStop := errors.New("stop")
	found := ""
	err := l.objs.List(ctx, "", func(oi objstore.ObjectInfo) error { found = oi.Key; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("format %s: %w", l.url, err)
	}
	if found != "" {
		if _, err := l.objs.Head(ctx, identityKey); err == nil {
			return fmt.Errorf("format %s: the location already holds an ohmfs volume", l.url)
		}
		return fmt.Errorf("format %s: the prefix is not empty and not an ohmfs volume (it holds %s)", l.url, found)
	}
	id, err := newIdentity(capacity)
	if err != nil {
		return fmt.Errorf("format %s: %w", l.url, err)
	}
	scratch, err := os.MkdirTemp("", "ohm-format-")
	if err != nil {
		return fmt.Errorf("format %s: %w", l.url, err)
	}
	defer os.RemoveAll(scratch)
	if err := createMeta(ctx, filepath.Join(scratch, "meta.db"), id, l.target()); err != nil {
		return fmt.Errorf("format %s: %w", l.url, err)
	}
	return l.putIdentity(ctx, id)
}

func (l *location) putIdentity(ctx context.Context, id identity) error {
	url := l.url
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("format %s: %w", url, err)
	}
	// Last, and atomically: a location with ohmfs.json is a whole volume.
	if err := l.objs.Put(ctx, identityKey, append(b, '\n')); err != nil {
		return fmt.Errorf("format %s: %w", url, err)
	}
	return nil
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
	lease *lease
}

// Open opens the volume at url for writing. It fails with ErrBusy (naming
// the holder's pid and mountpoint) if another process has it open, and with
// ErrNotVolume if url holds no volume.
func Open(ctx context.Context, url string, opts OpenOptions) (*Volume, error) {
	l, err := resolve(ctx, url)
	if err != nil {
		return nil, err
	}
	l.cacheOverride = opts.CacheDir
	return l.open(ctx, Holder{Mountpoint: opts.Mountpoint}, opts.CacheBytes)
}

func (l *location) open(ctx context.Context, h Holder, cacheBytes int64) (v *Volume, err error) {
	id, err := l.identity(ctx)
	if err != nil {
		return nil, err
	}
	if l.s3 != nil {
		if err := os.MkdirAll(l.cacheDir(), 0o755); err != nil {
			return nil, fmt.Errorf("open volume %s: cache directory: %w", l.url, err)
		}
	}
	// The local lock first (two processes on this host), then for S3 the
	// lease (two hosts).
	lock, err := acquire(l.url, l.lockPath(), h)
	if err != nil {
		return nil, err
	}
	var ls *lease
	release := func() {
		if ls != nil {
			ls.release(context.WithoutCancel(ctx))
		}
		lock.release()
	}
	if l.s3 != nil {
		if ls, err = acquireLease(ctx, l.url, l.s3, h); err != nil {
			lock.release()
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	if err := l.ensureMeta(ctx); err != nil {
		return nil, fmt.Errorf("open volume %s: %w", l.url, err)
	}
	db, err := meta.Open(ctx, l.metaPath(), meta.Options{})
	if err != nil {
		return nil, fmt.Errorf("open volume %s: %w", l.url, err)
	}
	uuid, err := db.Setting(ctx, "uuid")
	if err == nil && uuid != id.UUID {
		err = fmt.Errorf("%w (its metadata belongs to volume %q, %s says %q)", ErrNotVolume, uuid, identityKey, id.UUID)
	}
	if err != nil {
		db.Close(ctx)
		return nil, fmt.Errorf("open volume %s: %w", l.url, err)
	}
	objs := l.objs
	ropts := replica.Options{}
	if ls != nil {
		objs = fencedStore{Store: l.objs, l: ls}
		ropts.Fenced = func() bool { return !ls.held() }
	}
	rep, err := replica.Start(ctx, db, l.target(), ropts)
	if err != nil {
		db.Close(ctx)
		return nil, fmt.Errorf("open volume %s: %w", l.url, err)
	}
	v = &Volume{
		URL:      l.url,
		UUID:     id.UUID,
		Capacity: id.Capacity,
		Objects:  objs,
		Blocks:   blockstore.New(objs, blockstore.Options{CacheBytes: cacheBytes}),
		Meta:     db,
		Replica:  rep,
		lock:     lock,
		lease:    ls,
	}
	if ls != nil {
		v.LeaseLost = ls.lostCh
	}
	return v, nil
}

// ensureMeta makes sure the local metadata database exists and is current:
// restored from the replica when missing (the host lost it) or, for an S3
// volume, when another host has shipped changes since this one last held
// the volume.
func (l *location) ensureMeta(ctx context.Context) error {
	path := l.metaPath()
	_, err := os.Stat(path)
	switch {
	case err == nil && l.s3 == nil:
		return nil
	case err == nil:
		stale, err := replica.Stale(ctx, path, l.target())
		if err != nil || !stale {
			return err
		}
		if err := replica.Discard(path); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := replica.Restore(ctx, path, l.target()); err != nil {
		if errors.Is(err, replica.ErrNoReplica) {
			return fmt.Errorf("its metadata is missing from %s and there is no replica to restore it from", filepath.Dir(path))
		}
		return err
	}
	return nil
}

// Close commits the metadata, closes it, ships the last changes to the
// replica and releases the lock (and lease).
func (v *Volume) Close(ctx context.Context) error {
	if v.lock == nil {
		return nil
	}
	err := v.Meta.Close(ctx)
	if v.Replica != nil {
		if rerr := v.Replica.Close(ctx); err == nil {
			err = rerr
		}
	}
	if v.lease != nil {
		v.lease.release(ctx)
	}
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
	l, err := resolve(ctx, url)
	if err != nil {
		return Status{}, err
	}
	l.cacheOverride = opts.CacheDir
	id, err := l.identity(ctx)
	if err != nil {
		return Status{}, err
	}
	st := Status{URL: url, UUID: id.UUID, Capacity: id.Capacity}
	if st.Mounted, st.Holder, err = held(l.lockPath()); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	path := l.metaPath()
	if l.s3 != nil {
		if !st.Mounted {
			if rec, _, err := (&lease{s: l.s3, key: l.s3.Prefix() + leaseKey}).read(ctx); err == nil && time.Now().Before(rec.Expires) {
				h := rec.Holder
				st.Mounted, st.Holder = true, &h
			}
		}
		if _, err := os.Stat(path); err != nil {
			scratch, err := os.MkdirTemp("", "ohm-status-")
			if err != nil {
				return Status{}, fmt.Errorf("status of %s: %w", url, err)
			}
			defer os.RemoveAll(scratch)
			path = filepath.Join(scratch, "meta.db")
			if err := replica.Restore(ctx, path, l.target()); err != nil {
				return Status{}, fmt.Errorf("status of %s: %w", url, err)
			}
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
	freed, err := db.FreedBlocks(ctx, time.Now().Add(100*365*24*time.Hour))
	if err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", url, err)
	}
	st.FreedBlocks = uint64(len(freed))
	bs := blockstore.New(l.objs, blockstore.Options{CacheBytes: -1})
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
	l, err := resolve(ctx, url)
	if err != nil {
		return nil, err
	}
	l.cacheOverride = opts.CacheDir
	v, err := l.open(ctx, Holder{Command: "ohm fs fsck"}, -1)
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
	stored, err := v.listBlocks(ctx)
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
		case b.size < 16:
			r.Problems = append(r.Problems, meta.Problem{Detail: fmt.Sprintf("block %d (%s) is truncated: %d bytes", id, blockstore.Key(id), b.size)})
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

type storedBlock struct {
	size  int64
	mtime time.Time
}

func (v *Volume) listBlocks(ctx context.Context) (map[uint64]storedBlock, error) {
	stored := make(map[uint64]storedBlock)
	err := v.Blocks.List(ctx, func(id uint64, size int64, mtime time.Time) error {
		stored[id] = storedBlock{size, mtime}
		return nil
	})
	return stored, err
}

// GCResult says what GC did.
type GCResult struct {
	DeletedBlocks uint64 `json:"deleted_blocks"`
	DeletedBytes  uint64 `json:"deleted_bytes"`
	KeptYoung     uint64 `json:"kept_young"`     // unreferenced but younger than the grace period
	PurgedOrphans uint64 `json:"purged_orphans"` // files unlinked while open before a crash, now deleted
	TempFiles     uint64 `json:"temp_files"`     // crash leftovers of interrupted writes, removed
}

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
	l, err := resolve(ctx, url)
	if err != nil {
		return GCResult{}, err
	}
	l.cacheOverride = opts.CacheDir
	v, err := l.open(ctx, Holder{Command: "ohm fs gc"}, -1)
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

func (v *Volume) gc(ctx context.Context, grace time.Duration) (GCResult, error) {
	var res GCResult
	cutoff := time.Now().Add(-grace)

	// Nothing has the volume open, so orphans (unlinked while open, then
	// a crash) are garbage now. Purging frees their blocks for later.
	orphans, err := v.Meta.Orphans(ctx)
	if err != nil {
		return res, err
	}
	for _, ino := range orphans {
		if err := v.Meta.Purge(ctx, ino); err != nil {
			return res, err
		}
		res.PurgedOrphans++
	}
	if err := v.Meta.Commit(ctx); err != nil {
		return res, err
	}

	stored, err := v.listBlocks(ctx)
	if err != nil {
		return res, err
	}
	referenced := make(map[uint64]bool)
	if err := v.Meta.ReferencedBlocks(ctx, func(id uint64) error { referenced[id] = true; return nil }); err != nil {
		return res, err
	}
	freed, err := v.Meta.FreedBlocks(ctx, time.Now().Add(100*365*24*time.Hour))
	if err != nil {
		return res, err
	}
	deleteBlock := func(id uint64) error {
		if b, ok := stored[id]; ok {
			if err := v.Blocks.Delete(ctx, id); err != nil {
				return err
			}
			res.DeletedBlocks++
			res.DeletedBytes += uint64(b.size)
			delete(stored, id)
		}
		return nil
	}

	// Freed blocks past the grace period. The objects go first: a crash
	// before ForgetFreed only leaves ids whose deletion is repeated.
	inFreed := make(map[uint64]bool, len(freed))
	var forget []uint64
	for _, f := range freed {
		inFreed[f.ID] = true
		if referenced[f.ID] || f.FreedAt.After(cutoff) {
			continue // a referenced block in the freed list would be a meta bug: never delete it
		}
		if err := deleteBlock(f.ID); err != nil {
			return res, err
		}
		forget = append(forget, f.ID)
	}
	if err := v.Meta.ForgetFreed(ctx, forget); err != nil {
		return res, err
	}
	if err := v.Meta.Commit(ctx); err != nil {
		return res, err
	}

	// Blocks nothing references and the freed list does not know: written
	// by a mount that crashed before committing the chunks that named them.
	for id, b := range stored {
		if referenced[id] {
			continue
		}
		if inFreed[id] || !b.mtime.Before(cutoff) {
			res.KeptYoung++
			continue
		}
		if err := deleteBlock(id); err != nil {
			return res, err
		}
	}

	n, err := objstore.CleanTemp(ctx, v.Objects, grace)
	res.TempFiles = uint64(n)
	return res, err
}

// Destroy removes the volume and all its data. It fails with ErrBusy if the
// volume is open, and with ErrNotVolume (removing nothing) if url holds no
// volume.
func Destroy(ctx context.Context, url string) error {
	l, err := resolve(ctx, url)
	if err != nil {
		return err
	}
	if _, err := l.identity(ctx); err != nil {
		return err
	}
	if l.s3 != nil {
		return l.destroyS3(ctx)
	}
	lock, err := acquire(l.url, l.lockPath(), Holder{Command: "ohm fs destroy"})
	if err != nil {
		return err
	}
	defer lock.release()
	// ohmfs.json goes last, so that an interrupted destroy can be run
	// again: the location stays recognisably a volume until the end.
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", url, err)
	}
	for _, e := range ents {
		if e.Name() == identityKey {
			continue
		}
		if err := os.RemoveAll(filepath.Join(l.dir, e.Name())); err != nil {
			return fmt.Errorf("destroy %s: %w", url, err)
		}
	}
	if err := os.RemoveAll(l.dir); err != nil {
		return fmt.Errorf("destroy %s: %w", url, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// destroyS3 deletes every object under the volume's prefix, ohmfs.json
// last, and the local cache directory.
func (l *location) destroyS3(ctx context.Context) error {
	if err := os.MkdirAll(l.cacheDir(), 0o755); err != nil {
		return fmt.Errorf("destroy %s: %w", l.url, err)
	}
	lock, err := acquire(l.url, l.lockPath(), Holder{Command: "ohm fs destroy"})
	if err != nil {
		return err
	}
	ls, err := acquireLease(ctx, l.url, l.s3, Holder{Command: "ohm fs destroy"})
	if err != nil {
		lock.release()
		return err
	}
	ls.markLost() // it is deleted with everything else
	var keys []string
	err = l.objs.List(ctx, "", func(oi objstore.ObjectInfo) error {
		if oi.Key != identityKey {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	for _, k := range keys {
		if err != nil {
			break
		}
		err = l.objs.Delete(ctx, k)
	}
	if err == nil {
		err = l.objs.Delete(ctx, identityKey)
	}
	ls.release(ctx)
	lock.release()
	if err == nil {
		err = os.RemoveAll(l.cacheDir())
	}
	if err != nil {
		return fmt.Errorf("destroy %s: %w", l.url, err)
	}
	return nil
}
