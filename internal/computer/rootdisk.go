package computer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	"ohm/internal/mountinfo"
	"ohm/internal/sandbox"
)

// The root disk (README, "What"; docs/block-layout.md, "The root
// disk"). A computer made with the block layout keeps it in its volume,
// as root.img beside workspace.img at the root of the volume's FUSE mount
// (<dir>/vol): ext4 on a loop device (internal/disk), mounted at
// <dir>/sandbox/disk, where the sandbox keeps the overlay's upper layer.
// So it is as durable as the workspace, and a copy of the volume's images
// copies both disks. The volume is mounted before the root disk is opened
// and unmounted after it is closed; a storage server that dies is replaced
// on the same FUSE connection (docs/fuse-restart.md), so both loop devices
// carry on.
//
// A computer made before keeps its local image, <dir>/sandbox/root.img,
// which the sandbox mounts itself. Which one a computer has is read from
// what exists (rootInVolume): no record changes.
//
//	<dir>/vol/root.img        the image, in the volume
//	<dir>/sandbox/disk        its ext4, mounted (the overlay's upper layer)
//	<dir>/sandbox/rootdev/    the device node the mount names ("root")
//	<dir>/sandbox/root.used   the bytes the image held in the volume when last closed

// rootImage is the root disk's image in the volume.
const rootImage = "root.img"

// rootMountOptions are the root disk's mount options, as the local image
// always had them: discard gives freed blocks back (as holes in the
// image), minixdf makes df show the disk's whole size (ext4 otherwise
// subtracts its metadata), and what the computer makes there means
// nothing on the host (nosuid, nodev; the overlay the computer runs on
// allows setuid).
var rootMountOptions = []string{"noatime", "discard", "minixdf", "nosuid", "nodev"}

// rootDisks are the root disks a manager holds open, by computer name.
type rootDisks struct {
	mu    sync.Mutex
	disks map[string]*disk.Disk
}

func (r *rootDisks) get(name string) *disk.Disk {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.disks[name]
}

func (r *rootDisks) set(name string, d *disk.Disk) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disks == nil {
		r.disks = map[string]*disk.Disk{}
	}
	if d == nil {
		delete(r.disks, name)
	} else {
		r.disks[name] = d
	}
}

// release lets every root disk go without unmounting it, for a manager
// that closes while its computers run on: the next one takes them over
// (disk.Open adopts a mounted disk).
func (r *rootDisks) release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for name, d := range r.disks {
		if err := d.Release(); err != nil {
			errs = append(errs, fmt.Errorf("release the root disk of %s: %w", name, err))
		}
		delete(r.disks, name)
	}
	return errors.Join(errs...)
}

func (m *Manager) localRootImage(name string) string {
	return filepath.Join(m.dir(name), "sandbox", "root.img")
}

func (m *Manager) rootVolMount(name string) string { return filepath.Join(m.dir(name), "vol") }
func (m *Manager) rootUsedFile(name string) string {
	return filepath.Join(m.dir(name), "sandbox", "root.used")
}

// rootInVolume reports whether computer name's root disk is (or, for a
// computer being created, will be) an image in its volume: it has no
// local root.img, and its workspaces are volumes of the block layout.
func (m *Manager) rootInVolume(name string) bool {
	if _, err := os.Lstat(m.localRootImage(name)); err == nil {
		return false
	}
	_, ok := m.ws.(*BlockWorkspace)
	return ok
}

// rootConfig is where computer name's root disk lives in the volume.
func (m *Manager) rootConfig(name string) disk.Config {
	dir := m.dir(name)
	return disk.Config{
		Kind:         disk.Ext4,
		ImageDir:     m.rootVolMount(name),
		Image:        rootImage,
		Mountpoint:   filepath.Join(dir, "sandbox", "disk"),
		DevDir:       filepath.Join(dir, "sandbox", "rootdev"),
		Source:       "root",
		Label:        "root",
		MountOptions: rootMountOptions,
	}
}

// createRoot makes rec's root disk in its volume (mounted: Format leaves
// it so) and keeps it open.
func (m *Manager) createRoot(ctx context.Context, rec Record) error {
	if err := disk.Available(disk.Ext4); err != nil {
		return err
	}
	d, err := disk.Create(ctx, m.rootConfig(rec.Name), int64(rec.DiskSizeMB)<<20)
	if err != nil {
		return fmt.Errorf("create root disk: %w", err)
	}
	m.roots.set(rec.Name, d)
	return nil
}

// openRoot mounts rec's root disk from its volume (mounted by the
// workspace's Mount), or takes over the mount an earlier manager left, and
// grows it to rec's size if a resize of the stopped computer asked for
// more.
func (m *Manager) openRoot(ctx context.Context, rec Record) error {
	cfg := m.rootConfig(rec.Name)
	want := int64(rec.DiskSizeMB) << 20
	d := m.roots.get(rec.Name)
	if d == nil && !mountinfo.IsMountpoint(cfg.Mountpoint) {
		// Not mounted: grow it here, before it is (ext4 grows online
		// only where root has CAP_SYS_RESOURCE).
		if err := growImage(ctx, filepath.Join(cfg.ImageDir, cfg.Image), want); err != nil {
			m.logf("start %s: %v; it starts at its old size", rec.Name, err)
		}
	}
	if d == nil {
		var err error
		if d, err = disk.Open(ctx, cfg); err != nil {
			return fmt.Errorf("open root disk: %w", err)
		}
		m.roots.set(rec.Name, d)
	}
	if d.Size() < want {
		if err := m.growOnline(ctx, rec.Name, d, want); err != nil {
			m.logf("start %s: %v", rec.Name, err)
		}
	}
	return nil
}

