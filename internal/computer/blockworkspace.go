package computer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	"ohm/internal/mountinfo"
	ohmmount "ohm/internal/ohmfs/mount"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/ohmfs/volume"
	"ohm/internal/proc"
)

// The block layout of a workspace (docs/durability.md): the computer's
// ohmfs volume holds one file, workspace.img, a 1 PiB sparse device image;
// a loop device over it carries a btrfs, and that btrfs is the computer's
// /home/ohm. The kernel does the namespace work in its own caches and
// ohmfs sees only block reads, writes, flushes and discards.
//
// Everything but the btrfs itself stays where the computer can never reach
// it, in the computer's directory (mode 0700):
//
//	<dir>/workspace        the ohmfs volume (its store), as for the file layout
//	<dir>/vol              the volume's FUSE mount: workspace.img
//	<dir>/disk/workspace   the btrfs, mounted (disk's mountpoint; parent 0700)
//	<dir>/dev/ohmfs        the device node df names the btrfs by
//	<dir>/mnt/ohm          a bind of <dir>/disk/workspace: the computer's /home/ohm
//
// A computer made before the block layout has its files at the root of the
// volume. It keeps them there: its volume is mounted at <dir>/vol too and
// that mount is bound at <dir>/mnt/ohm. Which layout a volume has is read
// from what it holds (layoutOf), so no record changes.

// imageName is the workspace's device image in the volume.
const imageName = "workspace.img"

// workspaceSize is the size of a workspace's device image and filesystem:
// 1 PiB, sparse; df shows it as the workspace's size and ohmfs stores only
// what is written.
const workspaceSize = 1 << 50

// BlockWorkspace keeps new workspaces in the block layout (above) and
// opens the file layout of older ones. The volume mounts are `ohm fs`
// processes of the binary Exe, as OhmfsWorkspace's are, so a mount survives
// a restart of the daemon; a new BlockWorkspace takes the disks it finds
// mounted over.
//
// It relies on the manager's layout of a computer directory: the volume is
// <dir>/workspace and the mountpoint <dir>/mnt/ohm.
type BlockWorkspace struct {
	files OhmfsWorkspace
	// locate names the URL of the volume whose local path is vol when
	// it is not the file volume there (store.go): set by the manager.
	// nil, or an empty URL: the file volume.
	locate func(ctx context.Context, vol string) (string, error)

	mu    sync.Mutex
	disks map[string]*disk.Disk // by computer directory
}

// NewBlockWorkspace returns a BlockWorkspace whose volume mounts run exe.
func NewBlockWorkspace(exe string) *BlockWorkspace {
	return &BlockWorkspace{files: OhmfsWorkspace{Exe: exe}, disks: map[string]*disk.Disk{}}
}

// blockPaths are the places of one computer's block layout.
type blockPaths struct{ dir string }

func (p blockPaths) home() string       { return filepath.Join(p.dir, "mnt", "ohm") }
func (p blockPaths) volume() string     { return filepath.Join(p.dir, "workspace") }
func (p blockPaths) volMount() string   { return filepath.Join(p.dir, "vol") }
func (p blockPaths) diskParent() string { return filepath.Join(p.dir, "disk") }
func (p blockPaths) diskMount() string  { return filepath.Join(p.dir, "disk", "workspace") }
func (p blockPaths) devDir() string     { return filepath.Join(p.dir, "dev") }
func (p blockPaths) incident() string   { return filepath.Join(p.dir, "workspace-incident") }

func (p blockPaths) config() disk.Config {
	return disk.Config{
		Kind:       disk.Btrfs,
		ImageDir:   p.volMount(),
		Image:      imageName,
		Mountpoint: p.diskMount(),
		DevDir:     p.devDir(),
		Label:      "workspace",
		// A computer's root may make setuid files and device nodes in
		// its workspace: they must mean nothing on the host.
		MountOptions: append(disk.DefaultMountOptions(disk.Btrfs), "nosuid", "nodev"),
	}
}

// pathsOfVolume is the layout of the computer whose volume is vol.
func pathsOfVolume(vol string) blockPaths { return blockPaths{filepath.Dir(filepath.Clean(vol))} }

