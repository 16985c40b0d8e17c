//go:build linux

// Package sdk tests the clients of the API that are not Go against a real
// daemon: it starts `ohm serve` (the built binary, a data directory of its
// own, the Unix socket and TCP with a token) and runs the Python SDK's
// unittest suite (installed with pip into a virtual environment, the way a
// user installs it) and the TypeScript SDK's node:test suite (built with
// tsc) against it, and drives the MCP tools over streamable HTTP with the
// official Go SDK's client. The SDKs' own unit tests, among them the check
// that each covers every operation of openapi.json, run here too and need
// no root.
//
// Python 3 (with venv) and Node.js 18+ with sdk/typescript/node_modules
// come from `make deps`; without them the tests skip, saying so.
package sdk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ohm/client"
	"ohm/tests/internal/ohmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.stop()
	}
	if venvDir != "" {
		os.RemoveAll(venvDir)
	}
	ohmtest.CleanupBuild()
	os.Exit(code)
}

func root(t *testing.T) string {
	t.Helper()
	r, err := ohmtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// daemon is an `ohm serve` of the tests, shared by all of them.
type daemon struct {
	dir    string
	socket string
	url    string // http://127.0.0.1:PORT
	token  string
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	logMu  *sync.Mutex
}

var (
	sharedOnce sync.Once
	shared     *daemon
	sharedErr  error
)

// startDaemon returns the shared daemon, starting it at the first call;
// it skips where computers cannot run.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	ohmtest.RequireFUSE(t)
	for _, tool := range []string{"runc", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox (busybox-static) for the minimal template")
	}
	bin := ohmtest.Binary(t)
	sharedOnce.Do(func() { shared, sharedErr = launch(bin) })
	if sharedErr != nil {
		t.Fatalf("start ohm serve: %v", sharedErr)
	}
	return shared
}

// servingTCP is the log line that names the TCP address.
var servingTCP = regexp.MustCompile(`"msg":"ohm daemon serving TCP","addr":"([^"]+)"`)

func launch(bin string) (*daemon, error) {
	dir, err := os.MkdirTemp("/var/tmp", "ohm-sdk-")
	if err != nil {
		return nil, err
	}
	d := &daemon{dir: dir, socket: client.SocketPath(dir), exited: make(chan struct{}), log: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	d.cmd = exec.Command(bin, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0")
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.logMu.Lock()
			d.log.WriteString(line + "\n")
			d.logMu.Unlock()
			if m := servingTCP.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	select {
	case a := <-addr:
		d.url = "http://" + a
	case <-d.exited:
		os.RemoveAll(dir)
		return nil, fmt.Errorf("ohm serve exited:\n%s", d.logText())
	case <-time.After(60 * time.Second):
		d.stop()
		return nil, fmt.Errorf("ohm serve did not serve TCP within 60s:\n%s", d.logText())
	}
	tok, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		d.stop()
		return nil, err
	}
	d.token = strings.TrimSpace(string(tok))
	return d, nil
}

func (d *daemon) logText() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.log.String()
}

// stop deletes what computers the tests left, stops the daemon and
// removes its data directory.
func (d *daemon) stop() {
	c := client.New(d.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if comps, err := c.List(ctx); err == nil {
		for _, comp := range comps {
			c.Delete(ctx, comp.Name)
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	os.RemoveAll(d.dir)
}

// run runs a test suite of another language and fails t with its output
// if it fails or skips a test.
func run(t *testing.T, cmd *exec.Cmd, skipped *regexp.Regexp) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s: %v", strings.Join(cmd.Args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out.String())
	}
	if skipped != nil && skipped.Match(out.Bytes()) {
		t.Fatalf("%s skipped tests it must run:\n%s", strings.Join(cmd.Args, " "), out.String())
	}
	if testing.Verbose() {
		t.Log(out.String())
	}
}

// runOutput runs cmd and returns its output, failing t if it fails.
func runOutput(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

// testEnv is the environment of a suite: the daemon's addresses (if any)
// and where openapi.json is.
func testEnv(t *testing.T, d *daemon) []string {
	env := append(os.Environ(), "OHM_OPENAPI="+filepath.Join(root(t), "internal", "api", "openapi.json"), "PYTHONDONTWRITEBYTECODE=1")
	if d != nil {
		env = append(env, "OHM_TEST_SOCKET="+d.socket, "OHM_TEST_URL="+d.url, "OHM_TEST_TOKEN="+d.token)
	}
	return env
}

// bearer adds a bearer token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func decodeInto(t *testing.T, v any, out any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}
