// Package fusefs serves an ohmfs volume to the kernel through FUSE
// (hanwen/go-fuse v2, raw API): a thin adapter over package vfs.
//
// A volume has a single writer, so the mount lets the kernel cache
// everything it can (long entry and attribute timeouts, negative entries,
// kept page cache, the writeback cache, readdirplus, cached directory
// listings and symlinks): most repeated operations never reach the daemon.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/vfs"
	"ohm/internal/ohmfs/volume"
)

// readAheadKB is the kernel readahead the mount asks for, in KiB: the
// largest FUSE read request (max_pages).
const readAheadKB = 1024

// FSName is what df shows as the filesystem; the type is fuse.ohmfs.
const FSName = "ohmfs"

// ErrBusy is returned (wrapped) by Mount when something is already mounted
// on the mountpoint.
var ErrBusy = errors.New("mountpoint is busy")

// Options tune a Mount. Zero values take the defaults.
type Options struct {
	VFS vfs.Config

	// NoAllowOther keeps other users out. By default the mount is
	// allow_other: agents run as uid 1000 while the mount is root's.
	NoAllowOther bool

	// NoWritebackCache turns the kernel's writeback cache off.
	NoWritebackCache bool

	// SyncInterval is how often the kernel is made to write back dirty
	// pages (syncfs), so that writes it holds in its writeback cache reach
	// vfs and its commit bound. Default: half of VFS.CommitInterval (or
	// 500 ms). The loop runs in a helper process (see writeback.go).
	SyncInterval time.Duration

	// AfterFsync, if set, runs after every successful fsync and fsyncdir
	// (vfs has made the change durable in the volume's local metadata and
	// its object store) and before the kernel hears back; an error fails
	// the call with EIO. `ohm fs mount --fsync=replica` waits here until the
	// metadata replica has the change.
	AfterFsync func(ctx context.Context) error

	// Debug logs every FUSE request.
	Debug bool

	// Logger receives errors that are not plain errnos. Default log.Default().
	Logger *log.Logger
}

// Mounted is a volume served at a mountpoint.
type Mounted struct {
	mountpoint string
	fs         *vfs.FS
	server     *fuse.Server
	logger     *log.Logger

	done     chan struct{} // closed when the kernel has let go of the mount
	stopSync chan struct{}
	syncDone chan struct{}

	conn int // the FUSE connection's number in /sys/fs/fuse/connections; 0 if unknown

	closeOnce sync.Once
	closeErr  error
}

