package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"ohm/client"
	"ohm/internal/computer"
)

// Idle stop with real computers: the manager takes idle timeouts of a
// fraction of a second here (Options.MinIdleTimeout), so that the tests
// see computers stop in seconds.

// testIdleTimeout is the idle timeout of these tests' computers: a few times
// what a minimal computer takes to start, so that a loaded machine does
// not look idle.
const testIdleTimeout = 2 * time.Second

// idleOptions are the options of a manager of a fresh data directory with
// the real sandbox, the minimal template and ohmfs, taking idle timeouts
// from 100 ms.
func idleOptions(t *testing.T) computer.Options {
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
	return computer.Options{DataDir: t.TempDir(), Exe: buildOhm(t), Logf: t.Logf, MinIdleTimeout: 100 * time.Millisecond}
}

// serveManager serves the API of m on its data directory's socket until
// the returned stop is called (or the test ends).
func serveManager(t *testing.T, m *computer.Manager, dir string) (c *client.Client, api *Server, stop func()) {
	t.Helper()
	sock := client.SocketPath(dir)
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api = NewServer(m, testLogger(t))
	srv := newHTTPServer(api)
	go srv.Serve(ln)
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			srv.Close()
		}
	}
	t.Cleanup(stop)
	return client.New(sock), api, stop
}

// poll waits for cond, polling, for at most a minute.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getComputer(t *testing.T, c *client.Client, name string) *client.Computer {
	t.Helper()
	comp, err := c.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return comp
}

