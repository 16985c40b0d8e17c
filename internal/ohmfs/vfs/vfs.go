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
	"sync"
	"sync/atomic"
	"syscall"
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

	cmu        sync.Mutex // guards the commit group state below
	ccond      *sync.Cond
	cStarted   uint64 // sequence number of the latest commit started
	cDone      uint64 // sequence number of the latest commit finished
	committing bool
	cErr       error

	kick     chan struct{} // asks the commit loop for a round now
	stop     chan struct{}
	loops    sync.WaitGroup
	bgWork   sync.WaitGroup // uploads and deletes
	closeOne sync.Once
}

// handle is an open file.
type handle struct {
	f     *file // nil for directories
	ino   meta.Ino
	dir   bool
	write bool
	// Sequential read detection, guarded by f.mu.
	nextOff    int64  // end of the furthest read so far
	prefetched uint64 // chunks below this index were prefetched already
	raWindow   int    // chunks to keep loading ahead; 0 until a sequential read
	raChunk    uint64 // the chunk the window last grew at
}

// New returns an FS over m and b. It purges orphans left by a previous run
// (inodes unlinked while open) and starts the commit and GC loops.
// capacity is what StatFS reports as the size.
func New(ctx context.Context, m *meta.DB, b *blockstore.Store, capacity uint64, cfg Config) (*FS, error) {
	cfg = cfg.withDefaults()
	orphans, err := m.Orphans(ctx)
	if err != nil {
		return nil, fmt.Errorf("list orphans: %w", err)
	}
	for _, ino := range orphans {
		if err := m.Purge(ctx, ino); err != nil {
			return nil, fmt.Errorf("purge orphan inode %d: %w", ino, err)
		}
	}
	if len(orphans) > 0 {
		if err := m.Commit(ctx); err != nil {
			return nil, fmt.Errorf("commit orphan purge: %w", err)
		}
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
	fs.ccond = sync.NewCond(&fs.cmu)
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
	})
	return err
}

// Sync flushes every dirty file and commits the metadata.
func (fs *FS) Sync(ctx context.Context) error {
	ferr := fs.flushAll(ctx)
	cerr := fs.commit(ctx)
	return errors.Join(ferr, cerr)
}

func (fs *FS) commitLoop() {
	defer fs.loops.Done()
	t := time.NewTicker(fs.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-t.C:
		case <-fs.kick:
		}
		err := fs.Sync(fs.bg)
		if err != nil {
			fs.flushErr.Store(&err)
		} else {
			fs.flushErr.Store(nil)
		}
		fs.mem.wake()
	}
}

// kickCommit asks the commit loop for a round as soon as possible.
func (fs *FS) kickCommit() {
	select {
	case fs.kick <- struct{}{}:
	default:
	}
}

// commit makes every meta call made before it was called durable. Callers
// that arrive while a commit runs share the next one.
func (fs *FS) commit(ctx context.Context) error {
	fs.cmu.Lock()
	defer fs.cmu.Unlock()
	target := fs.cStarted + 1
	for fs.cDone < target {
		if fs.committing {
			fs.ccond.Wait()
			continue
		}
		fs.committing = true
		fs.cStarted++
		seq := fs.cStarted
		fs.cmu.Unlock()
		// Not the caller's ctx: a cancelled request must not break a
		// commit others wait for.
		err := fs.m.Commit(fs.bg)
		fs.cmu.Lock()
		fs.committing = false
		fs.cDone = seq
		fs.cErr = err
		fs.ccond.Broadcast()
	}
	if fs.cErr != nil {
		return fmt.Errorf("commit metadata: %w", fs.cErr)
	}
	return nil
}

func (fs *FS) gcLoop() {
	defer fs.loops.Done()
	t := time.NewTicker(fs.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-fs.stop:
			return
		case <-t.C:
		}
		_ = fs.GC(fs.bg)
	}
}

