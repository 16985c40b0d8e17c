package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// SpaceConfig configures a disk's space guard (see GuardSpace).
type SpaceConfig struct {
	// Avail reports how many more bytes the disk's storage can take: for
	// a disk in an ohmfs volume, the free space of the host filesystem
	// that holds the volume's local data, less the reserve ohmfs keeps.
	Avail func() (uint64, error)
	// Margin is held back below Avail; default DefaultSpaceMargin. It
	// covers what reaches the storage between two checks from elsewhere
	// (other disks on the same host filesystem, ohmfs's own metadata and
	// rewritten blocks waiting for gc).
	Margin uint64
	// Interval is how often the guard looks; default 250 ms.
	Interval time.Duration
	// OnError, if set, hears about failed checks (the guard keeps going).
	OnError func(error)
}

// DefaultSpaceMargin is SpaceConfig.Margin's default.
const DefaultSpaceMargin = 256 << 20

// SpaceStatus is what the guard last saw and set.
type SpaceStatus struct {
	Referenced uint64 // bytes the filesystem references (its qgroup)
	Avail      uint64 // bytes the storage could still take
	Limit      uint64 // the limit in force: writes that would pass it fail with EDQUOT
	Err        error  // the last check's error, if it failed
}

// GuardSpace keeps the disk from writing more than its storage can hold.
// Without it, a host filesystem that fills up makes ohmfs refuse the
// image's writes, the loop device turns that into an I/O error, and btrfs
// aborts its transaction and goes read-only, losing what was not yet
// committed (docs/block-layout.md has the measurement). With it, the
// filesystem's own quota (a btrfs qgroup limit on the top subvolume)
// stays at what it references plus what the storage can still take, less
// a margin, and is moved as the host's free space changes: a write past
// it fails at once with EDQUOT ("Disk quota exceeded") in the computer,
// the filesystem stays writable, and deleting files makes room again as
// soon as the storage has the space back. df still shows the whole disk.
// Only btrfs disks have it; the guard stops at Close.
func (d *Disk) GuardSpace(cfg SpaceConfig) error {
	if cfg.Avail == nil {
		return errors.New("space guard: no Avail function")
	}
	if cfg.Margin == 0 {
		cfg.Margin = DefaultSpaceMargin
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.usable(); err != nil {
		return err
	}
	if d.cfg.Kind != Btrfs {
		return fmt.Errorf("space guard: disk %s is %s; only btrfs disks have one", d.cfg.Image, d.cfg.Kind)
	}
	if d.guard != nil {
		return fmt.Errorf("space guard: disk %s has one already", d.cfg.Image)
	}
	root, err := d.root()
	if err != nil {
		return err
	}
	defer root.Close()
	fsid, err := btrfsFSID(root)
	if err != nil {
		return err
	}
	if err := btrfsEnableQuota(root); err != nil {
		return err
	}
	g := &guard{
		d: d, cfg: cfg,
		qgroup:   filepath.Join("/sys/fs/btrfs", fsid, "qgroups", "0_5"),
		override: filepath.Join("/sys/fs/btrfs", fsid, "quota_override"),
		stopc:    make(chan struct{}), done: make(chan struct{}),
	}
	if err := g.check(); err != nil {
		return fmt.Errorf("space guard: %w", err)
	}
	d.guard = g
	go g.run()
	return nil
}

// SpaceStatus reports what the space guard last saw; ok is false when
// the disk has no guard.
func (d *Disk) SpaceStatus() (s SpaceStatus, ok bool) {
	d.mu.Lock()
	g := d.guard
	d.mu.Unlock()
	if g == nil {
		return SpaceStatus{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.status, true
}

// CheckSpace makes the guard look now (after a large delete, say) rather
// than at its next tick.
func (d *Disk) CheckSpace() error {
	d.mu.Lock()
	g := d.guard
	d.mu.Unlock()
	if g == nil {
		return fmt.Errorf("disk %s has no space guard", d.cfg.Image)
	}
	return g.check()
}

type guard struct {
	d        *Disk
	cfg      SpaceConfig
	qgroup   string // sysfs directory of qgroup 0/5
	override string // sysfs file of the filesystem's quota override

	mu     sync.Mutex
	status SpaceStatus
	set    bool // a limit was set

	stopc chan struct{}
	done  chan struct{}
	once  sync.Once
}

func (g *guard) run() {
	defer close(g.done)
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-g.stopc:
			return
		case <-t.C:
		}
		if err := g.check(); err != nil && g.cfg.OnError != nil {
			g.cfg.OnError(fmt.Errorf("space guard of disk %s: %w", g.d.cfg.Image, err))
		}
	}
}

func (g *guard) stop() {
	g.once.Do(func() { close(g.stopc) })
	<-g.done
}

// check reads the storage's free space and the filesystem's referenced
// bytes and moves the limit when it is off by enough to matter: tighter
// at once (a quarter of the margin), looser only by a quarter of the
// headroom or the margin, so that a steady workload does not rewrite the
// quota item (a metadata write of its own) at every tick.
func (g *guard) check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	avail, err := g.cfg.Avail()
	if err != nil {
		g.status.Err = err
		return err
	}
	ref, err := readUint(filepath.Join(g.qgroup, "referenced"))
	if err != nil {
		g.status.Err = err
		return err
	}
	headroom := uint64(0)
	if avail > g.cfg.Margin {
		headroom = avail - g.cfg.Margin
	}
	want := ref + headroom
	cur := g.status.Limit
	change := !g.set ||
		want+g.cfg.Margin/4 < cur ||
		want > cur+max(g.cfg.Margin, headroom/4)
	g.status.Referenced, g.status.Avail, g.status.Err = ref, avail, nil
	if !change {
		return nil
	}
	root, err := g.d.root()
	if err != nil {
		g.status.Err = err
		return err
	}
	defer root.Close()
	if err := g.limit(root, max(want, 1)); err != nil {
		err = fmt.Errorf("set the qgroup limit to %d: %w", want, err)
		g.status.Err = err
		return err
	}
	g.status.Limit, g.set = want, true
	return nil
}

