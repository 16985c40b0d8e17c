package disk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/units"
)

// Config says where a disk lives and how it is mounted.
type Config struct {
	// Kind is the disk's filesystem.
	Kind Kind
	// ImageDir holds the image: normally the root of the ohmfs mount of
	// the computer's volume. It must belong to root, be writable by root
	// only, and sit in a directory only root can enter (mode 0700).
	ImageDir string
	// Image is the image's file name in ImageDir, e.g. "workspace.img".
	Image string
	// Mountpoint is where the filesystem is mounted on the host (created
	// if missing). Its parent must be a root-only directory (mode 0700).
	Mountpoint string
	// DevDir is a root-only directory for the device node df names the
	// filesystem by (see Source); made, mode 0700, if missing. One per
	// disk: the node's name is the same for all of them.
	DevDir string
	// Source is the name df shows in its Filesystem column; default
	// DefaultSource.
	Source string
	// Label is the filesystem's label (optional).
	Label string
	// MountOptions replace DefaultMountOptions(Kind) when not nil.
	MountOptions []string
	// MaxIOKB and QueueDepth tune the loop device (max_sectors_kb and
	// nr_requests); zero keeps the kernel's values.
	MaxIOKB, QueueDepth int
}

func (c Config) source() string {
	if c.Source == "" {
		return DefaultSource
	}
	return c.Source
}

func (c Config) mountOptions() []string {
	if c.MountOptions != nil {
		return c.MountOptions
	}
	return DefaultMountOptions(c.Kind)
}

// key names the image in the loop devices' tags.
func (c Config) key() string {
	sum := sha256.Sum256([]byte(filepath.Join(filepath.Clean(c.ImageDir), c.Image)))
	return hex.EncodeToString(sum[:8])
}

func (c Config) validate() error {
	if _, err := ParseKind(string(c.Kind)); err != nil {
		return err
	}
	for _, p := range []struct{ name, v string }{{"image directory", c.ImageDir}, {"mountpoint", c.Mountpoint}, {"device directory", c.DevDir}} {
		if p.v == "" || !filepath.IsAbs(p.v) {
			return fmt.Errorf("disk %s: the %s must be an absolute path (got %q)", c.Image, p.name, p.v)
		}
	}
	if c.Image == "" || c.Image != filepath.Base(c.Image) || c.Image == "." || c.Image == ".." {
		return fmt.Errorf("disk image name %q must be a plain file name", c.Image)
	}
	if s := c.source(); s != filepath.Base(s) || s == "." || s == ".." {
		return fmt.Errorf("disk source %q must be a plain file name", s)
	}
	return nil
}

// ErrInUse is returned (wrapped) by Open and Create when another Disk, in
// this process or another, has the image open.
var ErrInUse = errors.New("disk image is in use")

// ErrExists is returned (wrapped) by Create when the image exists.
var ErrExists = errors.New("disk image already exists")

// ErrNotExist is returned (wrapped) by Open when the image is missing.
var ErrNotExist = errors.New("disk image does not exist")

// Disk is a mounted disk: its image attached to a loop device and its
// filesystem mounted at Config.Mountpoint. It holds an exclusive lock on
// the image until Close.
type Disk struct {
	cfg  Config
	img  *os.File
	loop loopDev

	mu     sync.Mutex
	size   int64
	frozen bool
	closed bool
	held   bool // after Close: something else still held the filesystem
	guard  *guard
}

