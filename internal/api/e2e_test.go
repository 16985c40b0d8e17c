package api

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ohm/client"
)

// newComputer creates a minimal computer for a test.
func newComputer(t *testing.T, c *client.Client, name string) {
	t.Helper()
	if _, err := c.Create(context.Background(), client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 256}, nil); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, c *client.Client, name, cmd string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code, err := c.Exec(context.Background(), name, client.ExecRequest{Command: cmd}, &out, &out)
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), code
}

// TestOverTCP drives a computer over TCP with the bearer token, the way a
// remote program would: lifecycle, exec, an interactive session and files.
func TestOverTCP(t *testing.T) {
	d := startDaemonServer(t)
	tok, err := LoadToken(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(&tokenAuth{dataDir: d.dir, next: d.api})
	defer ts.Close()
	ctx := context.Background()
	bad, _ := client.NewTCP(ts.URL, "wrong-token-wrong-token-wrong-token", nil)
	if _, err := bad.Create(ctx, client.CreateRequest{Name: "tcp", Template: "minimal", DiskSizeMB: 256}, nil); !isCode(err, "unauthenticated") {
		t.Fatalf("create with a wrong token: %v", err)
	}
	if _, err := bad.Interactive(ctx, "tcp", client.ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard, nil); !isCode(err, "unauthenticated") {
		t.Errorf("websocket with a wrong token: %v", err)
	}
	c, err := client.NewTCP(ts.URL, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	newComputer(t, c, "tcp")
	if out, code := run(t, c, "tcp", "echo hi; exit 7"); out != "hi\n" || code != 7 {
		t.Errorf("exec over TCP: %q %d", out, code)
	}
	var out bytes.Buffer
	code, err := c.Interactive(ctx, "tcp", client.ExecRequest{Argv: []string{"cat"}}, strings.NewReader("over tcp\n"), &out, io.Discard, nil)
	if err != nil || code != 0 || out.String() != "over tcp\n" {
		t.Errorf("interactive over TCP: %d %v %q", code, err, out.String())
	}
	if err := c.PutFile(ctx, "tcp", "/home/ohm/f", "", strings.NewReader("tcp file")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := c.GetFile(ctx, "tcp", "/home/ohm/f", "", &out); err != nil || out.String() != "tcp file" {
		t.Errorf("file over TCP: %v %q", err, out.String())
	}
	if err := c.Stop(ctx, "tcp"); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, "tcp"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "tcp"); err != nil {
		t.Fatal(err)
	}
}

func TestBackgroundProcesses(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "bg")

	// A foreground command dies with its client.
	cctx, cancel := context.WithCancel(ctx)
	first := &signalWriter{first: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(cctx, "bg", client.ExecRequest{Command: "echo up; sleep 1000"}, first, io.Discard)
		done <- err
	}()
	<-first.first
	cancel()
	<-done
	waitFor(t, func() bool {
		out, _ := run(t, c, "bg", "ps -o args | grep -c '^sleep 1000' || true")
		return strings.TrimSpace(out) == "0"
	}, "the foreground command to die with its client")

	// A background one outlives it, can be listed, re-attached and killed.
	p, err := c.StartBackground(ctx, "bg", client.ExecRequest{Command: "echo started; echo oops >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finished; exit 4"})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.Processes(ctx, "bg")
	if err != nil || len(ps) != 1 || ps[0].ID != p.ID || ps[0].State != "running" {
		t.Fatalf("processes: %+v, %v", ps, err)
	}
	run(t, c, "bg", "touch /tmp/go")
	var stdout, stderr bytes.Buffer
	code, err := c.Attach(ctx, "bg", p.ID, &stdout, &stderr)
	if err != nil || code != 4 || stdout.String() != "started\nfinished\n" || stderr.String() != "oops\n" {
		t.Errorf("attach: code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	got, err := c.Process(ctx, "bg", p.ID)
	if err != nil || got.State != "exited" || got.ExitCode == nil || *got.ExitCode != 4 {
		t.Errorf("process after exit: %+v, %v", got, err)
	}

	long, err := c.StartBackground(ctx, "bg", client.ExecRequest{Command: "sleep 1000"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kill(ctx, "bg", long.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Process(ctx, "bg", long.ID); !isCode(err, "not_found") {
		t.Errorf("process after kill: %v", err)
	}
	// The agent kills the process group once the exec stream is cut; the
	// kernel may take a moment to finish it off under load.
	waitFor(t, func() bool {
		out, _ := run(t, c, "bg", "ps -o stat=,args= | grep -v '^Z' | grep -c 'sleep 1000$' || true")
		return strings.TrimSpace(out) == "0"
	}, "the killed process to be gone")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestFiles(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "files")
	run(t, c, "files", "mkdir -p /home/ohm/d/sub && echo a > /home/ohm/d/a && echo b > /home/ohm/d/sub/b && ln -s a /home/ohm/d/link && ln -s / /home/ohm/root && hostname > /home/ohm/hn")

	fi, err := c.Stat(ctx, "files", "/home/ohm/d/a", "")
	if err != nil || fi.Type != "file" || fi.Size != 2 || fi.Name != "a" {
		t.Errorf("stat: %+v, %v", fi, err)
	}
	if fi, err := c.Stat(ctx, "files", "/home/ohm/d/link", ""); err != nil || fi.Type != "symlink" || fi.LinkTarget != "a" {
		t.Errorf("stat of a symlink: %+v, %v", fi, err)
	}
	if _, err := c.Stat(ctx, "files", "/home/ohm/nope", ""); !isCode(err, "not_found") {
		t.Errorf("stat of a missing path: %v", err)
	}
	ents, err := c.ListDir(ctx, "files", "/home/ohm/d", "")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name+":"+e.Type)
	}
	if err != nil || strings.Join(names, " ") != "a:file link:symlink sub:dir" {
		t.Errorf("list: %v, %v", names, err)
	}

	// A symlink to / resolves inside the computer, not on the host.
	var hn, viaLink bytes.Buffer
	c.GetFile(ctx, "files", "/home/ohm/hn", "", &hn)
	if err := c.GetFile(ctx, "files", "/home/ohm/root/etc/hostname", "", &viaLink); err != nil || viaLink.String() != hn.String() {
		t.Errorf("symlink escape: read %q (%v), want the computer's hostname %q", viaLink.String(), err, hn.String())
	}
	// The user's permissions apply: ohm cannot write to /etc.
	if err := c.PutFile(ctx, "files", "/etc/owned", "", strings.NewReader("x")); !isCode(err, "invalid_argument") {
		t.Errorf("write as ohm to /etc: %v", err)
	}
	if err := c.GetFile(ctx, "files", "/home/ohm/d", "", io.Discard); !isCode(err, "invalid_argument") {
		t.Errorf("get of a directory without archive: %v", err)
	}

	// Directories as tar, both ways.
	var buf bytes.Buffer
	if err := c.GetTar(ctx, "files", "/home/ohm/d", "", &buf); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	var entries []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		entries = append(entries, h.Name)
	}
	sort.Strings(entries)
	if strings.Join(entries, " ") != "a link sub/ sub/b" {
		t.Errorf("tar entries: %v", entries)
	}
	if err := c.PutTar(ctx, "files", "/home/ohm/copy", "", bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if out, _ := run(t, c, "files", "cat /home/ohm/copy/sub/b; readlink /home/ohm/copy/link"); out != "b\na\n" {
		t.Errorf("extracted tree: %q", out)
	}
	// A tar with an escaping name is refused and writes nothing outside.
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "../escaped", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	if err := c.PutTar(ctx, "files", "/home/ohm/evil", "", &evil); !isCode(err, "invalid_argument") {
		t.Errorf("tar with ../: %v", err)
	}
	// A symlink planted in the target cannot redirect extraction.
	evil.Reset()
	tw = tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "out", Linkname: "/tmp", Typeflag: tar.TypeSymlink})
	tw.WriteHeader(&tar.Header{Name: "out/planted", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	c.PutTar(ctx, "files", "/home/ohm/evil2", "", &evil)
	if out, _ := run(t, c, "files", "ls /tmp/planted 2>&1 || true"); !strings.Contains(out, "No such file") {
		t.Errorf("extraction followed a planted symlink: %q", out)
	}
}

// prng is a fast, deterministic, incompressible byte stream.
type prng struct {
	r    *rand.ChaCha8
	left int64
}

func (p *prng) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	p.r.Read(b)
	p.left -= int64(len(b))
	return len(b), nil
}

type hashWriter struct{ h hash.Hash }

func (w hashWriter) Write(p []byte) (int, error) { return w.h.Write(p) }

// TestLargeFileBoundedMemory moves 1 GiB in and out of a computer and
// checks that the daemon's heap (the server runs in this process) stays
// far below the file's size.
func TestLargeFileBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB")
	}
	c, _ := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "big")
	const size = 1 << 30
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	seed := [32]byte{1, 2, 3}
	want := sha256.New()
	io.Copy(want, &prng{r: rand.NewChaCha8(seed), left: size})
	if err := c.PutFile(ctx, "big", "/home/ohm/big", "", &prng{r: rand.NewChaCha8(seed), left: size}); err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	if err := c.GetFile(ctx, "big", "/home/ohm/big", "", hashWriter{got}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("1 GiB round trip: contents differ")
	}
	t.Logf("peak heap in use during 1 GiB round trip: %d MiB", peak.Load()>>20)
	if peak.Load() > 128<<20 {
		t.Errorf("peak heap %d MiB: transfers are not streamed", peak.Load()>>20)
	}
}

