package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"ohm/internal/computer"
	ohmmount "ohm/internal/ohmfs/mount"
)

// managerExec runs command in computer name through m and returns its
// stdout, failing the test unless it exits 0.
func managerExec(t *testing.T, m *computer.Manager, name, command string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code, err := m.Exec(context.Background(), name, computer.ExecOptions{Command: command, User: "root"}, nil, &stdout, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("%s: run %q: code %d, err %v, stderr %q", name, command, code, err, stderr.String())
	}
	return stdout.String()
}

// mountsUnder lists the mount points under dir, deepest (latest) first.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mps []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mps = append(mps, f[4])
		}
	}
	slices.Reverse(mps)
	return mps
}

// A host reboot under a running computer: the daemon, the computer's
// processes and its workspace mount process die at once, and every mount
// and loop device is gone. A new daemon lists the computer stopped; it
// starts, with its fsynced workspace file and its synced root disk file.
func TestRebootLeavesComputersStopped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (sandboxes, loop devices, mounts)")
	}
	for _, tool := range []string{"runc", "mkfs.ext4", "losetup"} {
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
	const name = "lazarus"
	if _, err := m1.Create(ctx, computer.CreateOptions{Name: name, Template: "minimal", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	managerExec(t, m1, name, "echo workspace | dd of=/home/ohm/ws.txt conv=fsync 2>/dev/null")
	managerExec(t, m1, name, "echo rootdisk > /root/disk.txt && sync")

	// The crash: the daemon goes without stopping anything (Close leaves
	// computers running, as a killed daemon would)...
	m1.Close()
	sandboxDir := filepath.Join(opts.DataDir, "computers", name, "sandbox")
	// ...the computer's init and with it its PID namespace...
	out, err := exec.Command("runc", "--root", filepath.Join(sandboxDir, "runc"), "state", name).Output()
	if err != nil {
		t.Fatalf("runc state: %v", err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil || st.Pid <= 0 {
		t.Fatalf("runc state %s: %v", out, err)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// ...the workspace's mount process (at the volume's root-only
	// mountpoint in the block layout, at the workspace in the file one)...
	for _, mp := range []string{
		filepath.Join(opts.DataDir, "computers", name, "vol"),
		filepath.Join(opts.DataDir, "computers", name, "mnt", "ohm"),
	} {
		// The keeper first, so that it starts no new server.
		rec, _ := ohmmount.Info(mp)
		if pid := mountPID(t, mp); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if rec.Server > 0 {
			syscall.Kill(rec.Server, syscall.SIGKILL)
		}
	}
	// ...and every mount and loop device.
	for _, dir := range mountsUnder(t, opts.DataDir) {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Fatalf("unmount %s: %v", dir, err)
		}
	}
	image := filepath.Join(sandboxDir, "root.img")
	loops, _ := exec.Command("losetup", "-j", image).Output()
	for _, line := range strings.Split(strings.TrimSpace(string(loops)), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok {
			exec.Command("losetup", "-d", dev).Run()
		}
	}
	if left := mountsUnder(t, opts.DataDir); len(left) > 0 {
		t.Fatalf("still mounted after the simulated reboot: %v", left)
	}

	m2, err := computer.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m2.Delete(context.Background(), name)
		m2.Close()
	})
	recs, err := m2.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].Name != name || recs[0].State != computer.StateStopped {
		t.Fatalf("after the reboot: %+v, %v; want %s stopped", recs, err, name)
	}
	if err := m2.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got := managerExec(t, m2, name, "cat /home/ohm/ws.txt /root/disk.txt"); got != "workspace\nrootdisk\n" {
		t.Errorf("after the reboot and start: %q", got)
	}
}