// Create makes a new disk of size bytes (rounded up to 4 KiB): a sparse
// image, a filesystem on it, mounted. It fails with ErrExists if the image
// is there already. On failure nothing it made is left behind.
func Create(ctx context.Context, cfg Config, size int64) (d *Disk, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if size < minSize(cfg.Kind) {
		return nil, fmt.Errorf("disk %s: %s is too small; a %s disk needs at least %s", cfg.Image, units.FormatSize(uint64(max(size, 0))), cfg.Kind, units.FormatSize(uint64(minSize(cfg.Kind))))
	}
	size = (size + sectorSize - 1) / sectorSize * sectorSize
	dir, err := imageDir(cfg.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", cfg.Image, err)
	}
	defer dir.Close()
	img, err := openAt(dir, cfg.Image, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("disk %s: %w", filepath.Join(cfg.ImageDir, cfg.Image), ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("create disk image: %w", err)
	}
	defer func() {
		if err != nil {
			img.Close()
			unix.Unlinkat(int(dir.Fd()), cfg.Image, 0)
		}
	}()
	if err := lockImage(img); err != nil {
		return nil, err
	}
	// Mark the empty file a device image before anything is written to
	// it: ohmfs then logs its writes and makes a flush one durable local
	// append (docs/durability.md). Elsewhere the mark is a harmless
	// attribute, and where xattrs are unsupported the image is a file.
	if err := unix.Fsetxattr(int(img.Fd()), vfs.XattrLayout, []byte(vfs.LayoutImage), unix.XATTR_CREATE); err != nil &&
		!errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EOPNOTSUPP) {
		return nil, fmt.Errorf("mark disk image %s: %w", img.Name(), err)
	}
	if err := img.Truncate(size); err != nil {
		return nil, fmt.Errorf("size disk image %s: %w", img.Name(), err)
	}
	dev, loop, err := attachImage(dir, cfg.Image, loopTag(cfg.key()))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			detachLoop(dev)
		} else {
			dev.Close() // the mount holds the device now
		}
	}()
	if err := mkfs(ctx, cfg.Kind, cfg.Label, loop.path()); err != nil {
		return nil, err
	}
	d = &Disk{cfg: cfg, img: img, loop: loop, size: size}
	if err := d.mount(); err != nil {
		return nil, err
	}
	return d, nil
}

// Open mounts an existing disk. A disk still mounted at the mountpoint by
// an earlier process (one that crashed, or a daemon being replaced) is
// taken over as it is; a mount or loop device of the image that a crash
// left broken is cleaned up first.
func Open(ctx context.Context, cfg Config) (d *Disk, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := imageDir(cfg.ImageDir)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", cfg.Image, err)
	}
	defer dir.Close()
	img, err := openAt(dir, cfg.Image, unix.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("disk %s: %w", filepath.Join(cfg.ImageDir, cfg.Image), ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	defer func() {
		if err != nil {
			img.Close()
		}
	}()
	if err := lockImage(img); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(img.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", img.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("disk image %s is not a regular file", img.Name())
	}
	d = &Disk{cfg: cfg, img: img, size: st.Size}
	if ok, err := d.adopt(&st); err != nil {
		return nil, err
	} else if ok {
		return d, nil
	}
	if err := cleanupImage(cfg.key(), &st); err != nil {
		return nil, err
	}
	dev, loop, err := attachImage(dir, cfg.Image, loopTag(cfg.key()))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			detachLoop(dev)
		} else {
			dev.Close()
		}
	}()
	d.loop = loop
	if err := d.mount(); err != nil {
		return nil, err
	}
	return d, nil
}

// imageDir opens the image directory after checking that only root can
// change it, nor reach it (its parent is root-only).
func imageDir(path string) (*os.File, error) {
	if err := rootOnly(filepath.Dir(filepath.Clean(path))); err != nil {
		return nil, err
	}
	return privateDir(path, false)
}

// attachImage attaches the image name in dir to a loop device through an
// open file description of its own: the loop device keeps the one it is
// given for as long as it is attached, and the lock a Disk holds must not
// outlive the Disk's process (so that a new process can take over a disk
// a crashed one left mounted).
//
// The file is opened O_DIRECT: ohmfs then serves it without the kernel's
// attribute and page caching (FOPEN_DIRECT_IO), so that a flush of the
// disk is one FUSE FSYNC and a write one FUSE WRITE.
func attachImage(dir *os.File, name, tag string) (*os.File, loopDev, error) {
	f, err := openAt(dir, name, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return nil, loopDev{}, fmt.Errorf("open disk image: %w", err)
	}
	defer f.Close()
	return attachLoop(f, tag)
}