// TestConcurrentExecs sends 200 execs at once: each is answered with its
// own output and exit code, and the daemon keeps answering.
func TestConcurrentExecs(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "many")
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			code, err := c.Exec(ctx, "many", client.ExecRequest{Command: fmt.Sprintf("echo %d; exit %d", i, i%7)}, &out, io.Discard)
			if err != nil {
				errs <- fmt.Errorf("exec %d: %v", i, err)
			} else if out.String() != fmt.Sprintf("%d\n", i) || code != i%7 {
				errs <- fmt.Errorf("exec %d: output %q, code %d", i, out.String(), code)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := c.Health(ctx); err != nil {
		t.Errorf("daemon after 200 execs: %v", err)
	}
}

// TestUnreachableComputer: a command running in a computer whose sandbox
// dies behind the daemon's back answers "unavailable" (503); the daemon
// then records the computer stopped (the next run would start it again),
// and it can be deleted.
func TestUnreachableComputer(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "gone")
	out := &signalWriter{first: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "gone", client.ExecRequest{Command: "echo started; sleep 600"}, out, io.Discard)
		done <- err
	}()
	<-out.first
	runcRoot := filepath.Join(dir, "computers", "gone", "sandbox", "runc")
	if out, err := exec.Command("runc", "--root", runcRoot, "kill", "--all", "gone", "KILL").CombinedOutput(); err != nil {
		t.Fatalf("runc kill: %v: %s", err, out)
	}
	err := <-done
	var e *client.Error
	// Status 0: the answer had begun streaming (its output), so the error
	// comes as the stream's last event.
	if !errors.As(err, &e) || e.Code != client.CodeUnavailable || e.Status != 0 {
		t.Errorf("exec in a sandbox that died under it: %#v, want unavailable in the stream", err)
	}
	if comp := waitState(t, c, "gone", "stopped"); comp.StopReason == "" {
		t.Errorf("stopped without a reason: %+v", comp)
	}
	if err := c.Delete(ctx, "gone"); err != nil {
		t.Errorf("delete of a computer whose sandbox died: %v", err)
	}
}
