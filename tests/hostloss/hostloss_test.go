// Package hostloss tests S3 volumes end to end through the ohm binary
// against a real S3-compatible server (versitygw on loopback): mount and
// status, the loss of the host (kill -9 of the mount and every local file
// of the volume gone), a lost lease, and bad input.
package hostloss

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"ohm/internal/s3test"
	"ohm/tests/internal/ohmtest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envWorkload); spec != "" {
		if err := runWorkload(spec); err != nil {
			fmt.Fprintln(os.Stderr, "workload:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := s3test.Main(m)
	ohmtest.CleanupBuild()
	os.Exit(code)
}

// s3Volume is a formatted s3:// volume, its cache directory and a mountpoint.
type s3Volume struct {
	bin, bucket, url, cache, mp string
}

func newS3Volume(t *testing.T) *s3Volume {
	t.Helper()
	ohmtest.RequireFUSE(t)
	srv := s3test.Shared(t)
	bin := ohmtest.Binary(t)
	dir := t.TempDir()
	v := &s3Volume{bin: bin, bucket: srv.NewBucket(t), cache: filepath.Join(dir, "cache"), mp: filepath.Join(dir, "mnt")}
	v.url = "s3://" + v.bucket + "/ws/demo"
	ohmtest.Ohm(t, bin, "fs", "format", v.url)
	t.Cleanup(func() { ohmtest.ForceUnmount(v.mp) })
	return v
}

// mountProc is an `ohm fs mount` process in the foreground.
type mountProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (p *mountProc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// mount starts `ohm fs mount` in the foreground and waits for the mount.
func (v *s3Volume) mount(t *testing.T, args ...string) *mountProc {
	t.Helper()
	log := filepath.Join(t.TempDir(), "mount.log")
	lf, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(v.bin, append([]string{"fs", "mount", v.url, v.mp, "--cache-dir", v.cache}, args...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &mountProc{cmd: cmd, done: make(chan struct{}), log: log}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !ohmtest.Mounted(v.mp) {
		select {
		case <-p.done:
			t.Fatalf("ohm fs mount exited before mounting: %v\n%s", cmd.ProcessState, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 60 s\n%s", p.output())
		}
	}
	return p
}

// stop ends a foreground mount with SIGTERM (flush, unmount) and waits.
func (p *mountProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("mount process did not exit after SIGTERM\n%s", p.output())
	}
	if !p.cmd.ProcessState.Success() {
		t.Fatalf("mount process: %v\n%s", p.cmd.ProcessState, p.output())
	}
}

type replicaStatus struct {
	Target        string  `json:"target"`
	Position      uint64  `json:"position"`
	LocalPosition uint64  `json:"local_position"`
	LagSeconds    float64 `json:"lag_seconds"`
	LastError     string  `json:"last_error"`
}

type volStatus struct {
	URL     string         `json:"url"`
	Files   uint64         `json:"files"`
	Mounted bool           `json:"mounted"`
	Replica *replicaStatus `json:"replica"`
}

func (v *s3Volume) status(t *testing.T) volStatus {
	t.Helper()
	out := ohmtest.Ohm(t, v.bin, "fs", "status", v.url, "--cache-dir", v.cache, "--json")
	var st volStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// waitCaughtUp polls status until the replica has every local commit.
func (v *s3Volume) waitCaughtUp(t *testing.T) volStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := v.status(t)
		if r := st.Replica; r != nil && r.LastError == "" && r.LagSeconds == 0 && r.Position > 0 && r.Position >= r.LocalPosition {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not catch up in 60 s: %+v", st.Replica)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (v *s3Volume) fsckClean(t *testing.T) {
	t.Helper()
	out := ohmtest.Ohm(t, v.bin, "fs", "fsck", v.url, "--cache-dir", v.cache, "--deep", "--json")
	var r struct {
		Clean    bool `json:"clean"`
		Problems []struct {
			Detail string `json:"detail"`
		} `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || !r.Clean {
		t.Fatalf("fsck: %v\n%s", err, out)
	}
}

// TestMountStatusRemount: format, mount --background, write, status
// --json shows the replica, umount, mount again: the files are there.
func TestMountStatusRemount(t *testing.T) {
	v := newS3Volume(t)
	ohmtest.Ohm(t, v.bin, "fs", "mount", v.url, v.mp, "--cache-dir", v.cache, "--background")
	want := map[string]string{}
	for i := range 20 {
		name := fmt.Sprintf("f%02d", i)
		want[name] = strings.Repeat(name, 1000*i)
		if err := os.WriteFile(filepath.Join(v.mp, name), []byte(want[name]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := v.waitCaughtUp(t)
	if !st.Mounted || !strings.HasPrefix(st.Replica.Target, "s3://"+v.bucket+"/ws/demo/") {
		t.Errorf("status while mounted: %+v, replica %+v", st, st.Replica)
	}
	ohmtest.Ohm(t, v.bin, "fs", "umount", v.mp)
	if st := v.status(t); st.Mounted {
		t.Errorf("status after umount says mounted")
	}

	ohmtest.Ohm(t, v.bin, "fs", "mount", v.url, v.mp, "--cache-dir", v.cache, "--background", "--fsync", "replica")
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(v.mp, name))
		if err != nil || string(got) != data {
			t.Errorf("%s after remount: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
		}
	}
	ohmtest.Ohm(t, v.bin, "fs", "umount", v.mp)
	v.fsckClean(t)
}

// entry is what the test compares of one file after the host loss.
type entry struct {
	Mode   fs.FileMode
	Size   int64
	Uid    uint32
	Gid    uint32
	Mtime  int64
	Nlink  uint64
	Ino    uint64 // replaced by the first path of the inode, for comparison
	Link   string
	Sum    string
	Xattrs string
}

// snapshot walks root and records every file.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	firstPath := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{Mode: fs.FileMode(st.Mode), Size: st.Size, Uid: st.Uid, Gid: st.Gid, Mtime: st.Mtim.Nano(), Nlink: uint64(st.Nlink)}
		if d.Type()&fs.ModeSymlink != 0 {
			e.Link, err = os.Readlink(p)
			if err != nil {
				return err
			}
		} else {
			e.Xattrs = xattrs(t, p)
		}
		if d.Type().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			e.Sum = fmt.Sprintf("%x", h.Sum(nil))
			if st.Nlink > 1 {
				if _, ok := firstPath[st.Ino]; !ok {
					firstPath[st.Ino] = rel
				}
				e.Link = "hardlink:" + firstPath[st.Ino]
			}
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func xattrs(t *testing.T, p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		fmt.Fprintf(&b, "%s=%q;", name, v[:m])
	}
	return b.String()
}

// writeTree writes the mixed tree of the host-loss test under root, with
// fsync: two large files, 10,000 small files in 100 directories,
// symlinks, hard links, xattrs, modes, owners and mtimes.
func writeTree(t *testing.T, root string) {
	t.Helper()
	rnd := rand.New(rand.NewSource(42))
	writeFile := func(p string, size int, sync bool) {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, min(size, 1<<20))
		for left := size; left > 0; left -= len(buf) {
			if left < len(buf) {
				buf = buf[:left]
			}
			rnd.Read(buf)
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if sync {
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync %s: %v", p, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "big"), 0o755))
	writeFile(filepath.Join(root, "big", "a.bin"), 40<<20, true)
	writeFile(filepath.Join(root, "big", "b.bin"), 9<<20+12345, true)
	must(os.Link(filepath.Join(root, "big", "b.bin"), filepath.Join(root, "b-link.bin")))

	for d := range 100 {
		dir := filepath.Join(root, "small", fmt.Sprintf("d%03d", d))
		must(os.MkdirAll(dir, 0o755))
		for i := range 100 {
			p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
			writeFile(p, rnd.Intn(3000), false)
			if i%10 == 0 {
				must(os.Chmod(p, 0o600|fs.FileMode(i%8)))
				must(os.Chown(p, 1000+i%3, 1000))
				must(unix.Setxattr(p, "user.ohm.test", []byte(fmt.Sprintf("v%d-%d", d, i)), 0))
			}
			if i%25 == 0 {
				mt := time.Date(2020, 1, 1+d%28, i%24, 0, 0, 123456789, time.UTC)
				must(os.Chtimes(p, mt, mt))
			}
		}
		must(unix.Setxattr(dir, "user.dir", []byte(dir), 0))
		// A directory fsync commits the whole volume.
		df, err := os.Open(dir)
		must(err)
		must(df.Sync())
		df.Close()
	}
	links := filepath.Join(root, "links")
	must(os.MkdirAll(links, 0o755))
	for i := range 50 {
		target := fmt.Sprintf("../small/d%03d/f%03d", i, i)
		switch i % 3 {
		case 1:
			target = filepath.Join(root, "small", fmt.Sprintf("d%03d", i))
		case 2:
			target = fmt.Sprintf("dangling-%d", i)
		}
		must(os.Symlink(target, filepath.Join(links, fmt.Sprintf("s%02d", i))))
	}
	for i := range 20 {
		must(os.Link(filepath.Join(root, "small", fmt.Sprintf("d%03d", i), "f050"), filepath.Join(links, fmt.Sprintf("h%02d", i))))
	}
	must(os.Mkdir(filepath.Join(root, "empty"), 0o700))
	rf, err := os.Open(root)
	must(err)
	must(rf.Sync())
	rf.Close()
}

// TestHostLoss writes a mixed tree with fsync, waits until the replica
// has caught up, kill -9s the mount, removes every local file of the
// volume (its cache directory), mounts again from the replica: every file
// and attribute is back byte for byte, and fsck is clean.
func TestHostLoss(t *testing.T) {
	v := newS3Volume(t)
	p := v.mount(t)
	writeTree(t, v.mp)
	before := snapshot(t, v.mp)
	if len(before) < 10_000 {
		t.Fatalf("tree has %d entries", len(before))
	}
	v.waitCaughtUp(t)

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	ohmtest.KillServer(t, v.mp)
	ohmtest.ForceUnmount(v.mp)
	if err := os.RemoveAll(v.cache); err != nil {
		t.Fatal(err)
	}

	p = v.mount(t)
	after := snapshot(t, v.mp)
	diffs := 0
	for name, b := range before {
		a, ok := after[name]
		switch {
		case !ok:
			t.Errorf("%s: missing after the host loss", name)
		case a != b:
			t.Errorf("%s: after the host loss\n got %+v\nwant %+v", name, a, b)
		default:
			continue
		}
		if diffs++; diffs > 20 {
			t.Fatal("too many differences")
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s: appeared after the host loss", name)
		}
	}
	p.stop(t)
	v.fsckClean(t)
}

// TestLeaseLost: when another holder takes the lease, the mount stops
// serving, writes nothing more and exits non-zero with one line saying so.
func TestLeaseLost(t *testing.T) {
	v := newS3Volume(t)
	p := v.mount(t)
	if err := os.WriteFile(filepath.Join(v.mp, "before"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Another host's lease, as if this one had been presumed dead.
	rec := fmt.Sprintf(`{"id":"other","host":"elsewhere","holder":{"pid":1,"mountpoint":"/mnt/x"},"expires":%q}`,
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	_, err := s3test.Shared(t).Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(v.bucket), Key: aws.String("ws/demo/lease"), Body: bytes.NewReader([]byte(rec)),
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the mount still runs 60 s after losing its lease\n%s", p.output())
	}
	if p.cmd.ProcessState.Success() {
		t.Fatalf("the mount exited 0 after losing its lease\n%s", p.output())
	}
	if !strings.Contains(p.output(), "lost the lease") {
		t.Errorf("the mount's last words do not say the lease was lost:\n%s", p.output())
	}
	if ohmtest.Mounted(v.mp) {
		t.Error("still mounted after the lease was lost")
	}
}

// TestBadInput: each mistake gives one clear line and a non-zero exit.
func TestBadInput(t *testing.T) {
	srv := s3test.Shared(t)
	bin := ohmtest.Binary(t)
	bucket := srv.NewBucket(t)
	// A prefix holding something else.
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("photos/cat.jpg"), Body: strings.NewReader("meow"),
	}); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"wrong credentials", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, []string{"fs", "status", "s3://" + bucket + "/v"}, "access denied"},
		{"missing bucket", nil, []string{"fs", "format", "s3://no-such-bucket-ohm/v"}, "does not exist"},
		{"non-ohmfs prefix status", nil, []string{"fs", "status", "s3://" + bucket + "/photos"}, "not an ohmfs volume"},
		{"non-ohmfs prefix mount", nil, []string{"fs", "mount", "s3://" + bucket + "/photos", t.TempDir()}, "not an ohmfs volume"},
		{"non-ohmfs prefix format", nil, []string{"fs", "format", "s3://" + bucket + "/photos"}, "not empty and not an ohmfs volume"},
		{"unreachable endpoint", []string{"AWS_ENDPOINT_URL=http://" + deadAddr}, []string{"fs", "status", "s3://" + bucket + "/v"}, "unreachable"},
		{"bad fsync", nil, []string{"fs", "mount", "s3://" + bucket + "/v", t.TempDir(), "--fsync", "never"}, "--fsync"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("exit: %v, want non-zero\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tc.want) || strings.Contains(msg, "goroutine") {
				t.Errorf("stderr = %q, want one line containing %q", msg, tc.want)
			}
		})
	}
}
