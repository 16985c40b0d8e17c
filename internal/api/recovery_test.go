package api

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ohm/client"
	ohmmount "ohm/internal/ohmfs/mount"
	"ohm/internal/proc"
)

// mountPID finds the `ohm fs mount` process serving mountpoint.
func mountPID(t *testing.T, mountpoint string) int {
	t.Helper()
	pids := proc.Find(func(argv []string) bool {
		return len(argv) >= 5 && argv[1] == "fs" && argv[2] == "mount" && slices.Contains(argv[3:], mountpoint)
	})
	if len(pids) == 0 {
		return 0
	}
	return pids[0]
}

// The workspace's storage server dies (kill -9) under a running computer:
// its keeper starts a new server on the same FUSE connection, and the
// computer, never stopped and never remounted, reads its fsynced file at
// /home/ohm again and writes there; a write made right after the kill
// is kept.
func TestWorkspaceMountRecovery(t *testing.T) {
	c, dataDir := startDaemon(t)
	ctx := context.Background()
	const name = "phoenix"
	if _, err := c.Create(ctx, client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dataDir, "computers", name, "mnt", "ohm")
	keeper := mountPID(t, mp)
	if keeper == 0 {
		mp = filepath.Join(dataDir, "computers", name, "vol")
		keeper = mountPID(t, mp)
	}
	if keeper == 0 {
		t.Skip("the workspace is not an ohmfs mount (no `ohm fs mount` process)")
	}
	rec, ok := ohmmount.Info(mp)
	if !ok || rec.Server == 0 {
		t.Fatalf("no server in the mount record of %s: %+v", mp, rec)
	}
	pid := rec.Server
	execOut(t, c, name, "echo hello | dd of=/home/ohm/file conv=fsync 2>/dev/null")
	initStart := execOut(t, c, name, "cut -d' ' -f22 /proc/1/stat")

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	execOut(t, c, name, "echo right-after > /home/ohm/f1")
	var last string
	for {
		var stdout, stderr bytes.Buffer
		code, err := c.Exec(ctx, name, client.ExecRequest{Command: "cat /home/ohm/file"}, &stdout, &stderr)
		if err == nil && code == 0 && stdout.String() == "hello\n" {
			break
		}
		last = strings.TrimSpace(stderr.String())
		if time.Since(killed) > time.Minute {
			t.Fatalf("after kill -9 of the mount process, /home/ohm/file is still unreadable: %v %q", err, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("workspace back %v after kill -9 of its mount process (last error seen: %q)", time.Since(killed).Round(time.Millisecond), last)

	if got := execOut(t, c, name, "cut -d' ' -f22 /proc/1/stat"); got != initStart {
		t.Errorf("the computer restarted: init start time %q, was %q", got, initStart)
	}
	if k := mountPID(t, mp); k != keeper {
		t.Errorf("the workspace was remounted: mount process %d, was %d", k, keeper)
	}
	// The keeper writes the new server into the record once that answers.
	for rec, _ := ohmmount.Info(mp); rec.Server == 0 || rec.Server == pid || rec.Restarts < 1; rec, _ = ohmmount.Info(mp) {
		if time.Since(killed) > time.Minute {
			t.Fatalf("mount record after the kill: %+v (the killed server was %d)", rec, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := execOut(t, c, name, "echo again > /home/ohm/f2 && cat /home/ohm/f2 && ls -ld /home/ohm | cut -d' ' -f1"); got != "again\ndrwxr-xr-x\n" {
		t.Errorf("write after recovery: %q", got)
	}
	// The new mount is the one stop flushes and start mounts.
	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got := execOut(t, c, name, "cat /home/ohm/file /home/ohm/f1 /home/ohm/f2"); got != "hello\nright-after\nagain\n" {
		t.Errorf("after stop and start: %q", got)
	}
}
