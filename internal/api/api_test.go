package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"ohm/client"
	"ohm/internal/computer"
)

// buildOhm builds the ohm binary (static: it is every computer's init).
func buildOhm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ohm")
	cmd := exec.Command("go", "build", "-o", bin, "ohm/cmd/ohm")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ohm: %v\n%s", err, out)
	}
	return bin
}

// startDaemon serves the API of a fresh data directory on a real Unix
// socket, with the real sandbox, the minimal template and ohmfs.
func startDaemon(t *testing.T) (*client.Client, string) {
	d := startDaemonServer(t)
	return d.c, d.dir
}

// daemon is an API server under test.
type daemon struct {
	c   *client.Client
	dir string
	api *Server
}

func startDaemonServer(t *testing.T, options ...func(*computer.Options)) daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (sandboxes, loop devices, mounts)")
	}
	for _, tool := range []string{"runc", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox (busybox-static) for the minimal template")
	}
	bin := buildOhm(t)
	opts := computer.Options{DataDir: t.TempDir(), Exe: bin, Logf: t.Logf}
	if help, _ := exec.Command(bin, "fs", "--help").Output(); !bytes.Contains(help, []byte("\n  format ")) {
		// TODO(d2): drop once `ohm fs format` has landed everywhere.
		t.Logf("ohm fs format not available: workspace is a plain directory")
		opts.Workspace = computer.DirWorkspace{}
	}
	for _, o := range options {
		o(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	sock := client.SocketPath(opts.DataDir)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api := NewServer(m, testLogger(t))
	srv := newHTTPServer(api)
	go srv.Serve(ln)
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		srv.Close()
		m.Close()
		cancel()
	})
	return daemon{c: client.New(sock), dir: opts.DataDir, api: api}
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// signalWriter closes first when the first write arrives.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() == 0 {
		close(w.first)
	}
	return w.buf.Write(p)
}

