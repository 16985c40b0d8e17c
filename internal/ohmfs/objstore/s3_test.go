package objstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"ohm/internal/s3test"
)

// TestS3BadInput checks that each way of pointing at the wrong place fails
// at open with one clear line.
func TestS3BadInput(t *testing.T) {
	srv := s3test.Shared(t)
	bucket := srv.NewBucket(t)
	tests := []struct {
		name     string
		url      string
		env      map[string]string
		wantErr  error
		wantText string
	}{
		{name: "wrong secret", url: "s3://" + bucket, env: map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, wantErr: ErrAccessDenied, wantText: "AWS_SECRET_ACCESS_KEY"},
		{name: "unknown key id", url: "s3://" + bucket, env: map[string]string{"AWS_ACCESS_KEY_ID": "nobody"}, wantErr: ErrAccessDenied, wantText: "access denied"},
		{name: "missing bucket", url: "s3://no-such-bucket-here/x", wantErr: ErrNoBucket, wantText: `bucket "no-such-bucket-here" does not exist`},
		{name: "unreachable endpoint", url: "s3://" + bucket, env: map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, wantErr: ErrUnreachable, wantText: "127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := NewS3(context.Background(), tt.url, S3Options{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewS3 error = %v, want %v", err, tt.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantText) || strings.Contains(msg, "\n") || strings.Contains(msg, "RequestID") {
				t.Errorf("error %q: want one line containing %q and no SDK noise", msg, tt.wantText)
			}
		})
	}
}

// TestS3PutDoesNotKeepData checks the Store contract: the caller may reuse
// the buffer as soon as Put returns.
func TestS3PutDoesNotKeepData(t *testing.T) {
	srv := s3test.Shared(t)
	s, err := NewS3(context.Background(), "s3://"+srv.NewBucket(t)+"/p", S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	buf := []byte(strings.Repeat("a", 1<<20))
	if err := s.Put(ctx, "k", buf); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 'b'
	}
	got, err := s.Get(ctx, "k", 0, -1)
	if err != nil || string(got) != strings.Repeat("a", 1<<20) {
		t.Fatalf("Get after reusing the Put buffer: len %d, err %v", len(got), err)
	}
}