// pathsOfMount is the layout of the computer whose workspace mountpoint is
// mountpoint (<dir>/mnt/ohm); ok is false for any other path.
func pathsOfMount(mountpoint string) (blockPaths, bool) {
	mp := filepath.Clean(mountpoint)
	mnt := filepath.Dir(mp)
	if filepath.Base(mp) != "ohm" || filepath.Base(mnt) != "mnt" {
		return blockPaths{}, false
	}
	return blockPaths{filepath.Dir(mnt)}, true
}

// Format makes a new volume at vol holding an empty 1 PiB btrfs image. It
// leaves the volume and the disk mounted for the Mount that follows
// (create mounts at once); Unmount or Destroy takes them down.
func (w *BlockWorkspace) Format(ctx context.Context, vol string) (err error) {
	if err := disk.Available(disk.Btrfs); err != nil {
		return err
	}
	p := pathsOfVolume(vol)
	tm := timingOf(ctx)
	began := time.Now()
	loc, err := w.volumeOf(ctx, vol)
	if err != nil {
		return err
	}
	// In this process: `ohm fs format` would cost an exec of the ohm
	// binary, which is most of a volume's format on a busy machine.
	if err := volume.Format(ctx, loc.url, volume.FormatOptions{}); err != nil {
		return fmt.Errorf("format workspace volume: %w", err)
	}
	tm.since("volume format", began)
	defer func() {
		if err != nil {
			w.teardown(context.WithoutCancel(ctx), p)
		}
	}()
	began = time.Now()
	if err := w.mountVolume(ctx, p); err != nil {
		return err
	}
	tm.since("volume mount", began)
	// The volume's root stays root's, closed to everyone: only the btrfs
	// root is the computer's user's.
	if err := os.Chmod(p.volMount(), 0o700); err != nil {
		return fmt.Errorf("workspace volume: %w", err)
	}
	if err := os.Mkdir(p.diskParent(), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("workspace: %w", err)
	}
	began = time.Now()
	d, err := disk.Create(ctx, p.config(), workspaceSize)
	if err != nil {
		return fmt.Errorf("create workspace disk: %w", err)
	}
	tm.since("mkfs.btrfs and mount", began)
	w.setDisk(p, d)
	began = time.Now()
	if err := guardSpace(d, p); err != nil {
		return err
	}
	tm.since("space guard", began)
	if err := d.ChownRoot(homeUID, homeUID); err != nil {
		return err
	}
	// Not committed here (btrfs commits within 5 s): should the storage
	// process die before that, Mount gives the root back to the user.
	return nil
}

// Mount mounts vol's workspace at mountpoint: the volume at <dir>/vol
// (again, if its process died), then, for the block layout, the disk
// (again, if its filesystem failed), bound at mountpoint; for the file
// layout the volume itself is bound there. A stale mount at mountpoint is
// detached first.
func (w *BlockWorkspace) Mount(ctx context.Context, vol, mountpoint string) error {
	p := pathsOfVolume(vol)
	if q, ok := pathsOfMount(mountpoint); !ok || q != p {
		return fmt.Errorf("workspace mountpoint %s is not the one of volume %s", mountpoint, vol)
	}
	tm := timingOf(ctx)
	began := time.Now()
	incident, err := w.ensureVolume(ctx, p)
	if err != nil {
		return err
	}
	tm.since("volume", began)
	block, err := layoutOf(p.volMount())
	if err != nil {
		return err
	}
	src := p.volMount()
	if block {
		if incident != "" || !w.diskHealthy(p) {
			if err := w.closeDisk(ctx, p, true); err != nil {
				return err
			}
		}
		if w.disk(p) == nil {
			if err := os.Mkdir(p.diskParent(), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("workspace: %w", err)
			}
			opened := time.Now()
			if err := w.openDisk(ctx, p); err != nil {
				return err
			}
			tm.since("disk", opened)
		}
		src = p.diskMount()
		// The root is the computer's user's (a crash right after create
		// could have lost that change before it was committed).
		var st unix.Stat_t
		if err := unix.Lstat(src, &st); err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
		if st.Uid != homeUID || st.Gid != homeUID {
			if err := w.disk(p).ChownRoot(homeUID, homeUID); err != nil {
				return err
			}
		}
		// Private, so that what is mounted under one of the two places
		// (the disk's own mountpoint, the computer's /home/ohm) does not
		// propagate to the other.
		if err := unix.Mount("", src, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", src, err)
		}
	}
	if mountinfo.IsMountpoint(mountpoint) {
		if err := detach(mountpoint); err != nil {
			return err
		}
	}
	// Through a descriptor, nosuid,nodev: mountpoint is in the
	// computer's /home (bindAt).
	if err := bindAt(src, mountpoint); err != nil {
		return err
	}
	if incident != "" {
		msg := fmt.Sprintf("%s: %s; its volume and disk were mounted again in %v",
			time.Now().UTC().Format(time.RFC3339), incident, time.Since(began).Round(time.Millisecond))
		os.WriteFile(p.incident(), []byte(msg+"\n"), 0o600)
	}
	return nil
}