// growImage grows the unmounted root disk image at path to size bytes
// and its ext4 to the image's size (sandbox.GrowExt4Image).
func growImage(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("grow root disk: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < size {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("grow root disk image: %w", err)
	}
	return sandbox.GrowExt4Image(ctx, path)
}

// growOnline grows the mounted root disk d of computer name to size
// bytes. Where the kernel will not grow ext4 while mounted, the image
// and loop device have grown and the filesystem does at the next start:
// that is logged, not an error (sandbox.ErrGrowAtStart).
func (m *Manager) growOnline(ctx context.Context, name string, d *disk.Disk, size int64) error {
	err := d.Grow(ctx, size)
	if errors.Is(err, unix.EPERM) {
		m.logf("resize %s: %v; %v", name, err, sandbox.ErrGrowAtStart)
		return fmt.Errorf("%w: %w (online growth of ext4 needs CAP_SYS_RESOURCE)", sandbox.ErrGrowAtStart, err)
	}
	return err
}

// heldRoot returns computer name's open root disk, taking over one an
// earlier manager left mounted; nil if it is not mounted.
func (m *Manager) heldRoot(ctx context.Context, name string) (*disk.Disk, error) {
	if d := m.roots.get(name); d != nil {
		return d, nil
	}
	cfg := m.rootConfig(name)
	if !mountinfo.IsMountpoint(cfg.Mountpoint) || !mountinfo.IsMountpoint(cfg.ImageDir) {
		return nil, nil
	}
	d, err := disk.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("take over root disk: %w", err)
	}
	m.roots.set(name, d)
	return d, nil
}

// closeRoot flushes, unmounts and detaches computer name's root disk if it
// is in the volume and mounted, so that the volume can be unmounted after
// it; the sandbox has let go of it (its overlay is unmounted). The bytes
// the image holds in the volume are noted for checkDiskRoom.
func (m *Manager) closeRoot(ctx context.Context, name string) error {
	cfg := m.rootConfig(name)
	d, err := m.heldRoot(ctx, name)
	if err != nil {
		// Its storage is gone or it is not ours: nothing can be flushed.
		if mountinfo.IsMountpoint(cfg.Mountpoint) {
			if err := detach(cfg.Mountpoint); err != nil {
				return err
			}
		}
		return nil
	}
	if d == nil {
		if mountinfo.IsMountpoint(cfg.Mountpoint) {
			// Mounted over a volume that is gone: nothing to flush.
			return detach(cfg.Mountpoint)
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.Close(cctx); err != nil {
		// Still busy (a process the overlay's lazy unmount left): detach
		// it; the loop device goes when the last user lets go.
		if !mountinfo.IsMountpoint(cfg.Mountpoint) {
			return fmt.Errorf("close root disk: %w", err)
		}
		if derr := detach(cfg.Mountpoint); derr != nil {
			return fmt.Errorf("close root disk: %w", errors.Join(err, derr))
		}
		if err := d.Close(cctx); err != nil {
			return fmt.Errorf("close root disk: %w", err)
		}
	}
	m.roots.set(name, nil)
	if used, ok := imageUsed(filepath.Join(cfg.ImageDir, cfg.Image)); ok {
		os.WriteFile(m.rootUsedFile(name), []byte(strconv.FormatInt(used, 10)+"\n"), 0o600)
	}
	return nil
}

// imageUsed is the bytes the image at path holds (st_blocks: ohmfs counts
// the image's mapped pages), asked with a deadline: a FUSE server that is
// stuck must not hold up the caller.
func imageUsed(path string) (int64, bool) {
	done := make(chan int64, 1)
	go func() {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			done <- -1
			return
		}
		done <- st.Blocks * 512
	}()
	select {
	case n := <-done:
		return n, n >= 0
	case <-time.After(time.Second):
		return 0, false
	}
}

// rootOccupied is the host disk space computer name's root disk takes
// already: the local image's blocks, or, in the volume, what the image
// holds there (asked of the mounted volume, or noted when it was last
// closed). It never counts more than the disk's size. Unknown counts as
// nothing, which leaves the whole size promised: the check errs on the
// safe side.
func (m *Manager) rootOccupied(rec Record) int64 {
	size := int64(rec.DiskSizeMB) << 20
	var st unix.Stat_t
	if err := unix.Lstat(m.localRootImage(rec.Name), &st); err == nil {
		return min(st.Blocks*512, size)
	}
	if mountinfo.IsMountpoint(m.rootVolMount(rec.Name)) {
		if n, ok := imageUsed(filepath.Join(m.rootVolMount(rec.Name), rootImage)); ok {
			return min(n, size)
		}
	}
	b, err := os.ReadFile(m.rootUsedFile(rec.Name))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return min(n, size)
}

// rootLost reports whether running computer name has lost its root disk:
// it is on the volume, and the volume's FUSE mount is dead (its keeper and
// server both died, so the connection is gone). Its / can then no longer
// read or write anything, and no new mount can be slipped under the
// running overlay.
func (m *Manager) rootLost(name string) bool {
	vol := m.rootVolMount(name)
	return m.rootInVolume(name) && mountinfo.IsMountpoint(vol) && fuseHealth(vol) != nil
}

// stopRootLost stops computer name, whose lock the caller holds, after it
// lost its root disk (rootLost) and its workspace was mounted again: its
// next use starts it on the fresh mount.
func (m *Manager) stopRootLost(ctx context.Context, name string) {
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return
	}
	m.logf("%s: the storage process of its volume died with its root disk on it; stopping it", name)
	if err := m.stop(ctx, rec, "the storage process of its disks died"); err != nil {
		m.logf("%s: stop: %v", name, err)
	}
}
