package computer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"ohm/internal/ohmfs/objstore"
	"ohm/internal/ohmfs/volume"
)

// Workspace volumes in an object store (docs/durability.md, "Computers
// on S3"). With Options.Store (`ohm serve --store s3://bucket/prefix`) a
// new computer's volume is s3://bucket/prefix/<name>-<id>: its blocks,
// lease and metadata replica there, and only its metadata cache on the
// host, in <dir>/workspace, where a file volume would be. Both disks live
// in the volume, so the computer survives the loss of its host: a host
// that has the computer's record and no cache restores the metadata from
// the replica at the next mount.
//
// The record (Record.Volume) remembers the URL: a computer made with a
// file volume keeps it, and a daemon started without --store still opens
// the computers it made with one (credentials and endpoint from the AWS_*
// environment, as `ohm fs` takes them). Everything else of the block
// layout is the same; everything of a computer's directory but the
// volume's cache keeps its path (the Workspace's vol stays <dir>/workspace
// and BlockWorkspace asks its locator where the volume is).

// volumeAt is where a computer's workspace volume lives: url, and for a
// volume in an object store the local directory of its metadata
// (cacheDir, the computer's <dir>/workspace).
type volumeAt struct{ url, cacheDir string }

// remote reports whether the volume is in an object store.
func (v volumeAt) remote() bool { return v.cacheDir != "" }

// volumeOf says where the volume whose local path is vol lives: vol
// itself (a file volume) unless w's locator names a URL for it.
func (w *BlockWorkspace) volumeOf(ctx context.Context, vol string) (volumeAt, error) {
	if w.locate == nil {
		return volumeAt{url: vol}, nil
	}
	url, err := w.locate(ctx, vol)
	if err != nil {
		return volumeAt{}, fmt.Errorf("find workspace volume: %w", err)
	}
	if url == "" {
		return volumeAt{url: vol}, nil
	}
	return volumeAt{url: url, cacheDir: vol}, nil
}

// volumeUsage reads the committed metadata of the volume whose local path
// is vol, wherever it lives.
func (w *BlockWorkspace) volumeUsage(ctx context.Context, vol string) (WorkspaceUsage, error) {
	loc, err := w.volumeOf(ctx, vol)
	if err != nil {
		return WorkspaceUsage{}, err
	}
	if !loc.remote() {
		return w.files.Usage(ctx, vol)
	}
	st, err := volume.InspectWith(ctx, loc.url, volume.OpenOptions{CacheDir: loc.cacheDir})
	if err != nil {
		return WorkspaceUsage{}, err
	}
	return usageOfStatus(st), nil
}

// usageOfStatus is what a volume's status says of a workspace.
func usageOfStatus(st volume.Status) WorkspaceUsage {
	u := WorkspaceUsage{UsedBytes: st.UsedBytes, StoredBytes: st.StoredBytes, Files: st.Files, Capacity: st.Capacity}
	if st.Replica != nil {
		lag := st.Replica.LagSeconds
		u.ReplicaLagSeconds = &lag
	}
	return u
}

// destroyVolume removes the volume whose local path is vol with all its
// data: for a volume in an object store every object under its prefix,
// and its local cache. One that was never formatted is no error.
func (w *BlockWorkspace) destroyVolume(ctx context.Context, vol string) error {
	loc, err := w.volumeOf(ctx, vol)
	if err != nil {
		return err
	}
	if !loc.remote() {
		return w.files.Destroy(ctx, vol)
	}
	err = volume.DestroyWith(ctx, loc.url, volume.DestroyOptions{CacheDir: loc.cacheDir})
	if err != nil && !errors.Is(err, volume.ErrNotVolume) {
		return fmt.Errorf("destroy workspace volume: %w", err)
	}
	return nil
}

// checkStore checks the Options.Store of a manager: an s3:// URL naming a
// bucket, for workspaces of the block layout. It is not reached here:
// an object store that is down must not keep the daemon from serving its
// other computers (create says what is wrong).
func checkStore(store string, ws Workspace) error {
	if store == "" {
		return nil
	}
	if _, _, err := objstore.ParseS3URL(store); err != nil {
		return invalidf("store: %v", err)
	}
	if _, ok := ws.(*BlockWorkspace); !ok {
		return invalidf("store %s: volumes in an object store need the block layout of workspaces", store)
	}
	return nil
}

// storeVolume is the URL of a new volume for computer name in the store:
// its name, for whoever reads the bucket, and a random id, so that a name
// used again (or by another daemon on the same prefix) never meets what
// is left of an earlier volume.
func (m *Manager) storeVolume(name string) (string, error) {
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("volume id: %w", err)
	}
	return strings.TrimRight(m.store, "/") + "/" + name + "-" + hex.EncodeToString(id[:]), nil
}

// volumeURL is BlockWorkspace's locator for m's computers: the URL of the
// volume whose local path is vol, from the computer's record; empty for a
// file volume (and for a path that is not one of m's computers').
func (m *Manager) volumeURL(ctx context.Context, vol string) (string, error) {
	dir := pathsOfVolume(vol).dir
	name := filepath.Base(dir)
	if filepath.Clean(m.dir(name)) != dir {
		return "", nil
	}
	rec, err := m.reg.get(ctx, name)
	if ErrorCode(err) == CodeNotFound {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return rec.Volume, nil
}

// remoteVolume reports whether rec's volume lives in an object store.
func remoteVolume(rec Record) bool { return rec.Volume != "" }

// remakeDir makes again what create made of the directory of rec, whose
// volume is in an object store, and this host lost (or never had): all
// of it is this host's state, the disks are in the volume.
func (m *Manager) remakeDir(rec Record) error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{m.dir(rec.Name), 0o700},
		{filepath.Join(m.dir(rec.Name), "sandbox"), 0o700},
		{m.homeMount(rec.Name), 0o755},
		{m.home(rec.Name), 0o755},
	} {
		if err := os.Mkdir(d.path, d.mode); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("computer directory: %w", err)
		}
	}
	return nil
}