// ensureVolume makes sure the volume is mounted at <dir>/vol and answers,
// with a keeper that would replace its server should it die. A mount
// whose processes died is detached and mounted again; one whose keeper
// died while its server still answers is unmounted cleanly and mounted
// again (orphaned). incident says which, or is empty if the mount was
// fine.
func (w *BlockWorkspace) ensureVolume(ctx context.Context, p blockPaths) (incident string, err error) {
	if mountinfo.IsMountpoint(p.volMount()) {
		herr := fuseHealth(p.volMount())
		if herr == nil {
			kerr := keeperHealth(p.volMount())
			if kerr == nil {
				return "", nil
			}
			if err := w.replaceOrphan(ctx, p); err != nil {
				return "", err
			}
			incident = kerr.Error()
		} else {
			// The btrfs on it can no longer write anything: let it go
			// first, then the dead FUSE mount.
			if err := w.closeDisk(ctx, p, true); err != nil {
				return "", err
			}
			if err := abortFUSE(p.volMount()); err != nil {
				return "", err
			}
			if err := detach(p.volMount()); err != nil {
				return "", err
			}
			incident = "the workspace's storage process had died"
		}
	}
	return incident, w.mountVolume(ctx, p)
}

// keeperHealth fails if the volume mounted at mp has lost its keeper, the
// process holding its FUSE connection that replaces a server that dies
// (docs/fuse-restart.md): the server answers on, but its death would
// then end the connection under the btrfs.
func keeperHealth(mp string) error {
	rec, ok := ohmmount.Info(mp)
	if !ok || rec.PID <= 0 || proc.Running(rec.PID) {
		return nil // no record to go by (it could not be written): as before
	}
	return fmt.Errorf("the keeper of the workspace's storage (pid %d, the process holding its FUSE connection) had died; its server (pid %d) answered on", rec.PID, rec.Server)
}

