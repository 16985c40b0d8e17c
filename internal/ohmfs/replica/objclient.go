package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/superfly/ltx"

	"ohm/internal/ohmfs/objstore"
)

// storeClient is a Litestream replica client over an objstore.Store. S3
// replicas go through the volume's own S3 client instead of Litestream's:
// one HTTP stack with one configuration (endpoint, credentials, a CA bundle
// from AWS_CA_BUNDLE, which Litestream's client cannot load because it
// brings its own HTTP client), the same retries with backoff on 5xx and
// network errors, and the same timeouts.
//
// The keys are those of Litestream's S3 client, <dir>/<level as %04x>/<min>-<max>.ltx,
// so a replica written by either is read by both.
type storeClient struct {
	s   objstore.Store
	dir string // key prefix, without a trailing slash
}

func newStoreClient(s objstore.Store, dir string) *storeClient {
	return &storeClient{s: s, dir: strings.TrimSuffix(dir, "/")}
}

// Type names the client; Litestream only uses it in messages.
func (c *storeClient) Type() string { return "ohm-objstore" }

// Init does nothing: the store is open already.
func (c *storeClient) Init(ctx context.Context) error { return nil }

// SetLogger is part of litestream.ReplicaClient; the store logs nothing.
func (c *storeClient) SetLogger(*slog.Logger) {}

func (c *storeClient) levelPrefix(level int) string {
	return fmt.Sprintf("%s/%04x/", c.dir, level)
}

func (c *storeClient) key(level int, minTXID, maxTXID ltx.TXID) string {
	return c.levelPrefix(level) + ltx.FormatFilename(minTXID, maxTXID)
}

// LTXFiles lists the level's files from seek on, ordered by transaction id.
// Creation times are the objects' modification times.
func (c *storeClient) LTXFiles(ctx context.Context, level int, seek ltx.TXID, useMetadata bool) (ltx.FileIterator, error) {
	prefix := c.levelPrefix(level)
	var infos []*ltx.FileInfo
	err := c.s.List(ctx, prefix, func(oi objstore.ObjectInfo) error {
		name := strings.TrimPrefix(oi.Key, prefix)
		if strings.Contains(name, "/") {
			return nil
		}
		minTXID, maxTXID, err := ltx.ParseFilename(name)
		if err != nil || minTXID < seek {
			return nil
		}
		infos = append(infos, &ltx.FileInfo{
			Level: level, MinTXID: minTXID, MaxTXID: maxTXID,
			Size: oi.Size, CreatedAt: oi.ModTime.UTC(),
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list replica level %d in %s: %w", level, c.s, err)
	}
	return ltx.NewFileInfoSliceIterator(infos), nil
}

// OpenLTXFile reads size bytes (all if size <= 0) of an LTX file from
// offset. A missing file is os.ErrNotExist, as Litestream expects.
func (c *storeClient) OpenLTXFile(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (io.ReadCloser, error) {
	length := size
	if length <= 0 {
		length = -1
	}
	key := c.key(level, minTXID, maxTXID)
	b, err := c.s.Get(ctx, key, offset, length)
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, fmt.Errorf("open replica file %s: %w", key, os.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open replica file %s: %w", key, err)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// WriteLTXFile stores an LTX file with one atomic Put.
func (c *storeClient) WriteLTXFile(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader) (*ltx.FileInfo, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("write replica file: %w", err)
	}
	key := c.key(level, minTXID, maxTXID)
	if err := c.s.Put(ctx, key, b); err != nil {
		return nil, fmt.Errorf("write replica file %s: %w", key, err)
	}
	created := time.Now().UTC()
	var hdr ltx.Header
	if len(b) >= ltx.HeaderSize && hdr.UnmarshalBinary(b[:ltx.HeaderSize]) == nil && hdr.Timestamp > 0 {
		created = time.UnixMilli(hdr.Timestamp).UTC()
	}
	return &ltx.FileInfo{Level: level, MinTXID: minTXID, MaxTXID: maxTXID, Size: int64(len(b)), CreatedAt: created}, nil
}

// DeleteLTXFiles deletes the given files.
func (c *storeClient) DeleteLTXFiles(ctx context.Context, a []*ltx.FileInfo) error {
	for _, fi := range a {
		key := c.key(fi.Level, fi.MinTXID, fi.MaxTXID)
		if err := c.s.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete replica file %s: %w", key, err)
		}
	}
	return nil
}

// DeleteAll deletes the whole replica.
func (c *storeClient) DeleteAll(ctx context.Context) error {
	var keys []string
	if err := c.s.List(ctx, c.dir+"/", func(oi objstore.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		return fmt.Errorf("delete replica in %s: %w", c.s, err)
	}
	for _, k := range keys {
		if err := c.s.Delete(ctx, k); err != nil {
			return fmt.Errorf("delete replica file %s: %w", k, err)
		}
	}
	return nil
}
