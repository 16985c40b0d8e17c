package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"ohm/internal/ohmfs/objstore"
	"ohm/internal/ohmfs/replica"
)

// s3Backend is a volume under an S3 prefix: ohmfs.json, blocks/, lease and
// meta-replica/ there, its SQLite database and lock in a local cache
// directory (restored from the replica when missing), so that any host can
// open it. The lease object (lease.go) fences a second host.
type s3Backend struct {
	url      string
	s        *objstore.S3Store
	cacheDir string // the local directory, if given; else DefaultCacheRoot/<uuid>
	lease    LeaseTiming
}

func newS3Backend(ctx context.Context, url string, o backendOptions) (*s3Backend, error) {
	s, err := objstore.NewS3(ctx, url, objstore.S3Options{})
	if err != nil {
		return nil, err // it names url
	}
	return &s3Backend{url: url, s: s, cacheDir: o.cacheDir, lease: o.lease}, nil
}

func (b *s3Backend) objects() objstore.Store { return b.s }

func (b *s3Backend) absent() string { return "no " + identityKey + " under the prefix" }

// local is the volume's local directory on this host.
func (b *s3Backend) local(uuid string) string {
	if b.cacheDir != "" {
		return b.cacheDir
	}
	return filepath.Join(DefaultCacheRoot, uuid)
}

func (b *s3Backend) metaPath(uuid string) string { return filepath.Join(b.local(uuid), "meta.db") }

func (b *s3Backend) lockPath(uuid string) string { return filepath.Join(b.local(uuid), lockName) }

func (b *s3Backend) replica() replica.Target { return replica.S3Target(b.s) }

// format takes an empty prefix. The metadata is made in a scratch
// directory and shipped to the replica; the first mount restores it.
func (b *s3Backend) format(ctx context.Context, create func(string) error) (func(), error) {
	errStop := errors.New("stop")
	found := ""
	err := b.s.List(ctx, "", func(oi objstore.ObjectInfo) error { found = oi.Key; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	if found != "" {
		if _, err := b.s.Head(ctx, identityKey); err == nil {
			return nil, errors.New("the location already holds an ohmfs volume")
		}
		return nil, fmt.Errorf("the prefix is not empty and not an ohmfs volume (it holds %s)", found)
	}
	scratch, err := os.MkdirTemp("", "ohm-format-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if err := create(filepath.Join(scratch, "meta.db")); err != nil {
		return nil, err
	}
	// Nothing to undo: without ohmfs.json the prefix holds no volume.
	return func() {}, nil
}

func (b *s3Backend) stale(ctx context.Context, path string) (bool, error) {
	return replica.Stale(ctx, path, b.replica())
}

func (b *s3Backend) claim(ctx context.Context, h Holder) (claim, error) {
	return acquireLease(ctx, b.url, b.s, h, b.lease)
}

// remoteHolder reads the lease: a holder whose lease has not expired.
func (b *s3Backend) remoteHolder(ctx context.Context) (*Holder, bool) {
	rec, _, err := (&lease{s: b.s, key: b.s.Prefix() + leaseKey}).read(ctx)
	if err != nil || !time.Now().Before(rec.Expires) {
		return nil, false
	}
	h := rec.Holder
	return &h, true
}

// destroy deletes every object under the prefix, ohmfs.json last, then the
// local cache directory.
func (b *s3Backend) destroy(ctx context.Context, uuid string) error {
	var keys []string
	err := b.s.List(ctx, "", func(oi objstore.ObjectInfo) error {
		if oi.Key != identityKey {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	for _, k := range keys {
		if err != nil {
			break
		}
		err = b.s.Delete(ctx, k)
	}
	if err == nil {
		err = b.s.Delete(ctx, identityKey)
	}
	if err == nil {
		err = os.RemoveAll(b.local(uuid))
	}
	return err
}