// Mount serves vol at mountpoint (created if missing) and returns once the
// mount answers. It fails with ErrBusy if something is mounted there
// already. The caller keeps owning vol and closes it after
// (*Mounted).Close; ctx bounds the setup only.
func Mount(ctx context.Context, vol *volume.Volume, mountpoint string, opts Options) (*Mounted, error) {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if real, err := filepath.EvalSymlinks(mp); err == nil {
		mp = real
	}
	if fi, err := os.Stat(mp); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("mount %s: not a directory", mountpoint)
	}
	if fstype, ok, err := MountedAt(mp); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	} else if ok {
		return nil, fmt.Errorf("mount %s: %w (%s already mounted there)", mountpoint, ErrBusy, fstype)
	}

	logger := opts.Logger
	if logger == nil {
		logger = log.Default()
	}
	cfg := opts.VFS
	if cfg.FreeSpace == nil {
		// The metadata lives on this host in every kind of volume (beside
		// the blocks of a file volume, in the cache of an S3 one): its
		// filesystem is the one a workspace must not fill.
		cfg.FreeSpace = hostFree(filepath.Dir(vol.Meta.Path()))
	}
	// ctx bounds the setup only: the file system lives until Close.
	fs, err := vfs.New(context.WithoutCancel(ctx), vol.Meta, vol.Blocks, vol.Capacity, cfg)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}

	raw := newFileSystem(context.WithoutCancel(ctx), fs, logger)
	raw.wantWriteback = !opts.NoWritebackCache
	raw.afterFsync = opts.AfterFsync
	mo := mountOptions(opts, logger)
	server, err := fuse.NewServer(raw, mp, mo)
	if err != nil {
		fs.Close(ctx)
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	m := &Mounted{
		mountpoint: mp,
		fs:         fs,
		server:     server,
		logger:     logger,
		done:       make(chan struct{}),
		stopSync:   make(chan struct{}),
		syncDone:   make(chan struct{}),
	}
	go func() {
		server.Serve()
		close(m.done)
	}()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		fs.Close(ctx)
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	// The FUSE connection's number (for Abort) is the minor of the
	// mount's device; the root's attributes come from us.
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err == nil {
		m.conn = int(unix.Minor(st.Dev))
		// The kernel offers FUSE its default readahead (128 KiB) at
		// init, and a cold sequential read then costs one round trip per
		// 128 KiB. Up to max_pages (1 MiB) it can only be raised through
		// the mount's bdi afterwards: measured 2.55 s -> 2.04 s for a
		// cold 2 GiB read; 4 MiB was no better.
		bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
		if err := os.WriteFile(bdi, []byte(strconv.Itoa(readAheadKB)), 0o644); err != nil {
			logger.Printf("ohmfs: raise readahead of %s: %v", mountpoint, err)
		}
	}

	interval := opts.SyncInterval
	if interval <= 0 {
		interval = opts.VFS.CommitInterval / 2
		if interval <= 0 {
			interval = 500 * time.Millisecond
		}
	}
	if !raw.writeback.Load() {
		close(m.syncDone)
		return m, nil
	}
	stop, err := startWriteback(mp, st.Dev, interval)
	if err != nil {
		m.Close(ctx)
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go func() {
		defer close(m.syncDone)
		select {
		case <-m.stopSync:
		case <-m.done:
		}
		stop()
	}()
	return m, nil
}

func mountOptions(opts Options, logger *log.Logger) *fuse.MountOptions {
	extra := uint64(fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ATOMIC_O_TRUNC)
	if !opts.NoWritebackCache {
		extra |= fuse.CAP_WRITEBACK_CACHE
	}
	return &fuse.MountOptions{
		AllowOther:    !opts.NoAllowOther,
		Options:       []string{"default_permissions"},
		MaxBackground: 64,
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		FsName:        FSName,
		Name:          FSName,
		// Symlinks only change through us: let the kernel keep targets.
		EnableSymlinkCaching: true,
		// Nothing changes file data behind the kernel, so it need not
		// drop a file's pages when it sees a new mtime.
		ExplicitDataCacheControl: true,
		DirectMount:              true,
		ExtraCapabilities:        extra,
		Debug:                    opts.Debug,
		Logger:                   logger,
	}
}

// syncfs writes the kernel's dirty pages for the mount at mountpoint back
// to its server.
func syncfs(mountpoint string) error {
	fd, err := unix.Open(mountpoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// FS returns the file system the mount serves.
func (m *Mounted) FS() *vfs.FS { return m.fs }

// Mountpoint returns the absolute mountpoint.
func (m *Mounted) Mountpoint() string { return m.mountpoint }

// Done is closed when the mount is gone (unmounted by Close or by anyone
// else).
func (m *Mounted) Done() <-chan struct{} { return m.done }

// Wait blocks until the mount is gone.
func (m *Mounted) Wait() { <-m.done }

// Close makes everything durable, unmounts (lazily if the mount is busy)
// and closes the file system. It is safe to call after the mount was
// unmounted from outside, and more than once.
func (m *Mounted) Close(ctx context.Context) error {
	m.closeOnce.Do(func() { m.closeErr = m.close(ctx) })
	return m.closeErr
}

func (m *Mounted) close(ctx context.Context) error {
	close(m.stopSync)
	<-m.syncDone

	var errs []error
	select {
	case <-m.done:
	default:
		// Push the kernel's dirty pages and commit them before the
		// unmount, so that even a lazy unmount leaves nothing behind.
		if err := syncfs(m.mountpoint); err != nil && !errors.Is(err, unix.ENOTCONN) {
			errs = append(errs, fmt.Errorf("syncfs: %w", err))
		}
		if err := m.fs.Sync(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sync: %w", err))
		}
		if err := unix.Unmount(m.mountpoint, 0); err != nil {
			if !errors.Is(err, unix.EBUSY) {
				// Not ours to unmount (e.g. no CAP_SYS_ADMIN): go-fuse
				// falls back to fusermount.
				err = m.server.Unmount()
			} else {
				m.logger.Printf("ohmfs: %s is busy; detaching it lazily", m.mountpoint)
				err = unix.Unmount(m.mountpoint, unix.MNT_DETACH)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m.mountpoint, err))
			}
		}
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("waiting for the kernel to release %s: %w", m.mountpoint, ctx.Err()))
	}
	if err := m.fs.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Abort ends the mount without making anything more durable: the FUSE
// connection is aborted, so that every request in flight and every later
// one fails (ENOTCONN) and the kernel drops its dirty pages, and the
// mountpoint is detached. It is for a mount that must stop writing at once
// (its volume's lease is lost: another host may own the volume now).
// After Abort, Close only stops the background loops.
func (m *Mounted) Abort() error {
	var errs []error
	m.closeOnce.Do(func() {
		close(m.stopSync)
		<-m.syncDone
		if m.conn > 0 {
			if err := AbortConnection(m.conn); err != nil {
				errs = append(errs, err)
			}
		}
		if err := unix.Unmount(m.mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("detach %s: %w", m.mountpoint, err))
		}
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("the kernel did not release %s", m.mountpoint))
		}
		m.closeErr = errors.New("mount aborted")
	})
	return errors.Join(errs...)
}

// MountedAt reports whether something is mounted at path (an absolute,
// symlink-free path), and its file system type.
func MountedAt(path string) (fstype string, ok bool, err error) {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil || len(ms) == 0 {
		return "", false, err
	}
	return ms[0].FSType, true, nil
}

// hostFree reports the bytes an unprivileged writer may still use on the
// filesystem holding dir.
func hostFree(dir string) func() (uint64, error) {
	return func() (uint64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", dir, err)
		}
		return st.Bavail * uint64(st.Bsize), nil
	}
}