// GC deletes the blocks freed longer than the grace period ago and forgets
// them. Only frees that are committed are considered, so that a crash can
// never bring back a chunk whose block is gone.
func (fs *FS) GC(ctx context.Context) error {
	start := time.Now()
	if err := fs.commit(ctx); err != nil {
		return err
	}
	cutoff := time.Now().Add(-fs.cfg.GCGrace)
	if committed := start.Add(-time.Millisecond); committed.Before(cutoff) {
		cutoff = committed
	}
	freed, err := fs.m.FreedBlocks(ctx, cutoff)
	if err != nil {
		return fmt.Errorf("list freed blocks: %w", err)
	}
	if len(freed) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(freed))
	var firstErr error
	for _, fb := range freed {
		if err := fs.b.Delete(ctx, fb.ID); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("delete block %d: %w", fb.ID, err)
			}
			continue
		}
		ids = append(ids, fb.ID)
	}
	if len(ids) > 0 {
		if err := fs.m.ForgetFreed(ctx, ids); err != nil {
			return fmt.Errorf("forget freed blocks: %w", err)
		}
	}
	return firstErr
}

// Lookup returns the attributes of name in parent.
func (fs *FS) Lookup(ctx context.Context, parent meta.Ino, name string) (meta.Attr, error) {
	a, err := fs.m.Lookup(ctx, parent, name)
	if err != nil {
		return a, err
	}
	fs.overlay(ctx, &a, true)
	return a, nil
}

// GetAttr returns ino's attributes, including writes not yet flushed.
func (fs *FS) GetAttr(ctx context.Context, ino meta.Ino) (meta.Attr, error) {
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return a, err
	}
	fs.overlay(ctx, &a, true)
	return a, nil
}

// overlay puts the in-memory size, times and use of a file with unflushed
// writes over its stored attributes. An upload moves a chunk from memory to
// meta under the file's lock, so attributes read from meta before taking
// that lock may miss the chunk on both sides: overlay reads them again
// under the lock (reread), except where the caller is inside a meta call
// (ReadDir's callback), which cannot call meta again.
func (fs *FS) overlay(ctx context.Context, a *meta.Attr, reread bool) {
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return
	}
	fs.mu.Lock()
	f := fs.files[a.Ino]
	fs.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if reread {
		if fresh, err := fs.m.GetAttr(ctx, a.Ino); err == nil {
			*a = fresh
		}
	}
	f.overlayLocked(a)
}

// SetAttr changes attributes; a Size change truncates or extends the data.
func (fs *FS) SetAttr(ctx context.Context, ino meta.Ino, set meta.SetAttr) (meta.Attr, error) {
	if set.Size == nil {
		a, err := fs.m.SetAttr(ctx, ino, set)
		if err != nil {
			return a, err
		}
		if set.Mtime != nil {
			fs.mu.Lock()
			f := fs.files[ino]
			fs.mu.Unlock()
			if f != nil {
				f.mu.Lock()
				f.timesDirty = false
				f.mu.Unlock()
			}
		}
		fs.overlay(ctx, &a, true)
		return a, nil
	}
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return meta.Attr{}, err
	}
	defer fs.unlockFile(f)
	if !f.regular {
		if f.dir {
			return meta.Attr{}, syscall.EISDIR
		}
		return meta.Attr{}, syscall.EINVAL
	}
	size := *set.Size
	changed := size != f.size
	if err := fs.truncateLocked(ctx, f, size); err != nil {
		return meta.Attr{}, err
	}
	if changed && set.Mtime == nil {
		now := time.Now()
		set.Mtime = &now
	}
	a, err := fs.m.SetAttr(ctx, ino, set)
	if err != nil {
		return a, err
	}
	f.size, f.metaSize = size, size
	if set.Mtime != nil {
		f.timesDirty = false
	}
	f.overlayLocked(&a)
	return a, nil
}

// parentGid applies the setgid-directory rule: it returns the group a new
// inode in parent gets, and whether parent is setgid.
func (fs *FS) parentGid(ctx context.Context, c Caller, parent meta.Ino) (uint32, bool, error) {
	pa, err := fs.m.GetAttr(ctx, parent)
	if err != nil {
		return 0, false, err
	}
	if pa.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, false, syscall.ENOTDIR
	}
	if pa.Mode&syscall.S_ISGID != 0 {
		return pa.Gid, true, nil
	}
	return c.Gid, false, nil
}

// Mknod creates a regular file, fifo, socket or device node.
func (fs *FS) Mknod(ctx context.Context, c Caller, parent meta.Ino, name string, mode, rdev uint32) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	if mode&syscall.S_IFMT == 0 {
		mode |= syscall.S_IFREG
	}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		return fs.Mkdir(ctx, c, parent, name, mode)
	}
	gid, sgid, err := fs.parentGid(ctx, c, parent)
	if err != nil {
		return meta.Attr{}, err
	}
	if sgid && gid != c.Gid && c.Uid != 0 {
		// As inode_init_owner: a non-member may not get a setgid file.
		mode &^= syscall.S_ISGID
	}
	return fs.m.Mknod(ctx, parent, name, mode, rdev, c.Uid, gid)
}

