// Package vfs implements POSIX file semantics over the metadata engine
// (meta) and the block store (blockstore), independent of FUSE.
//
// Inode numbers are meta.Ino values and double as FUSE node ids. Permission
// checks are the kernel's (the mount uses default_permissions); vfs applies
// ownership from the Caller and keeps the file data path: per-file dirty
// chunk buffers, uploads of full chunks as immutable blocks, and the group
// commit that makes everything durable within Config.CommitInterval and
// at once on Fsync.
//
// Durability works like a journaling file system's commit: metadata calls go
// to meta at once (into its open transaction), file data waits in memory,
// and every CommitInterval the commit loop uploads the dirty data, records
// it in meta and commits. Data is always durable before the metadata that
// references it, so a crash leaves a consistent volume.
package vfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
)

// Caller is who makes a request; new inodes are owned by it.
type Caller struct {
	Uid, Gid uint32
	Pid      uint32
}

// Handle identifies an open file or directory.
type Handle uint64

// Config tunes an FS. Zero values take the defaults.
type Config struct {
	CommitInterval    time.Duration // default 1s: the bound on losing un-fsynced writes
	InlineMax         int           // files up to this size live in metadata; default 64 KiB
	UploadConcurrency int           // parallel block uploads; default 4
	GCInterval        time.Duration // how often freed blocks are deleted; default 1 min
	GCGrace           time.Duration // how long a freed block is kept; default 10 min
	// MaxDirty bounds the file data held in memory before it is durable;
	// writers wait for uploads beyond it. Default 256 MiB.
	MaxDirty int64
	// FreeSpace reports the free bytes of the host filesystem that holds
	// the volume's local data (its blocks and metadata, or an S3 volume's
	// cache). When set, writes and new inodes fail with ENOSPC rather than
	// leave less than Reserve free there.
	FreeSpace func() (uint64, error)
	// Reserve is the host space FreeSpace must keep; default DefaultReserve.
	Reserve uint64
	// WALDir is where the write-ahead log of device images lives; default
	// "wal" beside the metadata database (on this host for every kind of
	// volume: it is what makes a flush one local write).
	WALDir string
	// FsyncToStore makes an fsync of a device image also fold the log
	// into the object store and commit the metadata before it returns, so
	// that a replica flush after it (--fsync=replica) carries the data off
	// the host. By default an image's fsync is durable on this host.
	FsyncToStore bool
	// Logger receives the errors of background work that no caller waits
	// for (the commit loop, garbage collection, deletes of blocks nothing
	// references), once a minute while the same error repeats. Default
	// slog.Default(): a mount's log is its stderr, and a failure nobody
	// sees is the one thing background work must not do.
	Logger *slog.Logger
	// OnError, if set, is called with every such failure (op names the
	// work, as in the log), unthrottled, for metrics and tests. It runs on
	// the failing goroutine and must not block.
	OnError func(op string, err error)
}

