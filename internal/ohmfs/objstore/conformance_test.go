package objstore

import (
	"context"
	"testing"

	"ohm/internal/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// forEachStore runs a conformance test against every backend: the local
// directory, and S3 (a real versitygw on loopback) at a bucket's root and
// under a prefix.
func forEachStore(t *testing.T, test func(t *testing.T, s Store)) {
	t.Run("file", func(t *testing.T) { test(t, newTestStore(t)) })
	for _, prefix := range []string{"", "/vol/one"} {
		name := "s3"
		if prefix != "" {
			name = "s3-prefix"
		}
		t.Run(name, func(t *testing.T) {
			srv := s3test.Shared(t)
			bucket := srv.NewBucket(t)
			s, err := NewS3(context.Background(), "s3://"+bucket+prefix, S3Options{})
			if err != nil {
				t.Fatal(err)
			}
			test(t, s)
		})
	}
}
