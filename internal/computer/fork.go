package computer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/ohmfs/volume"
)

// A fork is a new computer whose disks start as the disks of another one
// at a checkpoint (docs/checkpoints.md). Its workspace volume is a fork
// of the parent's volume (volume.Fork): a snapshot of the parent's
// metadata, with the checkpoint's images put in place of the disks and
// every other file dropped, over hard links to the parent's blocks. No
// data is copied, and each volume's metadata and garbage collector count
// only its own references and unlink only its own links, so deleting the
// parent, a checkpoint or a fork never frees a block another one reads;
// delete still removes all of a computer's own state (its volume
// directory). A root disk kept as a local image is a sparse copy.

// snapshotName is where a fork's metadata snapshot is written, in the
// fork's directory, before it becomes the fork's volume's.
const snapshotName = "fork-meta.db"

// Fork makes computer newName (picked when empty) with the disks of
// computer name at checkpoint (a new one, taken now, when empty), and
// starts it. The fork has the parent's template and limits; memory and
// processes are not copied: it boots fresh.
func (m *Manager) Fork(ctx context.Context, name, newName, checkpoint string) (Computer, error) {
	if newName != "" {
		if err := ValidateName(newName); err != nil {
			return Computer{}, err
		}
	}
	unlock := m.lock(name)
	defer unlock()
	parent, err := m.checkpointable(ctx, name)
	if err != nil {
		return Computer{}, err
	}
	if _, err := m.blockWorkspace(); err != nil {
		return Computer{}, err
	}
	if remoteVolume(parent) {
		return Computer{}, statef("computer %q keeps its volume in an object store (%s), and only file volumes can be forked (docs/checkpoints.md)", name, parent.Volume)
	}
	if checkpoint != "" && !checkpointID.MatchString(checkpoint) {
		return Computer{}, &Error{Code: CodeNotFound, Msg: fmt.Sprintf("computer %q has no checkpoint %q", name, checkpoint)}
	}
	rec := parent
	rec.Name, rec.State = newName, StateCreating
	rec.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	rec.StopReason, rec.StoppedAt = "", time.Time{}
	rec, err = m.reserve(ctx, rec, false)
	if err != nil {
		return Computer{}, err
	}
	unlockNew := m.lock(rec.Name)
	defer unlockNew()
	if err := m.fork(ctx, parent, rec, checkpoint); err != nil {
		if rerr := m.destroy(context.WithoutCancel(ctx), rec); rerr != nil {
			m.logf("fork %s: roll back %s: %v", name, rec.Name, rerr)
		}
		return Computer{}, fmt.Errorf("fork %s: %w", name, err)
	}
	rec.State = StateRunning
	return Computer{Record: rec}, nil
}