// An idle computer stops itself (workspace flushed, the reason recorded);
// a quiet command longer than the timeout is not stopped under it; the
// next run starts it again; set 0 turns it off; bad input changes nothing.
func TestIdleStopRealComputer(t *testing.T) {
	opts := idleOptions(t)
	ctx := context.Background()
	m, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, api, stop := serveManager(t, m, opts.DataDir)
	t.Cleanup(func() {
		stop()
		m.Delete(context.Background(), "dozy")
		m.Close()
	})

	created := time.Now()
	comp, err := c.Create(ctx, client.CreateRequest{Name: "dozy", Template: "minimal", DiskSizeMB: 256, IdleTimeoutSeconds: client.Seconds(testIdleTimeout)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if comp.IdleTimeoutSeconds != testIdleTimeout.Seconds() {
		t.Errorf("created with idle_timeout_seconds %v", comp.IdleTimeoutSeconds)
	}
	// Written without fsync: the idle stop's flush makes it durable.
	if out, code := run(t, c, "dozy", "echo kept > /home/ohm/kept.txt"); code != 0 {
		t.Fatalf("write: %d %s", code, out)
	}
	info := getComputer(t, c, "dozy")
	if info.State != "running" || info.IdleStopAt.Before(created) || info.IdleStopAt.After(time.Now().Add(testIdleTimeout)) {
		t.Errorf("info: %s, idle stop at %v (created %v)", info.State, info.IdleStopAt, created)
	}

	// A command that sleeps past the timeout, silent, keeps it running.
	done := make(chan error, 1)
	sleep := 5 * testIdleTimeout / 2
	started := time.Now()
	go func() {
		code, err := c.Exec(ctx, "dozy", client.ExecRequest{Command: fmt.Sprintf("sleep %g", sleep.Seconds())}, io.Discard, io.Discard)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit code %d", code)
		}
		done <- err
	}()
	poll(t, "the sleep to hold the computer busy", func() bool { return getComputer(t, c, "dozy").ActiveSessions == 1 })
	// Until shortly before the sleep ends, the computer shows busy; to its
	// end, and until its answer reaches us, it runs.
	busyUntil := started.Add(sleep - time.Second)
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("the sleep: %v", err)
			}
			running = false
		case <-time.After(100 * time.Millisecond):
			got := getComputer(t, c, "dozy")
			if got.State != "running" {
				t.Fatalf("stopped during the sleep: %s", got.StopReason)
			}
			if time.Now().Before(busyUntil) && (!got.IdleStopAt.IsZero() || got.ActiveSessions != 1) {
				t.Fatalf("during the sleep: idle stop at %v, %d sessions; want none and 1", got.IdleStopAt, got.ActiveSessions)
			}
		}
	}
	ended := time.Now()

	poll(t, "the idle computer to stop", func() bool { return getComputer(t, c, "dozy").State == "stopped" })
	info = getComputer(t, c, "dozy")
	if info.StopReason != "idle for 2s" || info.StoppedAt.Sub(ended) < testIdleTimeout-50*time.Millisecond {
		t.Errorf("stopped %v after the last command with reason %q; want idle for 2s, not sooner", info.StoppedAt.Sub(ended), info.StopReason)
	}
	if !info.IdleStopAt.IsZero() {
		t.Errorf("stopped, yet an idle stop at %v", info.IdleStopAt)
	}

	// The next run starts it and succeeds; the file survived the stop.
	woken := time.Now()
	if out, code := run(t, c, "dozy", "cat /home/ohm/kept.txt"); code != 0 || out != "kept\n" {
		t.Errorf("run after the idle stop: %d %q", code, out)
	}
	t.Logf("a run that starts the idle-stopped computer took %v", time.Since(woken).Round(time.Millisecond))
	// A file operation wakes it too.
	poll(t, "the computer to stop again", func() bool { return getComputer(t, c, "dozy").State == "stopped" })
	var buf bytes.Buffer
	if err := c.GetFile(ctx, "dozy", "/home/ohm/kept.txt", "", &buf); err != nil || buf.String() != "kept\n" {
		t.Errorf("read after the idle stop: %v %q", err, buf.String())
	}

	// Bad input: one clear error, nothing changed.
	before := getComputer(t, c, "dozy").IdleTimeoutSeconds
	for _, body := range []string{
		`{"idle_timeout_seconds":-1}`,
		`{"idle_timeout_seconds":"30m"}`,
		`{"idle_timeout_seconds":0.01}`,
		`{"idle_timeout_seconds":1e300}`,
		`{"idle_timeout_seconds":60,"bogus":1}`,
		`{}`,
		`[`,
	} {
		req := httptest.NewRequest(http.MethodPatch, "/v1/computers/dozy", strings.NewReader(body))
		status, code := errorCode(t, api, req)
		if status != 400 || code != client.CodeInvalid {
			t.Errorf("PATCH %s: %d %s, want 400 %s", body, status, code, client.CodeInvalid)
		}
	}
	if _, err := c.Set(ctx, "dozy", client.SetRequest{IdleTimeoutSeconds: client.Seconds(-time.Minute)}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("set of a negative timeout: %v", err)
	}
	if after := getComputer(t, c, "dozy").IdleTimeoutSeconds; after != before {
		t.Errorf("bad input changed the idle timeout from %v to %v", before, after)
	}
	if _, err := c.Set(ctx, "ghost", client.SetRequest{IdleTimeoutSeconds: client.Seconds(time.Hour)}); !isCode(err, client.CodeNotFound) {
		t.Errorf("set on a missing computer: %v", err)
	}
	if _, err := c.Create(ctx, client.CreateRequest{Name: "never", Template: "minimal", DiskSizeMB: 256, IdleTimeoutSeconds: client.Seconds(-time.Second)}, nil); !isCode(err, client.CodeInvalid) {
		t.Errorf("create with a negative timeout: %v", err)
	}
	if _, err := c.Get(ctx, "never"); !isCode(err, client.CodeNotFound) {
		t.Errorf("a create with a negative timeout left a computer: %v", err)
	}

	// 0 turns idle stop off.
	comp, err = c.Set(ctx, "dozy", client.SetRequest{IdleTimeoutSeconds: client.Seconds(0)})
	if err != nil || comp.IdleTimeoutSeconds != 0 {
		t.Fatalf("set 0: %+v, %v", comp, err)
	}
	run(t, c, "dozy", "true")
	for end := time.Now().Add(2 * testIdleTimeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got := getComputer(t, c, "dozy"); got.State != "running" || !got.IdleStopAt.IsZero() {
			t.Fatalf("with the idle timeout off: %s (%s), idle stop at %v", got.State, got.StopReason, got.IdleStopAt)
		}
	}
}