// Mkdir creates a directory. A setgid parent passes on its group and the
// setgid bit, as on ext4.
func (fs *FS) Mkdir(ctx context.Context, c Caller, parent meta.Ino, name string, mode uint32) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	gid, sgid, err := fs.parentGid(ctx, c, parent)
	if err != nil {
		return meta.Attr{}, err
	}
	mode = mode&^syscall.S_IFMT | syscall.S_IFDIR
	if sgid {
		mode |= syscall.S_ISGID
	}
	return fs.m.Mknod(ctx, parent, name, mode, 0, c.Uid, gid)
}

// Create creates and opens a regular file (open flags as in open(2)).
func (fs *FS) Create(ctx context.Context, c Caller, parent meta.Ino, name string, mode uint32, flags uint32) (meta.Attr, Handle, error) {
	mode = mode&^syscall.S_IFMT | syscall.S_IFREG
	a, err := fs.Mknod(ctx, c, parent, name, mode, 0)
	if err != nil {
		return a, 0, err
	}
	f := fs.fileFromAttr(a)
	fh := fs.newHandle(f, a.Ino, flags)
	f.mu.Unlock()
	return a, fh, nil
}

// Symlink creates a symbolic link.
func (fs *FS) Symlink(ctx context.Context, c Caller, parent meta.Ino, name, target string) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	gid, _, err := fs.parentGid(ctx, c, parent)
	if err != nil {
		return meta.Attr{}, err
	}
	return fs.m.Symlink(ctx, parent, name, target, c.Uid, gid)
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(ctx context.Context, ino meta.Ino) (string, error) {
	return fs.m.Readlink(ctx, ino)
}

// Link makes a hard link.
func (fs *FS) Link(ctx context.Context, ino, newParent meta.Ino, newName string) (meta.Attr, error) {
	if err := fs.admitSpace(inodeBytes); err != nil {
		return meta.Attr{}, err
	}
	a, err := fs.m.Link(ctx, ino, newParent, newName)
	if err != nil {
		return a, err
	}
	fs.mu.Lock()
	f := fs.files[ino]
	fs.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		f.orphan = false // linked back (O_TMPFILE + linkat)
		f.overlayLocked(&a)
		f.mu.Unlock()
	}
	return a, nil
}

// Unlink removes a name; the data lives on while the file is open.
func (fs *FS) Unlink(ctx context.Context, parent meta.Ino, name string) error {
	a, err := fs.m.Unlink(ctx, parent, name)
	if err != nil {
		return err
	}
	return fs.unlinked(ctx, a)
}

// unlinked purges an inode whose last link went away, unless it is open:
// then the last Release purges it.
func (fs *FS) unlinked(ctx context.Context, a meta.Attr) error {
	if a.Ino == 0 || a.Nlink > 0 {
		return nil
	}
	fs.mu.Lock()
	f := fs.files[a.Ino]
	fs.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		if !f.detached && f.opens > 0 {
			f.orphan = true
			f.mu.Unlock()
			return nil
		}
		fs.killLocked(f)
		f.mu.Unlock()
	}
	if err := fs.m.Purge(ctx, a.Ino); err != nil {
		return fmt.Errorf("purge inode %d: %w", a.Ino, err)
	}
	return nil
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(ctx context.Context, parent meta.Ino, name string) error {
	return fs.m.Rmdir(ctx, parent, name)
}

// Rename renames, with renameat2 flags.
func (fs *FS) Rename(ctx context.Context, oldParent meta.Ino, oldName string, newParent meta.Ino, newName string, flags uint32) error {
	// Write-then-rename is how programs replace files without fsync. Like
	// ext4's auto_da_alloc, put the file's data in meta before the rename,
	// so that no commit can hold the new name with the old data.
	if a, err := fs.m.Lookup(ctx, oldParent, oldName); err == nil && a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		fs.mu.Lock()
		f := fs.files[a.Ino]
		fs.mu.Unlock()
		if f != nil {
			if err := fs.flushFile(ctx, f); err != nil {
				return err
			}
		}
	}
	replaced, err := fs.m.Rename(ctx, oldParent, oldName, newParent, newName, flags)
	if err != nil {
		return err
	}
	return fs.unlinked(ctx, replaced)
}

