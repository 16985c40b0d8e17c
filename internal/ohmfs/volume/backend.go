package volume

import (
	"context"
	"fmt"

	"ohm/internal/ohmfs/objstore"
	"ohm/internal/ohmfs/replica"
)

// backend is where a volume lives: everything that differs between a
// local directory (file.go) and an S3 prefix (s3.go). Format, Open,
// Inspect and Destroy work through it and never ask which one they have.
type backend interface {
	// objects is the store holding the volume's identity, blocks and
	// (for S3) lease and replica.
	objects() objstore.Store
	// absent says, for ErrNotVolume, what the location lacks when it has
	// no identity object, e.g. "no such directory".
	absent() string
	// metaPath is the local SQLite database of volume uuid.
	metaPath(uuid string) string
	// lockPath is the local single-writer lock of volume uuid.
	lockPath(uuid string) string
	// replica is where the metadata replica lives.
	replica() replica.Target
	// format checks that the location is empty and prepares it, then
	// creates the volume's first metadata with create (at a local path of
	// its choosing, shipped to the replica by create). undo removes what
	// format made, for a Format that fails after it.
	format(ctx context.Context, create func(metaPath string) error) (undo func(), err error)
	// stale reports whether the local database at path is older than the
	// replica: another host wrote the volume since this one last held it.
	stale(ctx context.Context, path string) (bool, error)
	// claim takes what fences writers on other hosts, for h, after the
	// local lock is held.
	claim(ctx context.Context, h Holder) (claim, error)
	// remoteHolder reports a writer on another host, for status.
	remoteHolder(ctx context.Context) (*Holder, bool)
	// destroy deletes the volume's objects and local state of volume uuid,
	// the identity object last (so that an interrupted destroy can run
	// again), with the local lock and the claim held.
	destroy(ctx context.Context, uuid string) error
}

// claim is a backend's hold on a volume beyond the local lock: nothing for
// a directory (the flock is all there is), the lease for S3.
type claim interface {
	// fence wraps s so that its writes fail once the claim is lost.
	fence(s objstore.Store) objstore.Store
	// lost reports whether the claim is gone (writes must stop).
	lost() bool
	// lostCh is closed when the claim is lost; nil if it cannot be.
	lostCh() <-chan struct{}
	// abandon gives the claim up without a word to the store: the caller
	// is deleting everything, the claim's own object with it.
	abandon()
	// release gives the claim up for the next holder.
	release(ctx context.Context)
}

// backendOptions are what a backend is resolved with; the zero value gives
// the defaults.
type backendOptions struct {
	cacheDir string      // where an S3 volume keeps its local metadata ("" for the default)
	lease    LeaseTiming // an S3 volume's lease timing (zero for the defaults)
}

// resolve returns the backend of the volume URL url.
func resolve(ctx context.Context, url string, o backendOptions) (backend, error) {
	scheme, rest, err := objstore.SplitURL(url)
	if err != nil {
		return nil, err // it names url
	}
	switch scheme {
	case objstore.SchemeFile:
		return newFileBackend(rest)
	case objstore.SchemeS3:
		return newS3Backend(ctx, url, o)
	default:
		return nil, fmt.Errorf("volume %s: no backend for scheme %q", url, scheme)
	}
}

var (
	_ backend = (*fileBackend)(nil)
	_ backend = (*s3Backend)(nil)
	_ claim   = localClaim{}
	_ claim   = (*lease)(nil)
)
