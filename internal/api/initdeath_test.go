package api

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/client"
)

// waitState polls computer name until it is in state, with a generous
// deadline (the daemon tears a dead computer down before recording it).
func waitState(t *testing.T, c *client.Client, name, state string) *client.Computer {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		comp, err := c.Get(context.Background(), name)
		if err == nil && comp.State == state {
			return comp
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s within a minute (last: %+v, %v)", name, state, comp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// initPid is the host pid of computer name's init, from runc.
func initPid(t *testing.T, dir, name string) int {
	t.Helper()
	out, err := exec.Command("runc", "--root", filepath.Join(dir, "computers", name, "sandbox", "runc"), "state", name).Output()
	if err != nil {
		t.Fatalf("runc state %s: %v", name, err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil || st.Pid <= 0 {
		t.Fatalf("runc state %s: %q, %v", name, out, err)
	}
	return st.Pid
}

// TestInitDeath: when a computer's init dies (root in it sends it SIGTERM;
// the host kills it as the OOM killer would), the daemon does not go on
// saying it runs: the computer becomes stopped with the reason in info,
// its workspace kept, and the next run starts it again.
func TestInitDeath(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	const name = "mortal"
	newComputer(t, c, name)
	execOut(t, c, name, "echo kept > /home/ohm/f")

	for _, tc := range []struct {
		how    string
		kill   func()
		reason string
	}{
		{"kill -TERM 1 as root inside", func() {
			// The shell dies with everything else; its answer does not matter.
			c.Exec(ctx, name, client.ExecRequest{Command: "kill -TERM 1; sleep 60", User: "root"}, &bytes.Buffer{}, &bytes.Buffer{})
		}, "init exited with status 0"},
		{"SIGKILL of init from the host", func() {
			if err := unix.Kill(initPid(t, dir, name), unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}, "init was killed by signal SIGKILL"},
	} {
		tc.kill()
		comp := waitState(t, c, name, "stopped")
		if comp.StopReason != tc.reason || comp.StoppedAt.IsZero() {
			t.Errorf("%s: stop reason %q (at %v), want %q", tc.how, comp.StopReason, comp.StoppedAt, tc.reason)
		}
		// Stopped for real: start is allowed, and run starts it.
		if got := strings.TrimSpace(execOut(t, c, name, "cat /home/ohm/f")); got != "kept" {
			t.Errorf("%s: workspace file after restart: %q", tc.how, got)
		}
		if comp, err := c.Get(ctx, name); err != nil || comp.State != "running" {
			t.Errorf("%s: after run: %+v, %v; want running", tc.how, comp, err)
		}
		// The list says the same as info.
		list, err := c.List(ctx)
		if err != nil || len(list) != 1 || list[0].StopReason != tc.reason {
			t.Errorf("%s: list %+v, %v; want the stop reason %q", tc.how, list, err, tc.reason)
		}
	}
}