// Open opens a file (flags as in open(2); O_TRUNC truncates).
func (fs *FS) Open(ctx context.Context, ino meta.Ino, flags uint32) (Handle, error) {
	f, err := fs.lockFile(ctx, ino)
	if err != nil {
		return 0, err
	}
	defer fs.unlockFile(f)
	if f.dir {
		return 0, syscall.EISDIR
	}
	if flags&syscall.O_TRUNC != 0 && f.regular && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := fs.truncateLocked(ctx, f, 0); err != nil {
			return 0, err
		}
		now := time.Now()
		var zero uint64
		if _, err := fs.m.SetAttr(ctx, ino, meta.SetAttr{Size: &zero, Mtime: &now, Ctime: &now}); err != nil {
			return 0, err
		}
		f.size, f.metaSize, f.timesDirty = 0, 0, false
	}
	return fs.newHandle(f, ino, flags), nil
}

// newHandle registers an open handle of f, which the caller has locked.
func (fs *FS) newHandle(f *file, ino meta.Ino, flags uint32) Handle {
	f.opens++
	h := &handle{f: f, ino: ino, write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	fs.mu.Lock()
	fs.nextFH++
	fh := fs.nextFH
	fs.handles[fh] = h
	fs.mu.Unlock()
	return fh
}

func (fs *FS) handle(fh Handle) *handle {
	fs.mu.Lock()
	h := fs.handles[fh]
	fs.mu.Unlock()
	return h
}

// fileOf returns the locked file of ino, through its handle when it has one.
func (fs *FS) fileOf(ctx context.Context, ino meta.Ino, fh Handle) (*file, *handle, error) {
	if h := fs.handle(fh); h != nil && h.f != nil && h.ino == ino {
		h.f.mu.Lock()
		if !h.f.detached {
			return h.f, h, nil
		}
		h.f.mu.Unlock()
	}
	f, err := fs.lockFile(ctx, ino)
	return f, nil, err
}

// Flush is called on each close(2) of a file descriptor. Like ext4, it does
// not make the data durable.
func (fs *FS) Flush(ctx context.Context, ino meta.Ino, fh Handle) error { return nil }

// Release closes a handle; the last close of an unlinked file frees it.
func (fs *FS) Release(ctx context.Context, ino meta.Ino, fh Handle) error {
	fs.mu.Lock()
	h := fs.handles[fh]
	delete(fs.handles, fh)
	fs.mu.Unlock()
	if h == nil || h.f == nil {
		return nil
	}
	f := h.f
	f.mu.Lock()
	f.opens--
	purge := false
	if f.opens <= 0 {
		f.opens = 0
		if f.orphan {
			fs.killLocked(f)
			purge = true
		} else {
			fs.maybeDetachLocked(f)
		}
	}
	f.mu.Unlock()
	if purge {
		if err := fs.m.Purge(ctx, f.ino); err != nil {
			return fmt.Errorf("purge inode %d: %w", f.ino, err)
		}
	}
	return nil
}

// Fsync returns when ino's data and metadata are durable.
func (fs *FS) Fsync(ctx context.Context, ino meta.Ino, fh Handle, datasync bool) error {
	fs.mu.Lock()
	f := fs.files[ino]
	fs.mu.Unlock()
	var ferr error
	if f != nil {
		ferr = fs.flushFile(ctx, f)
	}
	if err := fs.commit(ctx); err != nil {
		return err
	}
	return ferr
}

// OpenDir opens a directory for reading.
func (fs *FS) OpenDir(ctx context.Context, ino meta.Ino) (Handle, error) {
	a, err := fs.m.GetAttr(ctx, ino)
	if err != nil {
		return 0, err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, syscall.ENOTDIR
	}
	fs.mu.Lock()
	fs.nextFH++
	fh := fs.nextFH
	fs.handles[fh] = &handle{ino: ino, dir: true}
	fs.mu.Unlock()
	return fh, nil
}

// ReadDir calls fn for entries after offset, "." and ".." first (cookies 1
// and 2), until fn returns false.
func (fs *FS) ReadDir(ctx context.Context, ino meta.Ino, fh Handle, offset uint64, plus bool, fn func(meta.DirEntry) bool) error {
	if offset < 2 {
		self, err := fs.m.GetAttr(ctx, ino)
		if err != nil {
			return err
		}
		if offset < 1 {
			e := meta.DirEntry{Name: ".", Ino: ino, Mode: self.Mode, Cookie: 1}
			if plus {
				a := self
				e.Attr = &a
			}
			if !fn(e) {
				return nil
			}
		}
		pino, err := fs.m.Parent(ctx, ino)
		if err != nil {
			return err
		}
		e := meta.DirEntry{Name: "..", Ino: pino, Mode: syscall.S_IFDIR | 0o755, Cookie: 2}
		pa, err := fs.m.GetAttr(ctx, pino)
		if err != nil {
			return err
		}
		e.Mode = pa.Mode
		if plus {
			e.Attr = &pa
		}
		if !fn(e) {
			return nil
		}
		offset = 2
	}
	return fs.m.ReadDir(ctx, ino, offset, plus, func(e meta.DirEntry) bool {
		if plus && e.Attr != nil {
			fs.overlay(ctx, e.Attr, false)
		}
		return fn(e)
	})
}

// ReleaseDir closes a directory handle.
func (fs *FS) ReleaseDir(ctx context.Context, ino meta.Ino, fh Handle) error {
	fs.mu.Lock()
	delete(fs.handles, fh)
	fs.mu.Unlock()
	return nil
}

// FsyncDir makes the directory's entries durable.
func (fs *FS) FsyncDir(ctx context.Context, ino meta.Ino) error { return fs.Sync(ctx) }

// StatFS reports capacity and use.
func (fs *FS) StatFS(ctx context.Context) (StatFS, error) {
	u, err := fs.m.Usage(ctx)
	if err != nil {
		return StatFS{}, err
	}
	used := u.UsedBytes + uint64(max(fs.mem.load(), 0))
	return StatFS{Capacity: fs.capacity, UsedBytes: used, Inodes: u.Inodes}, nil
}

// GetXattr returns an xattr's value.
func (fs *FS) GetXattr(ctx context.Context, ino meta.Ino, name string) ([]byte, error) {
	return fs.m.GetXattr(ctx, ino, name)
}

// SetXattr sets an xattr (flags XATTR_CREATE, XATTR_REPLACE).
func (fs *FS) SetXattr(ctx context.Context, ino meta.Ino, name string, value []byte, flags uint32) error {
	if err := fs.admitSpace(uint64(len(name) + len(value))); err != nil {
		return err
	}
	return fs.m.SetXattr(ctx, ino, name, value, flags)
}

// ListXattr lists xattr names.
func (fs *FS) ListXattr(ctx context.Context, ino meta.Ino) ([]string, error) {
	return fs.m.ListXattr(ctx, ino)
}

// RemoveXattr removes an xattr.
func (fs *FS) RemoveXattr(ctx context.Context, ino meta.Ino, name string) error {
	return fs.m.RemoveXattr(ctx, ino, name)
}

// memGauge counts the bytes of dirty buffers and makes writers wait when
// there are too many.
type memGauge struct {
	n      atomic.Int64
	max    int64
	mu     sync.Mutex
	cond   *sync.Cond
	closed bool
}

func (g *memGauge) init(max int64) {
	g.max = max
	g.cond = sync.NewCond(&g.mu)
}

func (g *memGauge) load() int64 { return g.n.Load() }

func (g *memGauge) charge(n int) { g.n.Add(int64(n)) }

func (g *memGauge) release(n int) {
	if g.n.Add(-int64(n)) <= g.max {
		g.wake()
	}
}

func (g *memGauge) wake() {
	g.mu.Lock()
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *memGauge) close() {
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// throttle makes a writer wait while too much dirty data is in memory,
// asking the commit loop to flush.
func (fs *FS) throttle() error {
	g := &fs.mem
	if g.n.Load() <= g.max {
		return nil
	}
	fs.kickCommit()
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.n.Load() > g.max && !g.closed {
		g.cond.Wait()
		if g.n.Load() <= g.max {
			break
		}
		if p := fs.flushErr.Load(); p != nil {
			return fmt.Errorf("flush dirty data: %v: %w", *p, syscall.EIO)
		}
		fs.kickCommit()
	}
	return nil
}
