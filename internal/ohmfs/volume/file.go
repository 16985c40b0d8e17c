package volume

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"ohm/internal/filecopy"
	"ohm/internal/ohmfs/objstore"
	"ohm/internal/ohmfs/replica"
)

// fileBackend is a volume in a local directory: blocks, metadata, lock and
// replica all under it (see the package comment for the layout). Only this
// host can reach the directory, so the flock is the whole single-writer
// lock and the local database is the volume's own.
type fileBackend struct {
	dir   string // absolute
	store *objstore.FileStore
}

func newFileBackend(dir string) (*fileBackend, error) {
	s, err := objstore.NewFile(dir)
	if err != nil {
		return nil, err
	}
	return &fileBackend{dir: s.Root(), store: s}, nil
}

func (b *fileBackend) objects() objstore.Store { return b.store }

func (b *fileBackend) absent() string {
	if _, err := os.Stat(b.dir); errors.Is(err, fs.ErrNotExist) {
		return "no such directory"
	}
	return "no " + identityKey
}

func (b *fileBackend) metaPath(string) string {
	return filepath.Join(b.dir, filepath.FromSlash(metaPath))
}

func (b *fileBackend) lockPath(string) string { return filepath.Join(b.dir, lockName) }

func (b *fileBackend) replica() replica.Target {
	return replica.FileTarget(filepath.Join(b.dir, replica.Dir))
}

// format takes a missing or empty directory and creates the metadata in
// place, under meta/.
func (b *fileBackend) format(ctx context.Context, create func(string) error) (undo func(), err error) {
	created := false
	switch ents, rerr := os.ReadDir(b.dir); {
	case errors.Is(rerr, fs.ErrNotExist):
		if err := os.MkdirAll(b.dir, 0o755); err != nil {
			return nil, err
		}
		if err := filecopy.SyncDir(filepath.Dir(b.dir)); err != nil {
			return nil, err
		}
		created = true
	case rerr != nil:
		return nil, rerr
	case len(ents) > 0:
		if _, err := os.Stat(filepath.Join(b.dir, identityKey)); err == nil {
			return nil, errors.New("the location already holds an ohmfs volume")
		}
		return nil, errors.New("the directory is not empty and not an ohmfs volume")
	}
	// Leave nothing behind if formatting fails half way.
	undo = func() {
		if created {
			os.RemoveAll(b.dir)
			return
		}
		os.RemoveAll(filepath.Dir(b.metaPath("")))
		os.RemoveAll(filepath.Join(b.dir, replica.Dir))
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	if err := os.Mkdir(filepath.Dir(b.metaPath("")), 0o755); err != nil {
		return nil, err
	}
	if err := create(b.metaPath("")); err != nil {
		return nil, err
	}
	return undo, nil
}

// stale is always false: nothing but this host writes the directory.
func (b *fileBackend) stale(context.Context, string) (bool, error) { return false, nil }

func (b *fileBackend) claim(context.Context, Holder) (claim, error) { return localClaim{}, nil }

func (b *fileBackend) remoteHolder(context.Context) (*Holder, bool) { return nil, false }

// destroy removes everything in the directory, then the directory.
func (b *fileBackend) destroy(ctx context.Context, _ string) error {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == identityKey {
			continue
		}
		if err := os.RemoveAll(filepath.Join(b.dir, e.Name())); err != nil {
			return err
		}
	}
	return os.RemoveAll(b.dir)
}

// localClaim is the claim of a volume that only this host can reach: the
// local lock is all of it, and it cannot be lost.
type localClaim struct{}

func (localClaim) fence(s objstore.Store) objstore.Store { return s }
func (localClaim) lost() bool                            { return false }
func (localClaim) lostCh() <-chan struct{}               { return nil }
func (localClaim) abandon()                              {}
func (localClaim) release(context.Context)               {}