func (c Config) withDefaults() Config {
	if c.CommitInterval <= 0 {
		c.CommitInterval = time.Second
	}
	if c.InlineMax <= 0 {
		c.InlineMax = 64 << 10
	}
	if c.InlineMax > meta.ChunkSize {
		c.InlineMax = meta.ChunkSize
	}
	if c.UploadConcurrency <= 0 {
		c.UploadConcurrency = 4
	}
	if c.GCInterval <= 0 {
		c.GCInterval = time.Minute
	}
	if c.GCGrace < 0 {
		c.GCGrace = 0
	} else if c.GCGrace == 0 {
		c.GCGrace = 10 * time.Minute
	}
	if c.MaxDirty <= 0 {
		c.MaxDirty = 256 << 20
	}
	if c.Reserve == 0 {
		c.Reserve = DefaultReserve
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxDirty < 4*meta.ChunkSize {
		c.MaxDirty = 4 * meta.ChunkSize
	}
	return c
}

// StatFS is what statfs(2) reports.
type StatFS struct {
	Capacity  uint64 // bytes
	UsedBytes uint64
	Inodes    uint64
}

// FS is a mounted volume's file system. Its methods are safe for
// concurrent use.
//
// Lock order: a file's mu may be held while taking fs.mu, never the
// reverse. meta serializes itself and may be called under either.
type FS struct {
	m        *meta.DB
	b        *blockstore.Store
	capacity uint64
	cfg      Config

	// bg is the context of background work (uploads, deletes); it ends
	// when Close returns.
	bg       context.Context
	bgCancel context.CancelFunc

	mu      sync.Mutex
	files   map[meta.Ino]*file // open files and files with dirty data
	handles map[Handle]*handle
	nextFH  Handle

	uploadSem chan struct{}
	mem       memGauge
	space     spaceGuard
	flushErr  atomic.Pointer[error] // last error of the commit loop, for throttled writers
	stats     counters
	reported  reportState

	metaCommit *groupCommit // meta.Commit, grouped

	// kernelTimes: the kernel keeps the mtime and ctime of regular files
	// and sends them (SetKernelTimes).
	kernelTimes atomic.Bool

	// The write-ahead log of device images (image.go, wal.go, fold.go).
	walMu       sync.Mutex          // serializes opening it
	walp        atomic.Pointer[wal] // nil until the volume has an image
	walCP       atomic.Uint64       // the checkpoint meta has committed
	imageCommit atomic.Uint64       // metaCommit round an image's flush needs (a new image's inode)
	folds       *groupCommit        // foldRound, grouped
	foldMu      sync.Mutex          // one fold at a time
	io          ioCounters

	kick     chan struct{} // asks the commit loop for a round now
	stop     chan struct{}
	loops    sync.WaitGroup
	bgWork   sync.WaitGroup // uploads and deletes
	closeOne sync.Once
}

// New returns an FS over m and b. It purges orphans left by a previous run
// (inodes unlinked while open) and starts the commit and GC loops.
// capacity is what StatFS reports as the size.
func New(ctx context.Context, m *meta.DB, b *blockstore.Store, capacity uint64, cfg Config) (*FS, error) {
	cfg = cfg.withDefaults()
	// Nothing has these open any more: the process that had died.
	if _, err := purgeOrphans(ctx, m); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	fs := &FS{
		m:         m,
		b:         b,
		capacity:  capacity,
		cfg:       cfg,
		bg:        bg,
		bgCancel:  cancel,
		files:     make(map[meta.Ino]*file),
		handles:   make(map[Handle]*handle),
		uploadSem: make(chan struct{}, cfg.UploadConcurrency),
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	fs.mem.init(cfg.MaxDirty)
	fs.space.free, fs.space.reserve = cfg.FreeSpace, cfg.Reserve
	fs.metaCommit = newGroupCommit(bg, fs.commitMeta)
	fs.folds = newGroupCommit(bg, fs.foldRound)
	if err := fs.openExistingWAL(ctx); err != nil {
		cancel()
		return nil, err
	}
	fs.loops.Add(2)
	go fs.commitLoop()
	go fs.gcLoop()
	return fs, nil
}

// Close makes everything durable (Sync), stops the background loops and
// leaves m and b open for their owner to close.
func (fs *FS) Close(ctx context.Context) error {
	err := fs.Sync(ctx)
	fs.closeOne.Do(func() {
		close(fs.stop)
		fs.loops.Wait()
		fs.bgWork.Wait()
		fs.bgCancel()
		fs.mem.close()
		if w := fs.log(); w != nil {
			if werr := w.close(); werr != nil {
				err = errors.Join(err, fmt.Errorf("close the write-ahead log: %w", werr))
			}
		}
	})
	return err
}

// Sync makes everything durable in the store: dirty file data uploaded,
// device images' log records folded into packs, the metadata committed.
func (fs *FS) Sync(ctx context.Context) error {
	ferr := fs.flushAll(ctx)
	cerr := fs.folds.Wait()
	return errors.Join(ferr, cerr)
}

// StatFS reports capacity and use.
func (fs *FS) StatFS(ctx context.Context) (StatFS, error) {
	u, err := fs.m.Usage(ctx)
	if err != nil {
		return StatFS{}, err
	}
	used := u.UsedBytes + uint64(max(fs.mem.load(), 0))
	return StatFS{Capacity: fs.capacity, UsedBytes: used, Inodes: u.Inodes}, nil
}

// openExistingWAL opens the write-ahead log at mount if the volume has one
// (it replays what the log holds past meta's checkpoint); a volume without
// images opens its log when its first image is made.
func (fs *FS) openExistingWAL(ctx context.Context) error {
	id, _, err := fs.m.WALState(ctx)
	if err != nil {
		return err
	}
	if id == "" {
		return nil
	}
	fs.walMu.Lock()
	defer fs.walMu.Unlock()
	return fs.openWALLocked(ctx)
}

// ioCounters count what IOStats reports, until the next commit moves them
// into meta.
type ioCounters struct {
	written             atomic.Uint64
	storedSent, rawSent uint64 // the block store's counts already moved (guarded by the commit group)
	walSent             uint64
}

// commitMeta is the metadata commit round: the IO counts since the last
// one go with it.
func (fs *FS) commitMeta(ctx context.Context) error {
	st := fs.b.Stats()
	d := meta.IOStats{
		Written:     fs.io.written.Swap(0),
		Uploaded:    st.StoredBytes - fs.io.storedSent,
		UploadedRaw: st.RawBytes - fs.io.rawSent,
	}
	if w := fs.log(); w != nil {
		n := w.appended.Load()
		d.WAL = n - fs.io.walSent
		fs.io.walSent = n
	}
	fs.io.storedSent, fs.io.rawSent = st.StoredBytes, st.RawBytes
	fs.m.AddIO(d)
	return fs.m.Commit(ctx)
}