// replaceOrphan takes down the workspace of p whose volume's server
// answers but whose keeper is gone, as cleanly as it can: the disk is
// flushed and closed and the volume unmounted while the server answers,
// so nothing written is lost. Processes of the computer that still hold
// files of the disk (its bind is detached under them) keep the old
// filesystem alive, and with it the volume's mount: then the volume's
// connection is ended, and they get errors from those files.
func (w *BlockWorkspace) replaceOrphan(ctx context.Context, p blockPaths) error {
	rec, _ := ohmmount.Info(p.volMount())
	// Flushed and unmounted; a filesystem still held by the computer's
	// processes is not waited for long: nothing can make them let go.
	dctx, cancel := context.WithTimeout(ctx, orphanDiskWait)
	held, err := w.closeDiskHeld(dctx, p)
	cancel()
	if err != nil {
		if err := w.closeDisk(ctx, p, true); err != nil {
			return err
		}
		held = true
	}
	if held || w.unmountVolume(ctx, p) != nil {
		if err := abortFUSE(p.volMount()); err != nil {
			return err
		}
		if mountinfo.IsMountpoint(p.volMount()) {
			if err := detach(p.volMount()); err != nil {
				return err
			}
		}
	}
	// The old server holds the volume's lock until it exits; with its
	// connection ended or its mount gone it flushes and exits by itself.
	deadline := time.Now().Add(orphanExit)
	for rec.Server > 0 && proc.Running(rec.Server) {
		if time.Now().After(deadline) {
			unix.Kill(rec.Server, unix.SIGKILL)
			deadline = time.Now().Add(orphanExit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// orphanDiskWait is how long replaceOrphan waits for the disk's
// filesystem to be let go once unmounted.
const orphanDiskWait = 500 * time.Millisecond

// closeDiskHeld closes the disk of p cleanly (taking it over first if
// another process mounted it) and reports whether its filesystem was
// still held by something after its unmount (disk.Disk.Held).
func (w *BlockWorkspace) closeDiskHeld(ctx context.Context, p blockPaths) (bool, error) {
	d := w.disk(p)
	if d == nil {
		if !mountinfo.IsMountpoint(p.diskMount()) {
			return false, nil
		}
		var err error
		if d, err = disk.Open(ctx, p.config()); err != nil {
			return false, fmt.Errorf("take over workspace disk: %w", err)
		}
		w.setDisk(p, d)
	}
	if err := w.closeDisk(ctx, p, false); err != nil {
		return false, err
	}
	return d.Held(), nil
}

// orphanExit is how long an orphaned server gets to flush and exit.
const orphanExit = 10 * time.Second

// mountVolume mounts the volume at <dir>/vol, a root-only directory.
func (w *BlockWorkspace) mountVolume(ctx context.Context, p blockPaths) error {
	if err := os.Mkdir(p.volMount(), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("workspace: %w", err)
	}
	loc, err := w.volumeOf(ctx, p.volume())
	if err != nil {
		return err
	}
	// What `ohm fs mount VOLUME MOUNTPOINT --background` does with its
	// defaults, without that command's own exec in between.
	c := ohmmount.Config{Volume: loc.url, CacheDir: loc.cacheDir, Mountpoint: p.volMount(), CacheBytes: volumeCacheBytes, Reserve: workspaceReserve}
	if err := ohmmount.StartExe(ctx, w.files.Exe, c); err != nil {
		return fmt.Errorf("mount workspace volume: %w", err)
	}
	return nil
}

// volumeCacheBytes is the block cache of a workspace volume's mount
// (`ohm fs mount --cache-size`'s default).
const volumeCacheBytes = 256 << 20

// unmountVolume flushes and unmounts the volume mounted at <dir>/vol, as
// `ohm fs umount` does, or detaches it if its process is gone.
func (w *BlockWorkspace) unmountVolume(ctx context.Context, p blockPaths) error {
	mp := p.volMount()
	if !mountinfo.IsMountpoint(mp) {
		return nil
	}
	if _, err := os.Stat(mp); errors.Is(err, unix.ENOTCONN) {
		return detach(mp)
	}
	if err := ohmmount.Unmount(ctx, mp, volumeUnmountTimeout); err != nil {
		return fmt.Errorf("unmount workspace volume: %w", err)
	}
	return nil
}

// volumeUnmountTimeout bounds the wait for a volume's process to flush
// and exit (`ohm fs umount --timeout`'s default).
const volumeUnmountTimeout = 10 * time.Minute

// layoutOf reports whether the volume mounted at root is in the block
// layout: its root belongs to root (a file-layout root belongs to the
// computer's user) and holds workspace.img, a regular file marked as a
// device image. Nothing a computer may have written is followed.
func layoutOf(root string) (block bool, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return false, fmt.Errorf("workspace: %w", err)
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		return false, nil
	}
	img := filepath.Join(root, imageName)
	if err := unix.Lstat(img, &st); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("workspace: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 {
		return false, nil
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(img, vfs.XattrLayout, buf)
	if err != nil {
		return false, nil
	}
	return string(buf[:n]) == vfs.LayoutImage, nil
}

// Unmount unmounts the workspace at mountpoint, making it durable: the
// bind, then the disk (syncfs, unmount, loop device detached), then the
// volume, whose process flushes everything before it exits. A workspace
// mounted by an older daemon directly at mountpoint is unmounted as the
// file layout always was.
func (w *BlockWorkspace) Unmount(ctx context.Context, mountpoint string) error {
	p, ok := pathsOfMount(mountpoint)
	if !ok || !mountinfo.IsMountpoint(p.volMount()) && !mountinfo.IsMountpoint(p.diskMount()) {
		return w.files.Unmount(ctx, mountpoint)
	}
	for mountinfo.IsMountpoint(mountpoint) {
		if err := unix.Unmount(mountpoint, unix.UMOUNT_NOFOLLOW); err != nil {
			if err := detach(mountpoint); err != nil {
				return err
			}
		}
	}
	return w.teardown(ctx, p)
}

// teardown closes the disk and unmounts the volume of p.
func (w *BlockWorkspace) teardown(ctx context.Context, p blockPaths) error {
	tm := timingOf(ctx)
	began := time.Now()
	if err := w.closeDisk(ctx, p, false); err != nil {
		return err
	}
	tm.since("disk close", began)
	if mountinfo.IsMountpoint(p.volMount()) {
		began = time.Now()
		if err := w.unmountVolume(ctx, p); err != nil {
			return err
		}
		tm.since("volume unmount", began)
	}
	return nil
}

// closeDisk closes the disk of p, opening (adopting) it first if another
// process mounted it. With dead, its storage is gone: the filesystem is
// detached rather than flushed.
func (w *BlockWorkspace) closeDisk(ctx context.Context, p blockPaths, dead bool) error {
	d := w.disk(p)
	if d == nil && mountinfo.IsMountpoint(p.diskMount()) {
		if dead {
			if err := detach(p.diskMount()); err != nil {
				return err
			}
			return nil
		}
		var err error
		if d, err = disk.Open(ctx, p.config()); err != nil {
			return fmt.Errorf("take over workspace disk: %w", err)
		}
	}
	if d == nil {
		return nil
	}
	if dead && mountinfo.IsMountpoint(p.diskMount()) {
		if err := detach(p.diskMount()); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.Close(cctx); err != nil && !dead {
		return fmt.Errorf("close workspace disk: %w", err)
	}
	w.setDisk(p, nil)
	return nil
}

// openDisk opens (or takes over) the disk of p and guards its space.
func (w *BlockWorkspace) openDisk(ctx context.Context, p blockPaths) error {
	if err := os.Mkdir(p.diskParent(), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("workspace: %w", err)
	}
	d, err := disk.Open(ctx, p.config())
	if err != nil {
		return fmt.Errorf("open workspace disk: %w", err)
	}
	if err := guardSpace(d, p); err != nil {
		d.Close(ctx)
		return err
	}
	w.setDisk(p, d)
	return nil
}

// guardSpace keeps the btrfs of p below what the host filesystem holding
// the volume can still take (disk.GuardSpace): a full host then gives
// EDQUOT in the computer instead of I/O errors that turn the btrfs
// read-only.
func guardSpace(d *disk.Disk, p blockPaths) error {
	vol := p.volume()
	err := d.GuardSpace(disk.SpaceConfig{Avail: func() (uint64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(vol, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", vol, err)
		}
		free := st.Bavail * uint64(st.Bsize)
		return free - min(free, workspaceReserve), nil
	}})
	if err != nil {
		return fmt.Errorf("workspace disk: %w", err)
	}
	return nil
}

// Release lets every disk w holds go without unmounting it (disk.Release),
// for a daemon that closes while its computers keep running: the next
// BlockWorkspace, in a new daemon or this process, takes them over.
func (w *BlockWorkspace) Release() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for dir, d := range w.disks {
		if err := d.Release(); err != nil {
			errs = append(errs, fmt.Errorf("release the workspace disk of %s: %w", dir, err))
		}
		delete(w.disks, dir)
	}
	return errors.Join(errs...)
}

func (w *BlockWorkspace) disk(p blockPaths) *disk.Disk {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disks[p.dir]
}

func (w *BlockWorkspace) setDisk(p blockPaths, d *disk.Disk) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if d == nil {
		delete(w.disks, p.dir)
	} else {
		w.disks[p.dir] = d
	}
}

// diskHealthy reports whether the disk of p, if mounted, answers and is
// still writable (btrfs turns read-only when its device fails).
func (w *BlockWorkspace) diskHealthy(p blockPaths) bool {
	if !mountinfo.IsMountpoint(p.diskMount()) {
		return true // nothing to replace; Open mounts it
	}
	return writable(p.diskMount()) == nil
}

// Health reports why the workspace of vol mounted at mountpoint cannot be
// used, or nil if it can: the volume's process must answer, and the disk
// must answer and be writable. The supervisor asks, and on an error calls
// Mount again, which replaces what failed.
func (w *BlockWorkspace) Health(ctx context.Context, vol, mountpoint string) error {
	p := pathsOfVolume(vol)
	if !mountinfo.IsMountpoint(p.volMount()) {
		return nil // mounted by an older daemon directly at mountpoint
	}
	if err := fuseHealth(p.volMount()); err != nil {
		return fmt.Errorf("workspace volume: %w", err)
	}
	if err := keeperHealth(p.volMount()); err != nil {
		return fmt.Errorf("workspace volume: %w", err)
	}
	if mountinfo.IsMountpoint(p.diskMount()) {
		if err := writable(p.diskMount()); err != nil {
			return fmt.Errorf("workspace disk: %w", err)
		}
		if w.disk(p) == nil {
			// Mounted by an earlier daemon: take it over, so that its
			// space is guarded again.
			if err := w.openDisk(ctx, p); err != nil {
				return err
			}
		}
	}
	if !mountinfo.IsMountpoint(mountpoint) {
		return errors.New("workspace not mounted")
	}
	return nil
}

// statfsTimeout runs statfs on path, giving up after healthTimeout (a FUSE
// server that is alive but stuck never answers).
func statfsTimeout(path string) (unix.Statfs_t, error) {
	type res struct {
		st  unix.Statfs_t
		err error
	}
	done := make(chan res, 1)
	go func() {
		var st unix.Statfs_t
		err := unix.Statfs(path, &st)
		done <- res{st, err}
	}()
	select {
	case r := <-done:
		return r.st, r.err
	case <-time.After(healthTimeout):
		return unix.Statfs_t{}, fmt.Errorf("statfs %s: no answer in %v", path, healthTimeout)
	}
}

// fuseHealth fails unless the FUSE mount at path answers.
func fuseHealth(path string) error {
	st, err := statfsTimeout(path)
	if err != nil {
		return err
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("%s is not a FUSE mount", path)
	}
	return nil
}

// writable fails unless the filesystem at path answers and is mounted
// read-write.
func writable(path string) error {
	st, err := statfsTimeout(path)
	if err != nil {
		return err
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return errors.New("the filesystem turned read-only (its device failed)")
	}
	return nil
}

// Destroy takes down whatever of vol's workspace is mounted and removes
// the volume with all its data.
func (w *BlockWorkspace) Destroy(ctx context.Context, vol string) error {
	p := pathsOfVolume(vol)
	if err := w.Unmount(ctx, p.home()); err != nil {
		return err
	}
	if err := w.teardown(ctx, p); err != nil {
		return err
	}
	if err := w.destroyVolume(ctx, vol); err != nil {
		return err
	}
	for _, d := range []string{p.volMount(), p.diskMount(), p.diskParent()} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("destroy workspace: %w", err)
		}
	}
	return nil
}

// Usage reports what vol's workspace holds: while its disk is mounted,
// what the filesystem says (as df does inside); otherwise the volume's
// own figures. What the storage process last went through is in Incident.
func (w *BlockWorkspace) Usage(ctx context.Context, vol string) (WorkspaceUsage, error) {
	p := pathsOfVolume(vol)
	u, err := w.volumeUsage(ctx, vol)
	if err != nil {
		return u, err
	}
	u.Layout = "file"
	if block, err := layoutOf(p.volMount()); err == nil && block && mountinfo.IsMountpoint(p.volMount()) {
		u.Layout = "block"
		u.Capacity = workspaceSize
	}
	if mountinfo.IsMountpoint(p.diskMount()) {
		u.Layout = "block"
		if st, err := statfsTimeout(p.diskMount()); err == nil {
			bs := uint64(st.Bsize)
			u.Capacity = st.Blocks * bs
			u.UsedBytes = (st.Blocks - st.Bfree) * bs
			u.Files = 0 // btrfs does not count its inodes
		}
	} else if _, err := os.Stat(p.diskParent()); err == nil {
		u.Layout = "block"
		u.Capacity = workspaceSize
	}
	var incidents []string
	if b, err := os.ReadFile(p.incident()); err == nil {
		incidents = append(incidents, string(trimNewline(b)))
	}
	if rec, ok := ohmmount.Info(p.volMount()); ok && rec.Restarts > 0 {
		// Replaced on the same connection: the computer only waited.
		incidents = append(incidents, fmt.Sprintf("%s: the workspace's storage server died (%s) and was replaced on the same connection, %d time(s) since the workspace was mounted; the computer's processes only waited",
			rec.LastDeathAt.Format(time.RFC3339), rec.LastDeath, rec.Restarts))
	}
	u.Incident = strings.Join(incidents, "; ")
	return u, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
