package api

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moby/sys/mountinfo"

	"ohm/client"
	ohmmount "ohm/internal/ohmfs/mount"
)

// mountSource is the source of what is mounted at dir ("" if nothing).
func mountSource(t *testing.T, dir string) string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1].Source
}

// runAsRoot runs cmd as root in computer name: / is root's.
func runAsRoot(t *testing.T, c *client.Client, name, cmd string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code, err := c.Exec(context.Background(), name, client.ExecRequest{Command: cmd, User: "root"}, &out, &out)
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), code
}

// canResizeExt4Online reports whether this process may grow a mounted
// ext4: the kernel wants CAP_SYS_RESOURCE, which some hosts' root lacks.
func canResizeExt4Online() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

func isMounted(dir string) bool {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	return err == nil && len(ms) > 0
}

// dfBytes is the size and available bytes of / inside computer name, as
// df reports them.
func dfBytes(t *testing.T, c *client.Client, name string) (size, avail int64) {
	t.Helper()
	out := execOut(t, c, name, "df -k / | tail -n 1")
	f := strings.Fields(out)
	if len(f) < 4 {
		t.Fatalf("df -k /: %q", out)
	}
	s, err1 := strconv.ParseInt(f[1], 10, 64)
	a, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("df -k /: %q", out)
	}
	return s << 10, a << 10
}

