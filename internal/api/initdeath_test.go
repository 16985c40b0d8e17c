package api

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/client"
	"ohm/internal/computer"
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
			// The agent ends on SIGTERM once the others have: "init exited
			// with status 0" (the prefix leaves the agent free to exit
			// otherwise).
		}, "init "},
		{"SIGKILL of init from the host", func() {
			if err := unix.Kill(initPid(t, dir, name), unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}, "init was killed by signal SIGKILL"},
	} {
		tc.kill()
		comp := waitState(t, c, name, "stopped")
		if !strings.HasPrefix(comp.StopReason, tc.reason) || comp.StoppedAt.IsZero() {
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
		if err != nil || len(list) != 1 || list[0].StopReason != comp.StopReason {
			t.Errorf("%s: list %+v, %v; want the stop reason %q", tc.how, list, err, tc.reason)
		}
	}
}

// TestInitDeathAfterRestart: a daemon that attached to a computer started
// by an earlier one (the daemon restarted) watches its init as well.
func TestInitDeathAfterRestart(t *testing.T) {
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
	ctx := context.Background()
	opts := computer.Options{DataDir: t.TempDir(), Exe: buildOhm(t), Logf: t.Logf}
	m1, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	const name = "phoenix"
	if _, err := m1.Create(ctx, computer.CreateOptions{Name: name, Template: "minimal", DiskSizeMB: 64}); err != nil {
		m1.Close()
		t.Fatal(err)
	}
	m1.Close() // the computer keeps running
	m2, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m2.Delete(context.Background(), name)
		m2.Close()
	})
	if rec, err := m2.Get(ctx, name); err != nil || rec.State != computer.StateRunning {
		t.Fatalf("after the restart: %+v, %v; want running", rec, err)
	}
	if err := unix.Kill(initPid(t, opts.DataDir, name), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		rec, err := m2.Get(ctx, name)
		if err == nil && rec.State == computer.StateStopped {
			if rec.StopReason != "init was killed by signal SIGKILL" {
				t.Errorf("stop reason %q, want the init's", rec.StopReason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not stopped within a minute of its init's death: %+v, %v", rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := managerExec(t, m2, name, "echo back"); got != "back\n" {
		t.Errorf("run after the death: %q", got)
	}
}
