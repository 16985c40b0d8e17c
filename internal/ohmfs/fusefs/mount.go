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
	dev        uint64 // the mount's device: its minor is the FUSE connection's number
	fs         *vfs.FS
	server     *fuse.Server
	logger     *log.Logger

	done     chan struct{} // closed when the kernel has let go of the mount
	stopSync chan struct{}
	syncDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// maxWrite is the largest FUSE request the mount takes (max_read,
// max_write, max_pages): 1 MiB.
const maxWrite = 1 << 20

// Mount serves vol at mountpoint, an absolute path without symlinks
// (created, with its missing parents, if missing), and returns once the
// mount answers. It fails with ErrBusy if something is mounted there
// already, and with ErrSymlink if the path has a symlink in it (see
// mountpoint.go for why). The caller keeps owning vol and closes it after
// (*Mounted).Close; ctx bounds the setup only. Mounting needs
// CAP_SYS_ADMIN.
func Mount(ctx context.Context, vol *volume.Volume, mountpoint string, opts Options) (*Mounted, error) {
	fd, dev, mp, err := attach(mountpoint, opts)
	if err != nil {
		return nil, err
	}
	m, err := serve(ctx, vol, mp, dev, fd, nil, opts)
	if err != nil {
		// The kernel has the mount but no server: end it.
		AbortConnection(int(unix.Minor(dev)))
		unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return m, nil
}

// serve answers the FUSE connection on fd (its /dev/fuse descriptor,
// which serve takes over: go-fuse closes it when done) of the mount at mp
// (device number mdev) with a file system over vol. With init not nil the
// connection was served before and is resumed (see resume.go).
func serve(ctx context.Context, vol *volume.Volume, mp string, mdev uint64, fd int, init []byte, opts Options) (*Mounted, error) {
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
		unix.Close(fd)
		return nil, err
	}
	raw := newFileSystem(context.WithoutCancel(ctx), fs, logger)
	raw.wantWriteback = !opts.NoWritebackCache
	raw.afterFsync = opts.AfterFsync
	// go-fuse serves a descriptor it is given as /dev/fd/N; it reads the
	// kernel's INIT from it before NewServer returns.
	serveFD, switchover := fd, func() error { return nil }
	if init != nil {
		if serveFD, switchover, err = replayInit(fd, init); err != nil {
			unix.Close(fd)
			fs.Close(ctx)
			return nil, err
		}
	}
	server, err := fuse.NewServer(raw, fmt.Sprintf("/dev/fd/%d", serveFD), mountOptions(opts, logger))
	if err != nil {
		// go-fuse has closed serveFD.
		if serveFD != fd {
			unix.Close(fd)
		}
		fs.Close(ctx)
		return nil, err
	}
	if err := switchover(); err != nil {
		unix.Close(fd)
		fs.Close(ctx)
		return nil, err
	}
	m := &Mounted{
		mountpoint: mp,
		dev:        mdev,
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
	if init != nil {
		// The kernel remembers that POLL is not answered; what the dead
		// server had read is sent again, to this one.
		if err := resend(serveFD); err != nil {
			m.Abort()
			fs.Close(ctx)
			return nil, err
		}
	} else if err := stopPolls(mp); err != nil {
		logger.Printf("ohmfs: %s: %v", mp, err)
	}
	// The kernel offers FUSE its default readahead (128 KiB) at init, and
	// a cold sequential read then costs one round trip per 128 KiB. Up to
	// max_pages (1 MiB) it can only be raised through the mount's bdi
	// afterwards: measured 2.55 s -> 2.04 s for a cold 2 GiB read; 4 MiB
	// was no better.
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(mdev), unix.Minor(mdev))
	if err := os.WriteFile(bdi, []byte(strconv.Itoa(readAheadKB)), 0o644); err != nil {
		logger.Printf("ohmfs: raise readahead of %s: %v", mp, err)
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
	stop, err := startWriteback(mp, mdev, interval)
	if err != nil {
		close(m.syncDone)
		m.Abort()
		m.fs.Close(ctx)
		return nil, err
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
	// The mount itself is made by mountFUSE; these are what INIT
	// negotiates.
	return &fuse.MountOptions{
		MaxBackground: 64,
		MaxWrite:      maxWrite,
		MaxReadAhead:  maxWrite,
		// Symlinks only change through us: let the kernel keep targets.
		EnableSymlinkCaching: true,
		// Nothing changes file data behind the kernel, so it need not
		// drop a file's pages when it sees a new mtime.
		ExplicitDataCacheControl: true,
		ExtraCapabilities:        extra,
		Debug:                    opts.Debug,
		Logger:                   logger,
	}
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
		if err := syncMount(m.mountpoint, m.dev); err != nil && !errors.Is(err, unix.ENOTCONN) {
			errs = append(errs, fmt.Errorf("syncfs: %w", err))
		}
		if err := m.fs.Sync(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sync: %w", err))
		}
		err := m.unmount(0)
		if errors.Is(err, unix.EBUSY) {
			m.logger.Printf("ohmfs: %s is busy; detaching it lazily", m.mountpoint)
			err = m.unmount(unix.MNT_DETACH)
		}
		if err != nil {
			errs = append(errs, err)
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
		if err := AbortConnection(int(unix.Minor(m.dev))); err != nil {
			errs = append(errs, err)
		}
		if err := m.unmount(unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, err)
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

// pollHackName is the file go-fuse answers for itself so that the kernel
// can be made to send one POLL, which go-fuse answers ENOSYS.
const pollHackName = ".go-fuse-epoll-hack"

// stopPolls makes the kernel stop sending POLL requests (go-fuse's "poll
// hack", which it runs only for mounts it makes itself). Go's runtime adds
// every file it opens to its epoll set; on a FUSE file that sends POLL,
// and a process that opens files in its own mount could then wait on
// itself with no thread left to answer. Once POLL was answered with
// ENOSYS the connection never sends it again.
func stopPolls(mp string) error {
	fd, err := unix.Openat2(unix.AT_FDCWD, filepath.Join(mp, pollHackName), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return fmt.Errorf("stop POLL requests: %w", err)
	}
	defer unix.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

// unmount unmounts the mount at m.mountpoint if it is still this one: the
// path is looked up without symlinks, and only a mount root with this
// mount's device is unmounted (the last component not followed either).
// A mount that is gone already is no error.
func (m *Mounted) unmount(flags int) error {
	dir, err := openNoSymlinks(unix.AT_FDCWD, m.mountpoint)
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	dev, root, err := rootDev(dir)
	dir.Close()
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	if !root || dev != m.dev {
		return nil // gone already; something else may be mounted there now
	}
	if err := unix.Unmount(m.mountpoint, flags|unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	return nil
}

// MountedAt reports whether something is mounted at path (absolute),
// and the type of the filesystem on top. The path is looked up without
// following symlinks (ErrSymlink if it has one) and the mount is not asked
// anything, so a dead FUSE mount answers too.
func MountedAt(path string) (fstype string, ok bool, err error) {
	dir, err := openNoSymlinks(unix.AT_FDCWD, filepath.Clean(path))
	if errors.Is(err, unix.ENOENT) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", path, err)
	}
	defer dir.Close()
	return mountedOn(dir)
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