// lockImage takes the image's exclusive lock, which a Disk holds for its
// life, so that two processes never attach the same image.
func lockImage(img *os.File) error {
	if err := unix.Flock(int(img.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("disk %s: %w", img.Name(), ErrInUse)
		}
		return fmt.Errorf("lock disk image %s: %w", img.Name(), err)
	}
	return nil
}

// mount makes the device node df names, and mounts the filesystem at the
// mountpoint.
func (d *Disk) mount() (err error) {
	devDir, err := d.devDir()
	if err != nil {
		return err
	}
	defer devDir.Close()
	src := d.cfg.source()
	unix.Unlinkat(int(devDir.Fd()), src, 0)
	if err := unix.Mknodat(int(devDir.Fd()), src, unix.S_IFBLK|0o600, int(d.loop.rdev)); err != nil {
		return fmt.Errorf("make device node %s: %w", filepath.Join(d.cfg.DevDir, src), err)
	}
	defer func() {
		if err != nil {
			unix.Unlinkat(int(devDir.Fd()), src, 0)
		}
	}()
	target, err := d.mountTarget()
	if err != nil {
		return err
	}
	defer target.Close()
	opts := slices.Concat(d.cfg.mountOptions(), flushOptions(d.cfg.Kind, d.img))
	if err := mountDevice(d.cfg.Kind, devDir, src, target, opts); err != nil {
		return fmt.Errorf("mount disk %s at %s: %w", d.cfg.Image, d.cfg.Mountpoint, err)
	}
	if err := d.loop.tune(d.cfg.MaxIOKB, d.cfg.QueueDepth); err != nil {
		unmount(d.cfg.Mountpoint, true)
		return err
	}
	return nil
}

func (d *Disk) devDir() (*os.File, error) {
	dir, err := privateDir(d.cfg.DevDir, true)
	if err != nil {
		return nil, err
	}
	if err := rootOnly(d.cfg.DevDir); err != nil {
		dir.Close()
		return nil, err
	}
	return dir, nil
}

// mountTarget opens the mountpoint (made if missing) for move_mount,
// after checking its parent is root-only and nothing is mounted there.
func (d *Disk) mountTarget() (*os.File, error) {
	mp := filepath.Clean(d.cfg.Mountpoint)
	parentPath, name := filepath.Dir(mp), filepath.Base(mp)
	if err := rootOnly(parentPath); err != nil {
		return nil, err
	}
	parent, err := privateDir(parentPath, false)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	if err := unix.Mkdirat(int(parent.Fd()), name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create mountpoint %s: %w", mp, err)
	}
	if m, ok, err := mountinfo.At(mp); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("mountpoint %s is busy: %s is mounted there", mp, m.FSType)
	}
	return openAt(parent, name, unix.O_PATH|unix.O_DIRECTORY, 0)
}

// adopt takes over a mount of this disk left by an earlier process: the
// device node in DevDir names a loop device whose backing file is this
// image and whose filesystem is mounted at the mountpoint. A mount at the
// mountpoint that is not that (its storage gone) is detached.
func (d *Disk) adopt(img *unix.Stat_t) (bool, error) {
	mp := filepath.Clean(d.cfg.Mountpoint)
	m, ok, err := mountinfo.At(mp)
	if err != nil || !ok {
		return false, err
	}
	var node unix.Stat_t
	nodePath := filepath.Join(d.cfg.DevDir, d.cfg.source())
	if err := unix.Lstat(nodePath, &node); err == nil && node.Mode&unix.S_IFMT == unix.S_IFBLK && m.Source == d.cfg.source() {
		if l, ok := loopByRdev(node.Rdev); ok {
			if st, err := statLoop(l); err == nil && st.ours() && st.device == img.Dev && st.inode == img.Ino && l.busy() {
				d.loop = st.loopDev
				if size, err := l.size(); err == nil {
					d.size = size
				}
				return true, nil
			}
		}
	}
	// Whatever is mounted there is not this disk in working order:
	// nothing of it can be flushed any more (its image is elsewhere or
	// its storage is gone), so it is detached, not unmounted cleanly.
	if m.FSType != string(d.cfg.Kind) {
		return false, fmt.Errorf("mountpoint %s is busy: %s is mounted there", mp, m.FSType)
	}
	if err := unmount(mp, true); err != nil {
		return false, err
	}
	return false, nil
}

