package computer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"ohm/internal/s3test"
	"ohm/internal/template"
)

func TestCheckStore(t *testing.T) {
	for _, tc := range []struct {
		store string
		ws    Workspace
		ok    bool
	}{
		{"", DirWorkspace{}, true},
		{"s3://bucket/prefix", NewBlockWorkspace("/nonexistent/ohm"), true},
		{"s3://bucket", NewBlockWorkspace("/nonexistent/ohm"), true},
		{"s3://", NewBlockWorkspace("/nonexistent/ohm"), false},
		{"/var/lib/elsewhere", NewBlockWorkspace("/nonexistent/ohm"), false},
		{"file:///srv/x", NewBlockWorkspace("/nonexistent/ohm"), false},
		{"s3://bucket/a/../b", NewBlockWorkspace("/nonexistent/ohm"), false},
		{"s3://bucket/prefix", DirWorkspace{}, false},
	} {
		err := checkStore(tc.store, tc.ws)
		if (err == nil) != tc.ok {
			t.Errorf("checkStore(%q, %T) = %v, want ok %v", tc.store, tc.ws, err, tc.ok)
		}
		if err != nil && ErrorCode(err) != CodeInvalid {
			t.Errorf("checkStore(%q): %v is not an invalid-input error", tc.store, err)
		}
	}
}

func TestStoreVolumeURL(t *testing.T) {
	for _, store := range []string{"s3://b/p", "s3://b/p/", "s3://b"} {
		m := &Manager{store: store}
		a, err := m.storeVolume("box")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := m.storeVolume("box")
		want := strings.TrimRight(store, "/") + "/box-"
		if !strings.HasPrefix(a, want) || len(a) != len(want)+12 || a == b {
			t.Errorf("store %s: volumes %s and %s, want two distinct %s<12 hex>", store, a, b, want)
		}
	}
}

// s3Server starts a versitygw for one test, points this process's
// environment (and so the mounts it starts) at it and returns it with a
// new bucket; it skips without the binary.
func s3Server(t *testing.T) (*s3test.Server, string) {
	t.Helper()
	srv, err := s3test.Start()
	if err != nil {
		t.Skipf("no S3 test server: %v", err)
	}
	t.Cleanup(srv.Close)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, k := range []string{"AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	return srv, srv.NewBucket(t)
}

// objectsUnder lists the keys under prefix in bucket.
func objectsUnder(t *testing.T, srv *s3test.Server, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(srv.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// TestComputerOnS3 runs a real computer whose volume is in the S3 test
// server (Options.Store) through its life, and loses its host: stopped,
// its whole directory on the host deleted (the volume's metadata cache
// with it; the daemon's record stays) and the daemon opened again
// without a store, it starts and reads back what it wrote in its
// workspace and on its root disk. Checkpoint and restore work on
// it, fork refuses it in one sentence, and delete leaves no object.
func TestComputerOnS3(t *testing.T) {
	requireBlock(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox for the minimal template")
	}
	srv, bucket := s3Server(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	seedTemplates(t, dataDir)
	store := "s3://" + bucket + "/computers"
	open := func(store string) *Manager {
		t.Helper()
		m, err := Open(ctx, Options{DataDir: dataDir, Exe: ohmBinary(t), Templates: template.NewStore(dataDir), Logf: t.Logf, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open(store)
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		m.Close()
	})

	if _, err := m.Create(ctx, CreateOptions{Name: "far", Template: "minimal", DiskSizeMB: 128}); err != nil {
		t.Fatal(err)
	}
	rec := mustGet(t, m, "far")
	if !strings.HasPrefix(rec.Volume, store+"/far-") {
		t.Fatalf("volume %q, want one under %s", rec.Volume, store)
	}
	prefix := strings.TrimPrefix(rec.Volume, "s3://"+bucket+"/") + "/"
	cache := m.volume("far")
	if _, err := os.Stat(filepath.Join(cache, "blocks")); !os.IsNotExist(err) {
		t.Errorf("the volume keeps blocks on the host: %v", err)
	}
	run(t, m, "far", "echo home > /home/ohm/h && sync")
	runRoot(t, m, "far", "echo root > /root/x && sync")

	// Checkpoint and restore: clones within the volume's metadata.
	c, err := m.Checkpoint(ctx, "far", "s3")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Disks) != 2 {
		t.Errorf("checkpoint holds %v, want the workspace and the root disk", c.Disks)
	}
	runRoot(t, m, "far", "echo changed > /home/ohm/h && echo changed > /root/x && sync")
	if err := m.Restore(ctx, "far", c.ID); err != nil {
		t.Fatal(err)
	}
	if got := runRoot(t, m, "far", "cat /home/ohm/h /root/x"); got != "home\nroot\n" {
		t.Fatalf("after restore: %q", got)
	}
	_, err = m.Fork(ctx, "far", "kid", c.ID)
	wantCode(t, "fork of a computer on S3", err, CodeState)
	if !strings.Contains(err.Error(), "only file volumes can be forked") {
		t.Errorf("fork refusal does not say why: %v", err)
	}

	// The host is lost: the computer's directory goes, the volume's
	// local state with it; the record stays, and the daemon comes back
	// without --store.
	if err := m.Stop(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	if keys := objectsUnder(t, srv, bucket, prefix); len(keys) == 0 {
		t.Fatalf("nothing under s3://%s/%s", bucket, prefix)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(cache)); err != nil {
		t.Fatal(err)
	}
	m = open("")
	if err := m.Start(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	if got := runRoot(t, m, "far", "cat /home/ohm/h /root/x"); got != "home\nroot\n" {
		t.Fatalf("after the host's loss: %q", got)
	}
	if _, err := os.Stat(filepath.Join(cache, "meta.db")); err != nil {
		t.Errorf("metadata not restored into the cache: %v", err)
	}
	if cs, err := m.Checkpoints(ctx, "far"); err != nil || len(cs) != 1 || cs[0].ID != c.ID {
		t.Errorf("checkpoints after the host's loss: %+v, %v", cs, err)
	}

	// Resize of the stopped computer: its root disk image in the volume
	// grows at the start.
	if err := m.Stop(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	if err := m.Resize(ctx, "far", 192); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	if got := runRoot(t, m, "far", "cat /root/x"); got != "root\n" {
		t.Fatalf("after resize: %q", got)
	}
	if wu, err := m.WorkspaceUsage(ctx, "far"); err != nil || wu.Layout != "block" {
		t.Errorf("workspace usage: %+v, %v", wu, err)
	}

	if err := m.Delete(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	if keys := objectsUnder(t, srv, bucket, prefix); len(keys) != 0 {
		t.Errorf("delete left %d objects under s3://%s/%s, e.g. %s", len(keys), bucket, prefix, keys[0])
	}
	if ms := mountsUnder(t, dataDir); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
}