// A daemon restart keeps the idle timeout and starts the countdown again:
// the computer, left running by the old daemon, stops itself under the
// new one, a timeout after it started.
func TestIdleAfterDaemonRestart(t *testing.T) {
	opts := idleOptions(t)
	ctx := context.Background()
	m1, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	c1, _, stop1 := serveManager(t, m1, opts.DataDir)
	if _, err := c1.Create(ctx, client.CreateRequest{Name: "phoenix", Template: "minimal", DiskSizeMB: 256, IdleTimeoutSeconds: client.Seconds(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Set(ctx, "phoenix", client.SetRequest{IdleTimeoutSeconds: client.Seconds(testIdleTimeout)}); err != nil {
		t.Fatal(err)
	}
	// The daemon goes; the computer keeps running.
	stop1()
	m1.Close()

	restarted := time.Now()
	m2, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	c2, _, stop2 := serveManager(t, m2, opts.DataDir)
	t.Cleanup(func() {
		stop2()
		m2.Delete(context.Background(), "phoenix")
		m2.Close()
	})
	info := getComputer(t, c2, "phoenix")
	if info.State != "running" || info.IdleTimeoutSeconds != testIdleTimeout.Seconds() || info.IdleStopAt.Before(restarted) {
		t.Errorf("after the restart: %s, idle timeout %vs, idle stop at %v (restarted at %v)", info.State, info.IdleTimeoutSeconds, info.IdleStopAt, restarted)
	}
	poll(t, "the computer to stop under the new daemon", func() bool { return getComputer(t, c2, "phoenix").State == "stopped" })
	if info := getComputer(t, c2, "phoenix"); info.StopReason != "idle for 2s" || info.StoppedAt.Before(restarted.Add(testIdleTimeout-50*time.Millisecond)) {
		t.Errorf("stopped at %v with reason %q; want idle for 2s, a timeout after the restart at %v", info.StoppedAt, info.StopReason, restarted)
	}
	if out, code := run(t, c2, "phoenix", "echo back"); code != 0 || out != "back\n" {
		t.Errorf("run after the idle stop: %d %q", code, out)
	}
}

// The CLI: set and info show the timeout and its countdown; bad values
// are one clear error.
func TestIdleCLI(t *testing.T) {
	opts := idleOptions(t)
	ctx := context.Background()
	m, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, _, stop := serveManager(t, m, opts.DataDir)
	t.Cleanup(func() {
		stop()
		m.Delete(context.Background(), "cli")
		m.Close()
	})
	ohm := func(args ...string) (string, error) {
		cmd := exec.Command(opts.Exe, append(append([]string{"computer"}, args...), "--data-dir", opts.DataDir)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := ohm("create", "cli", "--template", "minimal", "--disk-size-mb", "256", "--idle-timeout", "45m"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if out, err := ohm("info", "cli"); err != nil || !strings.Contains(out, "idle timeout: 45m (stops at ") {
		t.Errorf("info: %v\n%s", err, out)
	}
	if out, err := ohm("set", "cli", "--idle-timeout", "0"); err != nil || !strings.Contains(out, "\nidle timeout: off (never stops for idleness)\n") {
		t.Errorf("set 0: %v\n%s", err, out)
	}
	for _, tc := range []struct{ value, want string }{
		{"-5m", "invalid idle_timeout_seconds -300: must not be negative"},
		{"30", `missing unit in duration "30"`},
		{"soon", `invalid duration "soon"`},
		{"1000h", "invalid idle_timeout_seconds 3600000: must be 0 (never stop) or at most 2592000 (720h)"},
		{"50ms", "invalid idle timeout 50ms: must be 0 (never stop) or between 100ms and 720h"},
	} {
		out, err := ohm("set", "cli", "--idle-timeout", tc.value)
		if err == nil || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("set --idle-timeout %s: %v, want one line saying %q:\n%s", tc.value, err, tc.want, out)
		}
	}
	if out, err := ohm("set", "cli"); err == nil || !strings.Contains(out, "nothing to set") {
		t.Errorf("set without a setting: %v\n%s", err, out)
	}
	if comp := getComputer(t, c, "cli"); comp.IdleTimeoutSeconds != 0 {
		t.Errorf("after bad sets: idle timeout %vs, want 0", comp.IdleTimeoutSeconds)
	}
}