// ErrLimitHeld is reported (wrapped) by a space guard that could not
// raise the limit of a full disk because its process lacks
// CAP_SYS_RESOURCE (see guard.limit): writes in the computer keep failing
// with EDQUOT until something there is deleted, although the storage has
// room again. The guard tries again at every check.
var ErrLimitHeld = errors.New("the disk's quota is full and raising its limit needs CAP_SYS_RESOURCE; it is raised once something on the disk is deleted")

// limit sets the qgroup's limit. Setting it is a transaction that
// reserves a tree block against the very qgroup it limits (recent kernels
// and their stable updates, 6.18 here), so it fails with EDQUOT exactly when
// the guard has to raise the limit of a full disk. The filesystem's quota
// override lets a process with CAP_SYS_RESOURCE, which the host's daemon
// has and a computer's processes never do (internal/sandbox drops it),
// reserve past the limit: it is turned on only for that retry.
func (g *guard) limit(root *os.File, max uint64) error {
	err := btrfsLimitReferenced(root, max)
	if !errors.Is(err, unix.EDQUOT) {
		return err
	}
	if werr := os.WriteFile(g.override, []byte("1"), 0); werr != nil {
		if errors.Is(werr, os.ErrPermission) {
			return fmt.Errorf("%w (%v)", ErrLimitHeld, err)
		}
		return errors.Join(err, fmt.Errorf("turn on the quota override: %w", werr))
	}
	err = btrfsLimitReferenced(root, max)
	if werr := os.WriteFile(g.override, []byte("0"), 0); werr != nil {
		err = errors.Join(err, fmt.Errorf("turn off the quota override: %w", werr))
	}
	return err
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// HostAvail returns an Avail function for a disk whose storage keeps its
// local data on the host filesystem holding dir and keeps reserve bytes of
// it free (ohmfs's --reserve): the bytes an unprivileged writer may still
// use there, less the reserve.
func HostAvail(dir string, reserve uint64) func() (uint64, error) {
	return func() (uint64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", dir, err)
		}
		free := st.Bavail * uint64(st.Bsize)
		if free < reserve {
			return 0, nil
		}
		return free - reserve, nil
	}
}
