package computer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
	"ohm/internal/ohmfs/vfs"
)

// Checkpoints of a computer's disks (docs/checkpoints.md). A checkpoint is
// a directory of its ohmfs volume, checkpoints/<id>/, that holds a clone
// of each disk image the volume holds (workspace.img, and root.img once
// the root disk lives there): metadata only, no data copied, taken with
// the filesystems frozen so that the images are crash-consistent. A root
// disk still kept as a local image (<dir>/sandbox/root.img) is saved as a
// sparse copy in <dir>/checkpoints/<id>/root.img. Memory and processes are
// not saved: a restored or forked computer boots fresh on the saved disks.

// Checkpoint is a saved point of a computer's disks.
type Checkpoint struct {
	ID        string    `json:"id"`
	Label     string    `json:"label,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Bytes is what the checkpoint alone holds: the stored bytes that
	// deleting it gives back (blocks nothing else maps, and its local
	// root disk copy).
	Bytes uint64 `json:"bytes"`
	// Disks are the disk images it holds.
	Disks []string `json:"disks"`
}

// The disk images a checkpoint may hold, by their names in the volume.
const rootImageName = "root.img"

var volumeImages = []string{imageName, rootImageName}

// checkpointMeta is the file of a checkpoint's directory with its record.
const checkpointMeta = "checkpoint.json"

// checkpointID is the form of a checkpoint id.
var checkpointID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// FIFREEZE and FITHAW, _IOWR('X', 119 and 120, int).
const (
	ioctlFIFREEZE = 0xc0045877
	ioctlFITHAW   = 0xc0045878
)

// maxLabel bounds a checkpoint's label.
const maxLabel = 200

// ckptPaths are where the checkpoints of one computer live.
type ckptPaths struct {
	blockPaths
}

func (p ckptPaths) volDir() string             { return filepath.Join(p.volMount(), "checkpoints") }
func (p ckptPaths) volCkpt(id string) string   { return filepath.Join(p.volDir(), id) }
func (p ckptPaths) relCkpt(id string) string   { return "checkpoints/" + id }
func (p ckptPaths) localDir() string           { return filepath.Join(p.dir, "checkpoints") }
func (p ckptPaths) localCkpt(id string) string { return filepath.Join(p.localDir(), id) }
func (p ckptPaths) localRoot() string          { return filepath.Join(p.dir, "sandbox", rootImageName) }
func (p ckptPaths) rootMount() string          { return filepath.Join(p.dir, "sandbox", "disk") }

// blockWorkspace returns m's workspace as the block layout, which alone
// can checkpoint.
func (m *Manager) blockWorkspace() (*BlockWorkspace, error) {
	bw, ok := m.ws.(*BlockWorkspace)
	if !ok {
		return nil, statef("checkpoints need the block layout of workspaces")
	}
	return bw, nil
}

// withVolume runs fn with the ohmfs volume of computer name mounted at
// <dir>/vol: mounted for fn (and unmounted after it) if the computer is
// stopped. The caller holds name's lock.
func (m *Manager) withVolume(ctx context.Context, name string, fn func(p ckptPaths) error) error {
	return m.withVolumeKeep(ctx, name, false, fn)
}

// withVolumeKeep is withVolume that, with keep, leaves a volume it
// mounted mounted: for a start that follows, which then need not mount it
// again.
func (m *Manager) withVolumeKeep(ctx context.Context, name string, keep bool, fn func(p ckptPaths) error) error {
	bw, err := m.blockWorkspace()
	if err != nil {
		return err
	}
	p := ckptPaths{pathsOfVolume(m.volume(name))}
	if !mountinfo.IsMountpoint(p.volMount()) {
		if err := bw.mountVolume(ctx, p.blockPaths); err != nil {
			return err
		}
		defer func() {
			if !keep && mountinfo.IsMountpoint(p.volMount()) && !mountinfo.IsMountpoint(p.diskMount()) {
				if err := bw.files.Unmount(context.WithoutCancel(ctx), p.volMount()); err != nil {
					m.logf("%s: unmount workspace volume: %v", name, err)
				}
			}
		}()
	} else if err := fuseHealth(p.volMount()); err != nil {
		return fmt.Errorf("workspace volume: %w", err)
	}
	block, err := layoutOf(p.volMount())
	if err != nil {
		return err
	}
	if !block {
		return statef("computer %q keeps its workspace in the file layout of older versions, which cannot be checkpointed", name)
	}
	return fn(p)
}

// checkpointable returns the record of name, whose lock the caller holds,
// if it can be checkpointed, restored or forked.
func (m *Manager) checkpointable(ctx context.Context, name string) (Record, error) {
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return Record{}, err
	}
	if rec.State == StateCreating {
		return Record{}, statef("computer %q is being created", name)
	}
	return m.reapIfDead(ctx, rec)
}

// Checkpoint saves the disks of computer name, running or stopped, and
// returns the checkpoint. A running computer's filesystems are frozen
// (FIFREEZE) only while their images are cloned; its processes keep
// running.
func (m *Manager) Checkpoint(ctx context.Context, name, label string) (Checkpoint, error) {
	if len(label) > maxLabel || !validText(label) {
		return Checkpoint{}, invalidf("checkpoint label must be up to %d printable characters", maxLabel)
	}
	unlock := m.lock(name)
	defer unlock()
	if _, err := m.checkpointable(ctx, name); err != nil {
		return Checkpoint{}, err
	}
	var c Checkpoint
	err := m.withVolume(ctx, name, func(p ckptPaths) error {
		var err error
		c, err = m.checkpointLocked(ctx, p, label)
		return err
	})
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	return c, nil
}

// checkpointLocked takes a checkpoint of the computer of p, whose volume
// is mounted.
func (m *Manager) checkpointLocked(ctx context.Context, p ckptPaths, label string) (c Checkpoint, err error) {
	bw, err := m.blockWorkspace()
	if err != nil {
		return Checkpoint{}, err
	}
	c = Checkpoint{ID: newCheckpointID(), Label: label, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := os.MkdirAll(p.volDir(), 0o700); err != nil {
		return c, fmt.Errorf("checkpoints: %w", err)
	}
	if err := os.Mkdir(p.volCkpt(c.ID), 0o700); err != nil {
		return c, fmt.Errorf("checkpoints: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p.volCkpt(c.ID))
			os.RemoveAll(p.localCkpt(c.ID))
		}
	}()
	var images []string
	for _, img := range volumeImages {
		if _, err := os.Lstat(filepath.Join(p.volMount(), img)); err == nil {
			images = append(images, img)
		}
	}
	localRoot := false
	if !slices.Contains(images, rootImageName) {
		if _, err := os.Lstat(p.localRoot()); err == nil {
			localRoot = true
		}
	}
	if localRoot {
		if err := os.MkdirAll(p.localCkpt(c.ID), 0o700); err != nil {
			return c, fmt.Errorf("checkpoints: %w", err)
		}
	}

	// Frozen from here to the thaw: writers in the computer wait.
	thaw, err := m.freeze(ctx, bw, p)
	if err != nil {
		return c, err
	}
	for _, img := range images {
		if err := unix.Setxattr(filepath.Join(p.volMount(), img), vfs.XattrClone, []byte(p.relCkpt(c.ID)+"/"+img), 0); err != nil {
			thaw()
			return c, fmt.Errorf("clone %s: %w", img, err)
		}
		c.Disks = append(c.Disks, img)
	}
	if localRoot {
		if err := sparseCopy(p.localRoot(), filepath.Join(p.localCkpt(c.ID), rootImageName)); err != nil {
			thaw()
			return c, fmt.Errorf("save the root disk: %w", err)
		}
		c.Disks = append(c.Disks, rootImageName)
	}
	if err := thaw(); err != nil {
		return c, err
	}
	if err := writeCheckpointMeta(p, c); err != nil {
		return c, err
	}
	c.Bytes = checkpointBytes(p, c.ID)
	return c, nil
}

// freeze freezes the workspace filesystem and the root disk's of p, if
// mounted, and flushes the workspace's loop device; the returned thaw
// undoes it (and is safe to call more than once). A freeze that fails
// thaws what it froze.
func (m *Manager) freeze(ctx context.Context, bw *BlockWorkspace, p ckptPaths) (thaw func() error, err error) {
	var undo []func() error
	thaw = func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		undo = nil
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			thaw()
		}
	}()
	if mountinfo.IsMountpoint(p.diskMount()) {
		d := bw.disk(p.blockPaths)
		if d == nil {
			if err := bw.openDisk(ctx, p.blockPaths); err != nil {
				return nil, err
			}
			d = bw.disk(p.blockPaths)
		}
		if err := d.Freeze(ctx); err != nil {
			return nil, err
		}
		undo = append(undo, func() error { return d.Thaw(context.WithoutCancel(ctx)) })
		// The freeze wrote everything to the device; the device's flush
		// makes the loop driver pass it all to the image.
		if f, err := os.OpenFile(d.Device(), os.O_RDONLY, 0); err == nil {
			err = f.Sync()
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("flush %s: %w", d.Device(), err)
			}
		}
	}
	if mountinfo.IsMountpoint(p.rootMount()) {
		f, err := os.Open(p.rootMount())
		if err != nil {
			return nil, fmt.Errorf("freeze the root disk: %w", err)
		}
		if err := unix.IoctlSetPointerInt(int(f.Fd()), ioctlFIFREEZE, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("freeze the root disk: %w", err)
		}
		undo = append(undo, func() error {
			defer f.Close()
			if err := unix.IoctlSetPointerInt(int(f.Fd()), ioctlFITHAW, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("thaw the root disk: %w", err)
			}
			return nil
		})
	}
	return thaw, nil
}

// newCheckpointID returns a new checkpoint id: its time, for order, and a
// random part.
func newCheckpointID() string {
	var raw [3]byte
	rand.Read(raw[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(raw[:])
}

func validText(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func writeCheckpointMeta(p ckptPaths, c Checkpoint) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(p.volCkpt(c.ID), checkpointMeta)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("record checkpoint: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record checkpoint: %w", err)
	}
	return nil
}

// checkpointBytes is what checkpoint id of p alone holds (0 if unknown).
func checkpointBytes(p ckptPaths, id string) uint64 {
	var n uint64
	buf := make([]byte, 32)
	if k, err := unix.Getxattr(p.volCkpt(id), vfs.XattrExclusive, buf); err == nil {
		n, _ = strconv.ParseUint(string(buf[:k]), 10, 64)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(p.localCkpt(id), rootImageName), &st); err == nil {
		n += uint64(st.Blocks) * 512
	}
	return n
}

// readCheckpoint returns checkpoint id of p, or a not-found error.
func readCheckpoint(p ckptPaths, name, id string) (Checkpoint, error) {
	if !checkpointID.MatchString(id) {
		return Checkpoint{}, &Error{Code: CodeNotFound, Msg: fmt.Sprintf("computer %q has no checkpoint %q", name, id)}
	}
	b, err := os.ReadFile(filepath.Join(p.volCkpt(id), checkpointMeta))
	if errors.Is(err, os.ErrNotExist) {
		return Checkpoint{}, &Error{Code: CodeNotFound, Msg: fmt.Sprintf("computer %q has no checkpoint %q", name, id)}
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read checkpoint %s: %w", id, err)
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil || c.ID != id {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: unreadable %s", id, checkpointMeta)
	}
	return c, nil
}

// Checkpoints lists the checkpoints of computer name, oldest first.
func (m *Manager) Checkpoints(ctx context.Context, name string) ([]Checkpoint, error) {
	unlock := m.lock(name)
	defer unlock()
	if _, err := m.checkpointable(ctx, name); err != nil {
		return nil, err
	}
	out := []Checkpoint{}
	err := m.withVolume(ctx, name, func(p ckptPaths) error {
		ents, err := os.ReadDir(p.volDir())
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list checkpoints: %w", err)
		}
		for _, e := range ents {
			c, err := readCheckpoint(p, name, e.Name())
			if ErrorCode(err) == CodeNotFound {
				continue // one being taken, or left by a crash while taken
			}
			if err != nil {
				return err
			}
			c.Bytes = checkpointBytes(p, c.ID)
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Checkpoint) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// DeleteCheckpoint deletes checkpoint id of computer name. Its blocks go
// when nothing else (the disks, other checkpoints) maps them.
func (m *Manager) DeleteCheckpoint(ctx context.Context, name, id string) error {
	unlock := m.lock(name)
	defer unlock()
	if _, err := m.checkpointable(ctx, name); err != nil {
		return err
	}
	return m.withVolume(ctx, name, func(p ckptPaths) error {
		if _, err := readCheckpoint(p, name, id); err != nil {
			return err
		}
		// The record first: a crash part way leaves a directory
		// without one, which listings skip and the computer's delete
		// removes.
		if err := os.Remove(filepath.Join(p.volCkpt(id), checkpointMeta)); err != nil {
			return fmt.Errorf("delete checkpoint %s: %w", id, err)
		}
		if err := os.RemoveAll(p.volCkpt(id)); err != nil {
			return fmt.Errorf("delete checkpoint %s: %w", id, err)
		}
		if err := os.RemoveAll(p.localCkpt(id)); err != nil {
			return fmt.Errorf("delete checkpoint %s: %w", id, err)
		}
		return nil
	})
}

// Restore puts the disks of computer name back to checkpoint id. A
// running computer is stopped first and started again after (its
// processes restart: memory is not checkpointed); a stopped one stays
// stopped. Later checkpoints stay.
func (m *Manager) Restore(ctx context.Context, name, id string) error {
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.checkpointable(ctx, name)
	if err != nil {
		return err
	}
	running := rec.State == StateRunning
	restore := func(p ckptPaths) error {
		c, err := readCheckpoint(p, name, id)
		if err != nil {
			return err
		}
		if running {
			// Known to exist: now the computer stops, and its
			// volume is mounted again below.
			return nil
		}
		return restoreDisks(p, c)
	}
	if err := m.withVolume(ctx, name, restore); err != nil {
		return err
	}
	if !running {
		return nil
	}
	if err := m.stop(ctx, rec, "restoring checkpoint "+id); err != nil {
		return fmt.Errorf("restore %s: stop: %w", name, err)
	}
	err = m.withVolumeKeep(ctx, name, true, func(p ckptPaths) error {
		c, err := readCheckpoint(p, name, id)
		if err != nil {
			return err
		}
		return restoreDisks(p, c)
	})
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	if err := m.startRec(ctx, rec); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	return nil
}

// restoreDisks puts the disks of p, a stopped computer whose volume is
// mounted, back to checkpoint c: each image a new clone renamed over the
// old one (so that nothing the kernel cached of the old file survives).
func restoreDisks(p ckptPaths, c Checkpoint) error {
	for _, img := range c.Disks {
		if img == rootImageName && !isFile(filepath.Join(p.volCkpt(c.ID), img)) {
			if err := restoreFile(filepath.Join(p.localCkpt(c.ID), img), p.localRoot()); err != nil {
				return fmt.Errorf("restore the root disk: %w", err)
			}
			continue
		}
		tmp := img + ".restoring"
		os.Remove(filepath.Join(p.volMount(), tmp))
		if err := unix.Setxattr(filepath.Join(p.volCkpt(c.ID), img), vfs.XattrClone, []byte(tmp), 0); err != nil {
			return fmt.Errorf("restore %s: %w", img, err)
		}
		if err := os.Rename(filepath.Join(p.volMount(), tmp), filepath.Join(p.volMount(), img)); err != nil {
			return fmt.Errorf("restore %s: %w", img, err)
		}
	}
	return nil
}

func isFile(path string) bool {
	st, err := os.Lstat(path)
	return err == nil && st.Mode().IsRegular()
}

// restoreFile replaces dst by a sparse copy of src, atomically.
func restoreFile(src, dst string) error {
	tmp := dst + ".restoring"
	os.Remove(tmp)
	if err := sparseCopy(src, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// sparseCopy copies the file src to a new file dst: a reflink (FICLONE)
// where the host filesystem shares blocks, else its data ranges only
// (SEEK_DATA, SEEK_HOLE), so that holes stay holes.
func sparseCopy(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return out.Sync()
	}
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", src, err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", src, err)
		}
		for rin, rout := data, data; rin < hole; {
			n, err := unix.CopyFileRange(int(in.Fd()), &rin, int(out.Fd()), &rout, int(min(hole-rin, 1<<30)), 0)
			if err != nil {
				return fmt.Errorf("copy %s: %w", src, err)
			}
			if n == 0 {
				return fmt.Errorf("copy %s: %w", src, io.ErrUnexpectedEOF)
			}
		}
		off = hole
	}
	return out.Sync()
}

// thawLeftovers thaws the filesystems of every computer that a daemon
// which died during a checkpoint left frozen: their writers would wait
// forever. A filesystem that is not frozen answers FITHAW with EINVAL.
func (m *Manager) thawLeftovers(ctx context.Context) {
	recs, err := m.reg.list(ctx)
	if err != nil {
		return
	}
	for _, r := range recs {
		p := ckptPaths{pathsOfVolume(m.volume(r.Name))}
		for _, mp := range []string{p.diskMount(), p.rootMount()} {
			if !mountinfo.IsMountpoint(mp) {
				continue
			}
			f, err := os.Open(mp)
			if err != nil {
				continue
			}
			if err := unix.IoctlSetPointerInt(int(f.Fd()), ioctlFITHAW, 0); err == nil {
				m.logf("%s: thawed %s, left frozen by a checkpoint that did not finish", r.Name, mp)
			}
			f.Close()
		}
	}
}