// Mountpoint is where the filesystem is mounted on the host.
func (d *Disk) Mountpoint() string { return d.cfg.Mountpoint }

// Device is the loop device's path, e.g. /dev/loop3.
func (d *Disk) Device() string { return d.loop.path() }

// DeviceNumber is the loop device's device number (st_rdev).
func (d *Disk) DeviceNumber() uint64 { return d.loop.rdev }

// Kind is the disk's filesystem.
func (d *Disk) Kind() Kind { return d.cfg.Kind }

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.size
}

// root opens the mounted filesystem's root directory (for ioctls).
func (d *Disk) root() (*os.File, error) {
	return openNoFollow(filepath.Clean(d.cfg.Mountpoint), unix.O_RDONLY|unix.O_DIRECTORY, 0)
}

func (d *Disk) usable() error {
	if d.closed {
		return fmt.Errorf("disk %s is closed", d.cfg.Image)
	}
	return nil
}

// Grow makes the disk size bytes (rounded up to 4 KiB) while it stays
// mounted: the image, the loop device, then the filesystem. Shrinking is
// refused.
func (d *Disk) Grow(ctx context.Context, size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(); err != nil {
		return err
	}
	size = (size + sectorSize - 1) / sectorSize * sectorSize
	if size < d.size {
		return fmt.Errorf("disk %s is %s and can only grow, not shrink to %s", d.cfg.Image, units.FormatSize(uint64(d.size)), units.FormatSize(uint64(max(size, 0))))
	}
	if size == d.size {
		return nil
	}
	if d.frozen {
		return fmt.Errorf("disk %s is frozen; thaw it before growing it", d.cfg.Image)
	}
	if err := d.img.Truncate(size); err != nil {
		return fmt.Errorf("grow disk image %s: %w", d.img.Name(), err)
	}
	if err := d.loop.setCapacity(); err != nil {
		return err
	}
	root, err := d.root()
	if err != nil {
		return err
	}
	defer root.Close()
	switch d.cfg.Kind {
	case Btrfs:
		err = btrfsResizeMax(root)
	case XFS:
		err = xfsGrow(root, size)
	case Ext4:
		err = ext4Grow(root, size)
	}
	if err != nil {
		return fmt.Errorf("grow the %s filesystem of disk %s to %s: %w", d.cfg.Kind, d.cfg.Image, units.FormatSize(uint64(size)), err)
	}
	d.size = size
	return nil
}

// Freeze makes the filesystem consistent on its device and holds every
// write until Thaw (FIFREEZE): the image is then a crash-consistent copy
// of the disk that can be checkpointed. Keep it short: writers in the
// computer wait.
func (d *Disk) Freeze(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(); err != nil {
		return err
	}
	if d.frozen {
		return nil
	}
	root, err := d.root()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := freeze(root); err != nil {
		return fmt.Errorf("freeze disk %s: %w", d.cfg.Image, err)
	}
	d.frozen = true
	return nil
}

// Thaw lets writes continue after Freeze.
func (d *Disk) Thaw(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.thawLocked()
}

func (d *Disk) thawLocked() error {
	if !d.frozen {
		return nil
	}
	root, err := d.root()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := thaw(root); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("thaw disk %s: %w", d.cfg.Image, err)
	}
	d.frozen = false
	return nil
}

