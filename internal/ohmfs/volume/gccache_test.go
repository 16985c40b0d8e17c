package volume

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ohm/internal/s3test"
)

// GCWith collects an S3 volume through the metadata cache it is told of
// (ohm fs gc --cache-dir), not the default one.
func TestS3GCCacheDir(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	url := "s3://" + srv.NewBucket(t) + "/gc"
	if err := Format(ctx, url, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	if _, err := GCWith(ctx, url, GCOptions{CacheDir: cache}); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(cache); err != nil || len(ents) == 0 {
		t.Fatalf("cache dir %s after gc: %v entries, %v; want the volume's metadata there", cache, len(ents), err)
	}
}