func TestEndToEnd(t *testing.T) {
	c, dataDir := startDaemon(t)
	ctx := context.Background()

	var progress []string
	comp, err := c.Create(ctx, client.CreateRequest{Name: "e2e", Template: "minimal", DiskSizeMB: 256}, func(l string) { progress = append(progress, l) })
	if err != nil {
		t.Fatal(err)
	}
	if comp.Name != "e2e" || comp.State != "running" {
		t.Fatalf("create: %+v", comp)
	}
	t.Logf("template progress: %d lines", len(progress))

	// Exec streams: the command waits for a file that the test creates
	// only once the first line has arrived; without streaming it would
	// never finish (its timeout would fail it).
	out := &signalWriter{first: make(chan struct{})}
	go func() {
		<-out.first
		c.Exec(ctx, "e2e", client.ExecRequest{Command: "touch /home/ohm/go"}, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	code, err := c.Exec(ctx, "e2e", client.ExecRequest{
		Command:        "echo first; while [ ! -e /home/ohm/go ]; do sleep 0.05; done; echo second",
		TimeoutSeconds: 60,
	}, out, os.Stderr)
	if err != nil || code != 0 || out.buf.String() != "first\nsecond\n" {
		t.Fatalf("streaming exec: code %d, err %v, output %q", code, err, out.buf.String())
	}

	var stdout, stderr bytes.Buffer
	code, err = c.Exec(ctx, "e2e", client.ExecRequest{Command: "echo out; echo err >&2; exit 3"}, &stdout, &stderr)
	if err != nil || code != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("exit 3: code %d, err %v, stdout %q, stderr %q", code, err, stdout.String(), stderr.String())
	}
	stdout.Reset()
	code, err = c.Exec(ctx, "e2e", client.ExecRequest{Command: "id -u; pwd", User: "ohm"}, &stdout, &stderr)
	if err != nil || code != 0 || stdout.String() != "1000\n/home/ohm\n" {
		t.Errorf("user ohm: code %d, err %v, stdout %q", code, err, stdout.String())
	}

	// stdin over an interactive session.
	stdout.Reset()
	code, err = c.Interactive(ctx, "e2e", client.ExecRequest{Argv: []string{"cat"}}, strings.NewReader("hello\n"), &stdout, &stderr, nil)
	if err != nil || code != 0 || stdout.String() != "hello\n" {
		t.Errorf("stdin: code %d, err %v, stdout %q", code, err, stdout.String())
	}

	// A PTY with the window size asked for.
	stdout.Reset()
	code, err = c.Interactive(ctx, "e2e", client.ExecRequest{Argv: []string{"stty", "size"}, TTY: true, Rows: 42, Cols: 117}, nil, &stdout, nil, nil)
	if err != nil || code != 0 || strings.TrimSpace(stdout.String()) != "42 117" {
		t.Errorf("pty: code %d, err %v, stdout %q", code, err, stdout.String())
	}

	// Files both ways.
	data := bytes.Repeat([]byte("ohm\x00\xff"), 100000)
	if err := c.PutFile(ctx, "e2e", "/home/ohm/blob", "", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := c.GetFile(ctx, "e2e", "/home/ohm/blob", "", &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Errorf("file round trip: %v, %d bytes back of %d", err, got.Len(), len(data))
	}
	if err := c.GetFile(ctx, "e2e", "/home/ohm/missing", "", &got); err == nil {
		t.Error("get of a missing file succeeded")
	}

	// Stop and start keep the workspace.
	if _, err := c.Exec(ctx, "e2e", client.ExecRequest{Command: "echo saved > /home/ohm/state.txt"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, "e2e"); !isCode(err, "failed_precondition") {
		t.Errorf("start of a running computer: %v", err)
	}
	if err := c.Stop(ctx, "e2e"); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, "e2e"); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code, err := c.Exec(ctx, "e2e", client.ExecRequest{Command: "cat /home/ohm/state.txt"}, &stdout, &stderr); err != nil || code != 0 || stdout.String() != "saved\n" {
		t.Errorf("after stop/start: code %d, err %v, %q", code, err, stdout.String())
	}

	info, err := c.Get(ctx, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	if info.Disk == nil || info.Disk.SizeBytes < 200<<20 || info.Disk.SizeBytes > 256<<20 {
		t.Errorf("info: root disk %+v, want about 256 MB", info.Disk)
	}

	if err := c.Delete(ctx, "e2e"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "e2e"); !isCode(err, "not_found") {
		t.Errorf("get after delete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "computers", "e2e")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after delete: %v, want no state directory", err)
	}
}

func TestErrors(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	tests := []struct {
		what string
		err  error
		code string
	}{
		{"unknown template", createErr(c, client.CreateRequest{Template: "nope", DiskSizeMB: 64}), "invalid_argument"},
		{"invalid name", createErr(c, client.CreateRequest{Name: "-x", Template: "minimal", DiskSizeMB: 64}), "invalid_argument"},
		{"disk 0", createErr(c, client.CreateRequest{Template: "minimal"}), "invalid_argument"},
		{"disk too big", createErr(c, client.CreateRequest{Template: "minimal", DiskSizeMB: 1 << 40}), "invalid_argument"},
		{"run missing", func() error {
			_, err := c.Exec(ctx, "ghost", client.ExecRequest{Command: "true"}, &bytes.Buffer{}, &bytes.Buffer{})
			return err
		}(), "not_found"},
		{"stop missing", c.Stop(ctx, "ghost"), "not_found"},
		{"delete missing", c.Delete(ctx, "ghost"), "not_found"},
	}
	for _, tt := range tests {
		if !isCode(tt.err, tt.code) {
			t.Errorf("%s: %v, want code %s", tt.what, tt.err, tt.code)
		}
	}
}

func createErr(c *client.Client, req client.CreateRequest) error {
	_, err := c.Create(context.Background(), req, nil)
	return err
}

func isCode(err error, code string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Code == code
}