// fork makes the disks of rec from parent's checkpoint id (a temporary
// one when empty) and starts rec. The caller holds both locks.
func (m *Manager) fork(ctx context.Context, parent, rec Record, id string) error {
	root, err := m.tmpl.Ensure(ctx, rec.Template, io.Discard)
	if err != nil {
		return fmt.Errorf("template %s: %w", rec.Template, err)
	}
	spec := m.spec(rec, root)
	if err := os.Mkdir(m.dir(rec.Name), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(spec.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(m.home(rec.Name), 0o755); err != nil {
		return err
	}
	began := time.Now()
	snap := filepath.Join(m.dir(rec.Name), snapshotName)
	child := ckptPaths{pathsOfVolume(m.volume(rec.Name))}
	var c Checkpoint
	err = m.withVolume(ctx, parent.Name, func(p ckptPaths) error {
		temp := id == ""
		if temp {
			var err error
			if c, err = m.checkpointLocked(ctx, p, "fork "+rec.Name); err != nil {
				return err
			}
			defer func() {
				os.RemoveAll(p.volCkpt(c.ID))
				os.RemoveAll(p.localCkpt(c.ID))
			}()
		} else {
			var err error
			if c, err = readCheckpoint(p, parent.Name, id); err != nil {
				return err
			}
		}
		if err := unix.Setxattr(p.volMount(), vfs.XattrSnapshot, []byte(snap), 0); err != nil {
			return fmt.Errorf("snapshot the workspace volume's metadata: %w", err)
		}
		// Linked while the checkpoint still holds the blocks (a
		// temporary one goes after this).
		err := volume.Fork(ctx, m.volume(parent.Name), snap, m.volume(rec.Name), func(ctx context.Context, db *meta.DB) error {
			return keepCheckpoint(ctx, db, c)
		})
		if err != nil {
			return err
		}
		if slices.Contains(c.Disks, rootImageName) && !isFile(filepath.Join(p.volCkpt(c.ID), rootImageName)) {
			from := filepath.Join(p.localCkpt(c.ID), rootImageName)
			if temp {
				// Its own copy already, taken for this fork.
				return os.Rename(from, child.localRoot())
			}
			return sparseCopy(from, child.localRoot())
		}
		return nil
	})
	if err != nil {
		os.Remove(snap)
		return err
	}
	if !slices.Contains(c.Disks, rootImageName) {
		// The parent had no root disk image to save (made by another
		// version): a new, empty one. Otherwise the fork has the
		// checkpoint's, in its volume (rootdisk.go) or as a local copy.
		if err := m.rt.CreateDisk(ctx, spec); err != nil {
			return fmt.Errorf("create root disk: %w", err)
		}
	}
	disks := time.Since(began)
	if err := m.start(ctx, rec, root, false); err != nil {
		return err
	}
	m.logf("fork %s of %s: disks made in %v, started in %v", rec.Name, parent.Name,
		disks.Round(time.Millisecond), (time.Since(began) - disks).Round(time.Millisecond))
	return nil
}

// keepCheckpoint makes a fork's metadata hold checkpoint c's images as
// its disks and nothing else of the parent's: its other checkpoints and
// leftovers go.
func keepCheckpoint(ctx context.Context, db *meta.DB, c Checkpoint) error {
	ck, err := db.Lookup(ctx, meta.RootIno, "checkpoints")
	if err != nil {
		return fmt.Errorf("checkpoints of the parent: %w", err)
	}
	dir, err := db.Lookup(ctx, ck.Ino, c.ID)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", c.ID, err)
	}
	for _, img := range volumeImages {
		if _, err := db.Lookup(ctx, dir.Ino, img); errors.Is(err, syscall.ENOENT) {
			if err := removeTree(ctx, db, meta.RootIno, img); err != nil {
				return err
			}
			continue
		} else if err != nil {
			return err
		}
		replaced, err := db.Rename(ctx, dir.Ino, img, meta.RootIno, img, 0)
		if err != nil {
			return fmt.Errorf("put %s in place: %w", img, err)
		}
		if replaced.Ino != 0 && replaced.Nlink == 0 {
			if err := db.Purge(ctx, replaced.Ino); err != nil {
				return err
			}
		}
	}
	if err := removeTree(ctx, db, meta.RootIno, "checkpoints"); err != nil {
		return err
	}
	for _, img := range volumeImages {
		if err := removeTree(ctx, db, meta.RootIno, img+".restoring"); err != nil {
			return err
		}
	}
	return nil
}

// removeTree removes name in parent, a file or a whole directory, and
// purges what it unlinked. A missing name is no error.
func removeTree(ctx context.Context, db *meta.DB, parent meta.Ino, name string) error {
	a, err := db.Lookup(ctx, parent, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		var names []string
		err := db.ReadDir(ctx, a.Ino, 0, false, func(e meta.DirEntry) bool {
			if e.Name != "." && e.Name != ".." {
				names = append(names, e.Name)
			}
			return true
		})
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := removeTree(ctx, db, a.Ino, n); err != nil {
				return err
			}
		}
		return db.Rmdir(ctx, parent, name)
	}
	u, err := db.Unlink(ctx, parent, name)
	if err != nil {
		return err
	}
	if u.Nlink == 0 {
		return db.Purge(ctx, u.Ino)
	}
	return nil
}