// Trim discards the filesystem's free space in [start, start+length) of
// the disk (FITRIM), so that ohmfs can free the blocks that held it, and
// returns the bytes discarded. The filesystems discard what they free by
// themselves (btrfs discard=async); Trim is for what they have not, and
// for measurements.
func (d *Disk) Trim(ctx context.Context, start, length uint64) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(); err != nil {
		return 0, err
	}
	root, err := d.root()
	if err != nil {
		return 0, err
	}
	defer root.Close()
	n, err := trim(root, start, length, 0)
	if err != nil {
		return 0, fmt.Errorf("trim disk %s: %w", d.cfg.Image, err)
	}
	return n, nil
}

// ChownRoot gives the filesystem's root directory to uid and gid (a
// workspace belongs to the computer's user), through a descriptor of the
// mounted root: no path the computer can write is resolved.
func (d *Disk) ChownRoot(uid, gid int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(); err != nil {
		return err
	}
	root, err := d.root()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := unix.Fchown(int(root.Fd()), uid, gid); err != nil {
		return fmt.Errorf("chown the root of disk %s: %w", d.cfg.Image, err)
	}
	return nil
}

// Usage is what the filesystem reports to df.
type Usage struct {
	Size, Used, Avail uint64
}

// Usage reads the filesystem's statfs.
func (d *Disk) Usage() (Usage, error) {
	var st unix.Statfs_t
	root, err := d.root()
	if err != nil {
		return Usage{}, err
	}
	defer root.Close()
	if err := unix.Fstatfs(int(root.Fd()), &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", d.cfg.Mountpoint, err)
	}
	bs := uint64(st.Bsize)
	return Usage{Size: st.Blocks * bs, Used: (st.Blocks - st.Bfree) * bs, Avail: st.Bavail * bs}, nil
}

// Close writes everything back, unmounts the filesystem and detaches the
// loop device. A mountpoint some process still uses is retried until ctx
// ends, and then Close fails, leaving the disk mounted and usable; stop
// the computer's processes first.
func (d *Disk) Close(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if d.guard != nil {
		d.guard.stop()
		d.guard = nil
	}
	if err := d.thawLocked(); err != nil {
		return err
	}
	mp := filepath.Clean(d.cfg.Mountpoint)
	if root, err := d.root(); err == nil {
		unix.Syncfs(int(root.Fd()))
		root.Close()
	}
	for {
		err := unmount(mp, false)
		if err == nil || errors.Is(err, unix.EINVAL) {
			break // EINVAL: not mounted (any more)
		}
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.closed = true
	var errs []error
	wait := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = max(min(wait, time.Until(dl)), 0)
	}
	if !d.loop.waitUnbound(wait) {
		// Autoclear did not happen: something else opened the device, or
		// holds the filesystem (a copy of its mount lazily detached under
		// a process that has a file open there). Detach explicitly; the
		// kernel finishes when it is let go.
		d.held = true
		if dev, err := os.OpenFile(d.loop.path(), os.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			errs = append(errs, detachLoop(dev))
		}
	}
	if d.cfg.Kind == Btrfs {
		// btrfs keeps every device it has seen in a list; forget this
		// one, so that the list does not grow with every disk attached.
		btrfsForget(d.loop.path())
	}
	if dir, err := privateDir(d.cfg.DevDir, false); err == nil {
		unix.Unlinkat(int(dir.Fd()), d.cfg.source(), 0)
		dir.Close()
	}
	errs = append(errs, d.img.Close())
	return errors.Join(errs...)
}

// Held reports, after Close, whether the filesystem outlived its unmount
// at the mountpoint (within the wait that ctx allowed Close): something
// else holds it, and with it the loop device and the image, until it lets
// go. Its data was flushed before the unmount.
func (d *Disk) Held() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed && d.held
}

// Release lets the disk go without unmounting it: the space guard stops
// and the image's lock is dropped, so that another Disk (a daemon that
// replaces this one, or a new manager in this process) can Open and take
// it over as a disk an earlier process left mounted. The filesystem stays
// mounted and in use; d is unusable afterwards.
func (d *Disk) Release() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if d.guard != nil {
		d.guard.stop()
		d.guard = nil
	}
	err := d.thawLocked()
	d.closed = true
	return errors.Join(err, d.img.Close())
}