// A new computer's root disk is root.img in its volume, beside
// workspace.img; what is written on / survives a stop and a start.
func TestRootDiskInVolume(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	const name = "rooted"
	if _, err := c.Create(ctx, client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(dir, "computers", name)
	if _, err := os.Stat(filepath.Join(cdir, "vol", "workspace.img")); err != nil {
		t.Skipf("the workspace is not in the block layout: %v", err)
	}
	fi, err := os.Stat(filepath.Join(cdir, "vol", "root.img"))
	if err != nil {
		t.Fatalf("no root.img in the volume: %v", err)
	}
	if fi.Size() != 64<<20 {
		t.Errorf("root.img is %d bytes, want %d", fi.Size(), 64<<20)
	}
	if _, err := os.Lstat(filepath.Join(cdir, "sandbox", "root.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a local root.img too: %v", err)
	}
	execOut(t, c, name, "echo on-root > /root-file && echo in-etc >> /etc/motd && sync")
	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	for _, mp := range []string{"vol", "sandbox/disk"} {
		if isMounted(filepath.Join(cdir, mp)) {
			t.Errorf("%s still mounted after stop", mp)
		}
	}
	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got := execOut(t, c, name, "cat /root-file; tail -n 1 /etc/motd"); got != "on-root\nin-etc\n" {
		t.Errorf("after stop and start: %q", got)
	}
	info, err := c.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Disk == nil || info.Disk.SizeBytes != 64<<20 || info.Disk.UsedBytes == 0 {
		t.Errorf("info's root disk: %+v, want 64 MiB with some used", info.Disk)
	}
}

// A computer made before the root disk lived in the volume keeps its local
// sandbox/root.img: it starts from it, and resizes it.
func TestRootDiskLocalLayout(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	const name = "oldroot"
	if _, err := c.Create(ctx, client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(dir, "computers", name)
	if _, err := os.Stat(filepath.Join(cdir, "vol", "root.img")); err != nil {
		t.Skipf("no root.img in the volume: %v", err)
	}
	execOut(t, c, name, "echo kept > /root-file && sync")
	keeper := mountPID(t, filepath.Join(cdir, "vol"))
	if keeper == 0 {
		t.Fatal("no mount process for the volume")
	}
	bin, err := os.Readlink("/proc/" + strconv.Itoa(keeper) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	// Make it a computer of the old layout: its root disk, with what it
	// holds, becomes a local image.
	ohm := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("ohm %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ohm("fs", "mount", filepath.Join(cdir, "workspace"), filepath.Join(cdir, "vol"), "--background")
	if out, err := exec.Command("cp", "--sparse=always", filepath.Join(cdir, "vol", "root.img"), filepath.Join(cdir, "sandbox", "root.img")).CombinedOutput(); err != nil {
		t.Fatalf("copy root.img: %v: %s", err, out)
	}
	if err := os.Remove(filepath.Join(cdir, "vol", "root.img")); err != nil {
		t.Fatal(err)
	}
	ohm("fs", "umount", filepath.Join(cdir, "vol"))

	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got := execOut(t, c, name, "cat /root-file"); got != "kept\n" {
		t.Errorf("old layout after start: %q", got)
	}
	if src := mountSource(t, filepath.Join(cdir, "sandbox", "disk")); !strings.HasPrefix(src, "/dev/loop") {
		t.Errorf("the root disk is mounted from %q, want the local image's loop device", src)
	}
	if err := c.Resize(ctx, name, 96); err != nil {
		if canResizeExt4Online() {
			t.Fatal(err)
		}
		t.Logf("no online growth here: %v", err)
		if err := c.Stop(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if size, _ := dfBytes(t, c, name); size != 96<<20 {
		t.Errorf("df / after resize of the old layout: %d, want %d", size, 96<<20)
	}
	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(ctx, name, 128); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if size, _ := dfBytes(t, c, name); size != 128<<20 {
		t.Errorf("df / after a resize while stopped (old layout): %d, want %d", size, 128<<20)
	}
	if _, err := os.Lstat(filepath.Join(cdir, "vol", "root.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old layout got a root.img in its volume: %v", err)
	}
}

// Resize grows a running computer's root disk at once: df shows it, a
// write past the old size works and one past the new size fails with
// ENOSPC, in that computer only. Shrinking is refused, as is a size the
// host cannot give; a stopped computer grows at its next start.
func TestResize(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	const name = "grower"
	if _, err := c.Create(ctx, client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	newComputer(t, c, "bystander")
	size, avail := dfBytes(t, c, name)
	if size != 64<<20 {
		t.Fatalf("df / before resize: %d bytes, want %d", size, 64<<20)
	}
	if err := c.Resize(ctx, name, 160); err != nil {
		if canResizeExt4Online() {
			t.Fatal(err)
		}
		// This host's root cannot grow a mounted ext4: the size is
		// recorded and the disk grows at the next start.
		var e *client.Error
		if !errors.As(err, &e) || e.Code != client.CodeState || !strings.Contains(e.Message, "CAP_SYS_RESOURCE") {
			t.Fatalf("resize without CAP_SYS_RESOURCE: %v, want failed_precondition saying why", err)
		}
		t.Logf("no online growth here: %s", e.Message)
		if err := c.Stop(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	size2, avail2 := dfBytes(t, c, name)
	if size2 != 160<<20 {
		t.Errorf("df / right after resize: %d bytes, want %d", size2, 160<<20)
	}
	if avail2 < avail+85<<20 {
		t.Errorf("available grew from %d to %d only", avail, avail2)
	}
	// Past the old size: 100 MB.
	if out, code := runAsRoot(t, c, name, "dd if=/dev/zero of=/big bs=1M count=100 conv=fsync 2>&1"); code != 0 {
		t.Fatalf("write 100 MB after growing to 160 MB: %d %s", code, out)
	}
	// Past the new size.
	out, code := runAsRoot(t, c, name, "dd if=/dev/zero of=/big2 bs=1M count=100 conv=fsync 2>&1")
	if code == 0 || !strings.Contains(out, "No space left on device") {
		t.Errorf("write past 160 MB: exit %d, %q; want ENOSPC", code, out)
	}
	if out, code := runAsRoot(t, c, "bystander", "echo fine > /f && cat /f"); code != 0 || out != "fine\n" {
		t.Errorf("another computer, while this one is full: %d %q", code, out)
	}
	runAsRoot(t, c, name, "rm -f /big2")
	info, err := c.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if info.DiskSizeMB != 160 || info.Disk == nil || info.Disk.SizeBytes != 160<<20 {
		t.Errorf("info after resize: disk_size_mb %d, disk %+v", info.DiskSizeMB, info.Disk)
	}

	var e *client.Error
	err = c.Resize(ctx, name, 100)
	if !errors.As(err, &e) || e.Code != client.CodeInvalid || !strings.Contains(e.Message, "shrink") {
		t.Errorf("shrink: %v, want invalid_argument saying it cannot shrink", err)
	} else {
		t.Logf("shrink refused: %s", e.Message)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	huge := int(int64(st.Bavail)*st.Bsize>>20) + 1<<20
	err = c.Resize(ctx, name, huge)
	if !errors.As(err, &e) || e.Code != client.CodeInvalid || !strings.Contains(e.Message, "MB free") {
		t.Errorf("resize past the host: %v, want invalid_argument saying what is free", err)
	}
	if err := c.Resize(ctx, "nosuch", 200); !isCode(err, client.CodeNotFound) {
		t.Errorf("resize of an unknown computer: %v", err)
	}
	if info, _ := c.Get(ctx, name); info.DiskSizeMB != 160 {
		t.Errorf("refused resizes changed the size to %d", info.DiskSizeMB)
	}

	// Stopped: recorded now, grown at the next start.
	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(ctx, name, 200); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if size, _ := dfBytes(t, c, name); size != 200<<20 {
		t.Errorf("df / after a resize while stopped: %d, want %d", size, 200<<20)
	}
	if got := execOut(t, c, name, "ls -l /big | awk '{print $5}'"); got != strconv.Itoa(100<<20)+"\n" {
		t.Errorf("the file written before: %q", got)
	}
}

// The storage server of the volume dies (kill -9) under a running
// computer whose two disks are on it: its keeper starts a new server on
// the same FUSE connection, and / and /home/ohm both read what was written
// before and take writes after, without a restart of the computer.
func TestRootDiskServerKilled(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	const name = "phoenix-root"
	if _, err := c.Create(ctx, client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "computers", name, "vol")
	if _, err := os.Stat(filepath.Join(mp, "root.img")); err != nil {
		t.Skipf("no root.img in the volume: %v", err)
	}
	rec, ok := ohmmount.Info(mp)
	if !ok || rec.Server == 0 {
		t.Fatalf("no server in the mount record of %s: %+v", mp, rec)
	}
	execOut(t, c, name, "echo before > /before && echo home > /home/ohm/before && sync")
	initStart := execOut(t, c, name, "cut -d' ' -f22 /proc/1/stat")
	if err := syscall.Kill(rec.Server, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	const check = "cat /before /home/ohm/before && echo after > /after && echo after > /home/ohm/after && sync && cat /after /home/ohm/after"
	for {
		var out bytes.Buffer
		code, err := c.Exec(ctx, name, client.ExecRequest{Command: check, User: "root"}, &out, &out)
		if err == nil && code == 0 && out.String() == "before\nhome\nafter\nafter\n" {
			break
		}
		if time.Since(killed) > time.Minute {
			t.Fatalf("after kill -9 of the storage server: %v %d %q", err, code, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("both disks answer %v after kill -9 of the storage server", time.Since(killed).Round(time.Millisecond))
	if got := execOut(t, c, name, "cut -d' ' -f22 /proc/1/stat"); got != initStart {
		t.Errorf("the computer restarted: init start time %q, was %q", got, initStart)
	}
	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got := execOut(t, c, name, "cat /before /after /home/ohm/after"); got != "before\nafter\nafter\n" {
		t.Errorf("after stop and start: %q", got)
	}
}
