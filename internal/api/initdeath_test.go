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

// TestInitDeath: the daemon's view of a computer stays true when its init
// is attacked. Root in the computer cannot end it (the agent takes no
// signal from inside), so the computer stays running and answers. When it
// does die (killed from the host, as the OOM killer or a crash would), the
// computer becomes stopped with the reason in info and list, its workspace
// kept, and the next run starts it again.
func TestInitDeath(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	const name = "mortal"
	newComputer(t, c, name)
	execOut(t, c, name, "echo kept > /home/ohm/f")

	pid := initPid(t, dir, name)
	for _, sig := range []string{"TERM", "KILL", "INT", "HUP"} {
		c.Exec(ctx, name, client.ExecRequest{Command: "kill -" + sig + " 1", User: "root"}, &bytes.Buffer{}, &bytes.Buffer{})
	}
	if got := strings.TrimSpace(execOut(t, c, name, "echo alive")); got != "alive" {
		t.Errorf("after signals to init from inside: %q", got)
	}
	if comp, err := c.Get(ctx, name); err != nil || comp.State != "running" || initPid(t, dir, name) != pid {
		t.Errorf("after signals to init from inside: %+v, %v; want the same init running", comp, err)
	}

	for round := range 2 {
		if err := unix.Kill(initPid(t, dir, name), unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		const reason = "init was killed by signal SIGKILL"
		comp := waitState(t, c, name, "stopped")
		if comp.StopReason != reason || comp.StoppedAt.IsZero() {
			t.Errorf("round %d: stop reason %q (at %v), want %q", round, comp.StopReason, comp.StoppedAt, reason)
		}
		// The list says the same as info.
		list, err := c.List(ctx)
		if err != nil || len(list) != 1 || list[0].State != "stopped" || list[0].StopReason != reason {
			t.Errorf("round %d: list %+v, %v; want it stopped with the reason", round, list, err)
		}
		// Stopped for real: run starts it, with its workspace.
		if got := strings.TrimSpace(execOut(t, c, name, "cat /home/ohm/f")); got != "kept" {
			t.Errorf("round %d: workspace file after restart: %q", round, got)
		}
		if comp, err := c.Get(ctx, name); err != nil || comp.State != "running" {
			t.Errorf("round %d: after run: %+v, %v; want running", round, comp, err)
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
