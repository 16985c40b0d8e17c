package computer

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	ohmmount "ohm/internal/ohmfs/mount"
	"ohm/internal/proc"
	"ohm/internal/template"
)

// These tests run the block layout for real: ohmfs volumes mounted by the
// ohm binary, loop devices, btrfs; the last ones real computers too.

var (
	ohmOnce sync.Once
	ohmBin  string
	ohmErr  error
)

// ohmBinary is the ohm binary under test: $OHM_BIN, or one built once.
func ohmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OHM_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	ohmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ohm-computer-test-")
		if err != nil {
			ohmErr = err
			return
		}
		ohmBin = filepath.Join(dir, "ohm")
		cmd := exec.Command("go", "build", "-o", ohmBin, "ohm/cmd/ohm")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			ohmErr = err
			ohmBin = string(out)
		}
	})
	if ohmErr != nil {
		t.Fatalf("build ohm: %v\n%s", ohmErr, ohmBin)
	}
	return ohmBin
}

// requireBlock skips a test that needs root, FUSE, loop devices and btrfs.
func requireBlock(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mounts and FUSE")
	}
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	if err := disk.Available(disk.Btrfs); err != nil {
		t.Skipf("needs btrfs: %v", err)
	}
}

// computerDir makes a computer directory as the manager lays it out and
// returns its volume path and workspace mountpoint.
func computerDir(t *testing.T) (vol, mountpoint string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "c")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mountpoint = filepath.Join(dir, "mnt", "ohm")
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "workspace"), mountpoint
}

// mountsUnder lists the mounts at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint+" ("+m.FSType+")")
	}
	return out
}

// loopsOf lists the loop devices whose backing file lies under dir.
func loopsOf(t *testing.T, dir string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	var l []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, dir) {
			l = append(l, line)
		}
	}
	return l
}

func TestBlockWorkspaceLifecycle(t *testing.T) {
	requireBlock(t)
	ctx := context.Background()
	w := NewBlockWorkspace(ohmBinary(t))
	vol, mp := computerDir(t)
	dir := filepath.Dir(vol)
	t.Cleanup(func() { w.Destroy(context.Background(), vol) })

	began := time.Now()
	if err := w.Format(ctx, vol); err != nil {
		t.Fatalf("format: %v", err)
	}
	formatted := time.Since(began)
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Logf("format + mount: %v (format %v)", time.Since(began).Round(time.Millisecond), formatted.Round(time.Millisecond))

	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		t.Errorf("workspace filesystem type %#x, want btrfs", st.Type)
	}
	if size := st.Blocks * uint64(st.Bsize); size < workspaceSize*99/100 || size > workspaceSize {
		t.Errorf("workspace size %d, want about 1 PiB", size)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 16<<20 {
		t.Errorf("empty workspace uses %d bytes, want a few MiB", used)
	}
	ms, _ := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if len(ms) != 1 || ms[0].Source != "ohmfs" {
		t.Errorf("mount at %s: %+v, want source ohmfs", mp, ms)
	} else if o := ms[0].Options; !strings.Contains(o, "nosuid") || !strings.Contains(o, "nodev") {
		t.Errorf("mount at %s has options %q, want nosuid,nodev", mp, o)
	}
	var root unix.Stat_t
	if err := unix.Stat(mp, &root); err != nil || root.Uid != homeUID || root.Gid != homeUID {
		t.Errorf("workspace root: uid %d gid %d (%v), want %d", root.Uid, root.Gid, err, homeUID)
	}
	if fi, err := os.Stat(filepath.Join(dir, "vol")); err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("volume mount %v (%v), want mode 0700", fi, err)
	}
	if err := w.Health(ctx, vol, mp); err != nil {
		t.Errorf("health of a fresh workspace: %v", err)
	}
	if s, ok := w.disk(pathsOfVolume(vol)).SpaceStatus(); !ok || s.Err != nil || s.Limit == 0 {
		t.Errorf("space guard: %+v, %v; want one in force", s, ok)
	}
	u, err := w.Usage(ctx, vol)
	if err != nil || u.Layout != "block" || u.Capacity < workspaceSize*99/100 {
		t.Errorf("usage %+v (%v), want the block layout of 1 PiB", u, err)
	}

	data := bytes.Repeat([]byte("ohm block layout\n"), 100000)
	if err := os.WriteFile(filepath.Join(mp, "file"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	t.Logf("unmount: %v", time.Since(began).Round(time.Millisecond))
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left after unmount: %v", m)
	}
	if l := loopsOf(t, dir); len(l) > 0 {
		t.Errorf("loop devices left after unmount: %v", l)
	}

	began = time.Now()
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatalf("mount again: %v", err)
	}
	t.Logf("mount again: %v", time.Since(began).Round(time.Millisecond))
	if got, err := os.ReadFile(filepath.Join(mp, "file")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("file after unmount and mount: %d bytes (%v), want %d", len(got), err, len(data))
	}

	if err := w.Destroy(ctx, vol); err != nil {
		t.Fatalf("destroy of a mounted workspace: %v", err)
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left after destroy: %v", m)
	}
	if l := loopsOf(t, dir); len(l) > 0 {
		t.Errorf("loop devices left after destroy: %v", l)
	}
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Errorf("volume still there after destroy: %v", err)
	}
}

func TestBlockWorkspaceOpensFileLayout(t *testing.T) {
	requireBlock(t)
	ctx := context.Background()
	exe := ohmBinary(t)
	vol, mp := computerDir(t)
	dir := filepath.Dir(vol)
	// A workspace made before the block layout: files at the volume's
	// root, mounted right at the mountpoint, its root given to the user.
	old := OhmfsWorkspace{Exe: exe}
	if err := old.Format(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := old.Mount(ctx, vol, mp); err != nil {
		t.Fatal(err)
	}
	if err := ownHome(mp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "old"), []byte("from before"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := NewBlockWorkspace(exe)
	t.Cleanup(func() { w.Destroy(context.Background(), vol) })
	// A daemon with the block layout stops it as it was mounted...
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatalf("unmount of an old mount: %v", err)
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Fatalf("mounts left: %v", m)
	}
	// ...and starts it in the file layout.
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatalf("mount: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "old")); err != nil || string(got) != "from before" {
		t.Errorf("old file: %q (%v)", got, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil || st.Type != fuseSuperMagic {
		t.Errorf("file layout mount type %#x (%v), want FUSE", st.Type, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "vol", imageName)); !os.IsNotExist(err) {
		t.Errorf("the file layout got a device image: %v", err)
	}
	if u, err := w.Usage(ctx, vol); err != nil || u.Layout != "file" {
		t.Errorf("usage %+v (%v), want the file layout", u, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "new"), []byte("after"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatalf("mount again: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "new")); err != nil || string(got) != "after" {
		t.Errorf("new file: %q (%v)", got, err)
	}
	// A symlink named like the image does not make it the block layout.
	if err := os.Symlink("/etc/passwd", filepath.Join(mp, imageName)); err != nil {
		t.Fatal(err)
	}
	if block, err := layoutOf(filepath.Join(dir, "vol")); err != nil || block {
		t.Errorf("layoutOf with a planted symlink: %v, %v; want the file layout", block, err)
	}
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatalf("unmount: %v", err)
	}
}

// killStorage kills (-9) the whole storage of mountpoint: its `ohm fs
// mount` process, the keeper of the FUSE connection, first, so that it
// cannot start a new server, then the server. A server killed alone is
// replaced on the same connection and nothing above notices (the mount
// package's own tests cover that); these tests are about the case where
// nothing is left to answer, which the supervisor repairs by remounting.
func killStorage(t *testing.T, mountpoint string) {
	t.Helper()
	rec, ok := ohmmount.Info(mountpoint)
	keepers := proc.Find(func(argv []string) bool {
		return len(argv) >= 5 && argv[1] == "fs" && argv[2] == "mount" && argv[4] == mountpoint
	})
	if len(keepers) == 0 {
		t.Fatalf("no mount process for %s", mountpoint)
	}
	if err := syscall.Kill(keepers[0], syscall.SIGKILL); err != nil {
		t.Fatalf("kill the keeper of %s: %v", mountpoint, err)
	}
	if ok && rec.Server > 0 {
		if err := syscall.Kill(rec.Server, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			t.Fatalf("kill the server of %s: %v", mountpoint, err)
		}
	}
}

func TestBlockWorkspaceStorageProcessDies(t *testing.T) {
	requireBlock(t)
	ctx := context.Background()
	w := NewBlockWorkspace(ohmBinary(t))
	vol, mp := computerDir(t)
	dir := filepath.Dir(vol)
	t.Cleanup(func() { w.Destroy(context.Background(), vol) })
	if err := w.Format(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mp, "synced"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("durable")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	killStorage(t, filepath.Join(dir, "vol"))
	killed := time.Now()
	deadline := killed.Add(30 * time.Second)
	for w.Health(ctx, vol, mp) == nil {
		if time.Now().After(deadline) {
			t.Fatal("health still good 30 s after the storage process died")
		}
		time.Sleep(20 * time.Millisecond)
	}
	noticed := time.Since(killed)
	t.Logf("health: %v (noticed after %v)", w.Health(ctx, vol, mp), noticed.Round(time.Millisecond))
	// What the supervisor does: detach the computer's mount, mount again.
	began := time.Now()
	if err := detach(mp); err != nil {
		t.Fatal(err)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatalf("mount after the storage process died: %v", err)
	}
	t.Logf("mounted again in %v", time.Since(began).Round(time.Millisecond))
	if err := w.Health(ctx, vol, mp); err != nil {
		t.Errorf("health after mounting again: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "synced")); err != nil || string(got) != "durable" {
		t.Errorf("fsynced file after the storage process died: %q (%v)", got, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "after"), []byte("x"), 0o644); err != nil {
		t.Errorf("write after mounting again: %v", err)
	}
	if u, err := w.Usage(ctx, vol); err != nil || !strings.Contains(u.Incident, "storage process had died") {
		t.Errorf("usage %+v (%v), want an incident", u, err)
	}
	if err := w.Destroy(ctx, vol); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
}

// seedTemplates copies the templates a test machine keeps built into the
// data directory, so that a real computer does not rebuild one.
func seedTemplates(t *testing.T, dataDir string) {
	const cache = "/var/cache/ohm-test/templates"
	if _, err := os.Stat(filepath.Join(cache, "minimal", "manifest.json")); err != nil {
		return
	}
	os.MkdirAll(filepath.Join(dataDir, "templates"), 0o755)
	if out, err := exec.Command("cp", "-a", filepath.Join(cache, "minimal"), filepath.Join(dataDir, "templates", "minimal")).CombinedOutput(); err != nil {
		t.Logf("seed template: %v: %s", err, out)
	}
}

// run runs a command in computer name and returns its output.
func run(t *testing.T, m *Manager, name, command string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := m.Exec(context.Background(), name, ExecOptions{Command: command}, nil, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("%s: exit %d, %v: %s%s", command, code, err, out.String(), errb.String())
	}
	return out.String()
}

func TestComputerBlockLayout(t *testing.T) {
	requireBlock(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox for the minimal template")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	seedTemplates(t, dataDir)
	m, err := Open(ctx, Options{DataDir: dataDir, Exe: ohmBinary(t), Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		m.Close()
	})
	// The first create may build the template.
	if _, err := m.tmpl.Ensure(ctx, "minimal", nil); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := m.Create(ctx, CreateOptions{Name: "blk", Template: "minimal", DiskSizeMB: 256}); err != nil {
		t.Fatal(err)
	}
	t.Logf("create: %v", time.Since(began).Round(time.Millisecond))
	df := run(t, m, "blk", "df -h /home/ohm")
	f := strings.Fields(strings.Split(strings.TrimSpace(df), "\n")[1])
	if f[0] != "ohmfs" || f[1] != "1.0P" {
		t.Errorf("df -h /home/ohm:\n%s\nwant filesystem ohmfs, size 1.0P", df)
	}
	// df's used is what the workspace holds, within a few MiB (btrfs's
	// own trees): 64 MiB written, synced, against du.
	run(t, m, "blk", "head -c 67108864 /dev/urandom > /home/ohm/data && sync")
	f = strings.Fields(strings.Split(strings.TrimSpace(run(t, m, "blk", "df -k /home/ohm")), "\n")[1])
	used, _ := strconv.ParseInt(f[2], 10, 64)
	du, _ := strconv.ParseInt(strings.Fields(run(t, m, "blk", "du -sk /home/ohm"))[0], 10, 64)
	t.Logf("df used %d KiB, du %d KiB", used, du)
	if used < du || used > du+16<<10 {
		t.Errorf("df -k /home/ohm says %d KiB used, du says the workspace holds %d KiB: want used within 16 MiB above that", used, du)
	}
	run(t, m, "blk", "echo kept > /home/ohm/kept && id -u > /home/ohm/uid")
	began = time.Now()
	if err := m.Stop(ctx, "blk"); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop: %v", time.Since(began).Round(time.Millisecond))
	if l := loopsOf(t, dataDir); len(l) > 0 {
		t.Errorf("loop devices of a stopped computer: %v", l)
	}
	if ms := mountsUnder(t, m.dir("blk")); len(ms) > 0 {
		t.Errorf("mounts of a stopped computer: %v", ms)
	}
	began = time.Now()
	if err := m.Start(ctx, "blk"); err != nil {
		t.Fatal(err)
	}
	t.Logf("start: %v", time.Since(began).Round(time.Millisecond))
	if got := run(t, m, "blk", "cat /home/ohm/kept /home/ohm/uid"); got != "kept\n1000\n" {
		t.Errorf("after stop and start: %q", got)
	}
	info, err := m.Info(ctx, "blk")
	if err != nil || info.Workspace == nil || info.Workspace.Layout != "block" {
		t.Errorf("info: %+v (%v), want the block layout", info.Workspace, err)
	}
	began = time.Now()
	if err := m.Delete(ctx, "blk"); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete: %v", time.Since(began).Round(time.Millisecond))
	if l := loopsOf(t, dataDir); len(l) > 0 {
		t.Errorf("loop devices after delete: %v", l)
	}
	if ms := mountsUnder(t, dataDir); len(ms) > 0 {
		t.Errorf("mounts after delete: %v", ms)
	}
}

func TestComputerFileLayoutKeepsWorking(t *testing.T) {
	requireBlock(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox for the minimal template")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	seedTemplates(t, dataDir)
	exe := ohmBinary(t)
	// A computer made by a daemon of the file layout...
	m, err := Open(ctx, Options{DataDir: dataDir, Exe: exe, Workspace: OhmfsWorkspace{Exe: exe}, Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "old", Template: "minimal", DiskSizeMB: 256}); err != nil {
		m.Close()
		t.Fatal(err)
	}
	run(t, m, "old", "echo old > /home/ohm/old")
	if err := m.Stop(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	m.Close()
	// ...runs under one of the block layout.
	m, err = Open(ctx, Options{DataDir: dataDir, Exe: exe, Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Delete(context.Background(), "old")
		m.Close()
	})
	if got := run(t, m, "old", "cat /home/ohm/old; echo new > /home/ohm/new; stat -f -c %t /home/ohm"); !strings.HasPrefix(got, "old\n") || !strings.Contains(got, "65735546") {
		t.Errorf("old computer: %q, want its file on the file layout (fuse)", got)
	}
	if err := m.Stop(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if got := run(t, m, "old", "cat /home/ohm/old /home/ohm/new"); got != "old\nnew\n" {
		t.Errorf("old computer after stop and start: %q", got)
	}
	if err := m.Delete(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if ms := mountsUnder(t, dataDir); len(ms) > 0 {
		t.Errorf("mounts after delete: %v", ms)
	}
}

func TestComputerStorageProcessDies(t *testing.T) {
	requireBlock(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox for the minimal template")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	seedTemplates(t, dataDir)
	m, err := Open(ctx, Options{DataDir: dataDir, Exe: ohmBinary(t), Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Delete(context.Background(), "dies")
		m.Close()
	})
	if _, err := m.Create(ctx, CreateOptions{Name: "dies", Template: "minimal", DiskSizeMB: 256}); err != nil {
		t.Fatal(err)
	}
	run(t, m, "dies", "echo synced > /home/ohm/synced && sync /home/ohm/synced")
	var _ WorkspaceHealth = m.ws.(*BlockWorkspace)
	h := m.ws.(WorkspaceHealth)
	vol, home := m.volume("dies"), m.home("dies")
	killStorage(t, filepath.Join(m.dir("dies"), "vol"))
	killed := time.Now()
	for h.Health(ctx, vol, home) == nil {
		if time.Since(killed) > 30*time.Second {
			t.Fatal("health still good 30 s after the storage process died")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("noticed after %v: %v", time.Since(killed).Round(time.Millisecond), h.Health(ctx, vol, home))
	// What the supervisor does with a workspace that answers an error.
	began := time.Now()
	unlock := m.lock("dies")
	err = m.remountWorkspace(ctx, "dies")
	unlock()
	if err != nil {
		t.Fatalf("mount again: %v", err)
	}
	t.Logf("mounted again in %v", time.Since(began).Round(time.Millisecond))
	if got := run(t, m, "dies", "cat /home/ohm/synced; echo after > /home/ohm/after; cat /home/ohm/after; df -h /home/ohm | tail -1"); !strings.HasPrefix(got, "synced\nafter\nohmfs") {
		t.Errorf("in the computer after mounting again: %q", got)
	}
	info, err := m.Info(ctx, "dies")
	if err != nil || info.Workspace == nil || !strings.Contains(info.Workspace.Incident, "died") {
		t.Errorf("info: %+v (%v), want the incident", info.Workspace, err)
	} else {
		t.Logf("info: %s", info.Workspace.Incident)
	}
	if err := m.Stop(ctx, "dies"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if got := run(t, m, "dies", "cat /home/ohm/synced /home/ohm/after"); got != "synced\nafter\n" {
		t.Errorf("after stop and start: %q", got)
	}
}

// A workspace whose storage process died is stopped (unmounted) without a
// remount first: nothing is left mounted and the next mount has every
// fsynced file.
func TestBlockWorkspaceStopAfterStorageDied(t *testing.T) {
	requireBlock(t)
	ctx := context.Background()
	w := NewBlockWorkspace(ohmBinary(t))
	vol, mp := computerDir(t)
	dir := filepath.Dir(vol)
	t.Cleanup(func() { w.Destroy(context.Background(), vol) })
	if err := w.Format(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mp, "synced"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("durable")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	killStorage(t, filepath.Join(dir, "vol"))
	for w.Health(ctx, vol, mp) == nil {
		time.Sleep(20 * time.Millisecond)
	}
	began := time.Now()
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatalf("unmount after the storage process died: %v", err)
	}
	t.Logf("unmount of a dead workspace: %v", time.Since(began).Round(time.Millisecond))
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatalf("mount: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "synced")); err != nil || string(got) != "durable" {
		t.Errorf("fsynced file: %q (%v)", got, err)
	}
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
}

func TestPathsOfMount(t *testing.T) {
	for _, tc := range []struct {
		mp, dir string
		ok      bool
	}{
		{"/d/computers/a/mnt/ohm", "/d/computers/a", true},
		{"/d/computers/a/mnt/ohm/", "/d/computers/a", true},
		{"/d/computers/a/home", "", false},
		{"/d/computers/a/mnt/x", "", false},
	} {
		p, ok := pathsOfMount(tc.mp)
		if ok != tc.ok || p.dir != tc.dir {
			t.Errorf("pathsOfMount(%q) = %q, %v; want %q, %v", tc.mp, p.dir, ok, tc.dir, tc.ok)
		}
	}
	if p := pathsOfVolume("/d/computers/a/workspace"); p.dir != "/d/computers/a" || p.home() != "/d/computers/a/mnt/ohm" {
		t.Errorf("pathsOfVolume: %+v", p)
	}
}

// killKeeper kills (-9) only the keeper of the volume mounted at
// mountpoint, the `ohm fs mount` process holding its FUSE connection, and
// returns its pid: the server answers on, with nothing to replace it.
func killKeeper(t *testing.T, mountpoint string) int {
	t.Helper()
	rec, ok := ohmmount.Info(mountpoint)
	if !ok || !proc.Running(rec.PID) {
		t.Fatalf("no live keeper for %s: %+v", mountpoint, rec)
	}
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the keeper of %s: %v", mountpoint, err)
	}
	return rec.PID
}

// A running computer whose workspace loses its storage server, then the
// keeper of its storage: the server is replaced on the same connection
// (info says so); the keeper's death is repaired by the supervisor, which
// takes the workspace down cleanly and mounts it again with a new keeper
// (info says so). A process writing in the workspace all along sees at
// most errors, every fsynced file is there, and the next commands work.
func TestComputerKeeperDies(t *testing.T) {
	requireBlock(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox for the minimal template")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	seedTemplates(t, dataDir)
	m, err := Open(ctx, Options{DataDir: dataDir, Exe: ohmBinary(t), Templates: template.NewStore(dataDir), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Delete(context.Background(), "keeper")
		m.Close()
	})
	if _, err := m.Create(ctx, CreateOptions{Name: "keeper", Template: "minimal", DiskSizeMB: 256}); err != nil {
		t.Fatal(err)
	}
	run(t, m, "keeper", "echo synced > /home/ohm/synced && sync /home/ohm/synced")
	volMount := filepath.Join(m.dir("keeper"), "vol")
	incident := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := m.Info(ctx, "keeper")
			if err == nil && info.Workspace != nil && strings.Contains(info.Workspace.Incident, want) {
				return info.Workspace.Incident
			}
			if time.Now().After(deadline) {
				t.Fatalf("info after 30 s: %+v (%v), want an incident saying %q", info.Workspace, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A writer in the computer for the whole test: one file it holds
	// open, one it opens by path each time, a line every 20 ms.
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		script := `exec 3>>/home/ohm/held; i=0; e=0; while [ $i -lt 400 ]; do echo $i >&3 || e=$((e+1)); echo $i >> /home/ohm/bypath || e=$((e+1)); i=$((i+1)); sleep 0.02; done; echo errors=$e`
		code, err := m.Exec(context.Background(), "keeper", ExecOptions{Command: script}, nil, &out, &errb)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d: %s", code, errb.String())
		}
		done <- result{out.String() + errb.String(), err}
	}()
	time.Sleep(300 * time.Millisecond) // let it write a little first

	// The server alone: replaced on the same connection.
	rec, ok := ohmmount.Info(volMount)
	if !ok {
		t.Fatal("no mount record for the workspace volume")
	}
	if err := syscall.Kill(rec.Server, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("server killed; info: %s", incident("replaced on the same connection"))

	// The keeper: the supervisor mounts the workspace again.
	killed := time.Now()
	old := killKeeper(t, volMount)
	msg := incident("keeper")
	t.Logf("keeper %d killed; %v later info says: %s", old, time.Since(killed).Round(time.Millisecond), msg)
	if rec, ok := ohmmount.Info(volMount); !ok || rec.PID == old || !proc.Running(rec.PID) || rec.Restarts != 0 {
		t.Errorf("mount record after the remount: %+v, %v; want a new live keeper", rec, ok)
	}
	if got := run(t, m, "keeper", "cat /home/ohm/synced; echo after > /home/ohm/after; sync /home/ohm/after; cat /home/ohm/after; df -h /home/ohm | tail -1"); !strings.HasPrefix(got, "synced\nafter\nohmfs") {
		t.Errorf("in the computer after the remount: %q", got)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Errorf("writer: %v: %s", r.err, r.out)
		} else {
			t.Logf("writer: %s", strings.TrimSpace(r.out))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the writer did not finish")
	}
	if err := m.Stop(ctx, "keeper"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := m.Start(ctx, "keeper"); err != nil {
		t.Fatalf("start: %v", err)
	}
	if got := run(t, m, "keeper", "cat /home/ohm/synced /home/ohm/after; test -s /home/ohm/bypath && echo bypath"); got != "synced\nafter\nbypath\n" {
		t.Errorf("after stop and start: %q", got)
	}
}

// Deleted files give their space back: 1 GiB written in a workspace and
// deleted; the btrfs's discards (a trim here, as btrfs's discard=async
// would within minutes) punch holes in the image, its packs are freed,
// and gc deletes them from the volume's store.
func TestBlockWorkspaceDiscardFreesStore(t *testing.T) {
	requireBlock(t)
	ctx := context.Background()
	exe := ohmBinary(t)
	w := NewBlockWorkspace(exe)
	vol, mp := computerDir(t)
	t.Cleanup(func() { w.Destroy(context.Background(), vol) })
	if err := w.Format(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 30
	f, err := os.Create(filepath.Join(mp, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < size; n += len(buf) {
		rng.Read(buf) // incompressible: the store holds what was written
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Unmounting folds the image's log into the store.
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
	full, err := w.Usage(ctx, vol)
	if err != nil || full.StoredBytes < size {
		t.Fatalf("usage after 1 GiB was written: %+v (%v), want at least 1 GiB stored", full, err)
	}

	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mp, "big")); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	began := time.Now()
	trimmed, err := w.disk(pathsOfVolume(vol)).Trim(ctx, 0, math.MaxUint64)
	if err != nil {
		t.Fatalf("trim: %v", err)
	}
	t.Logf("trim: %d MiB discarded in %v", trimmed>>20, time.Since(began).Round(time.Millisecond))
	if err := w.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(exe, "fs", "gc", "--grace", "0s", vol).CombinedOutput(); err != nil {
		t.Fatalf("ohm fs gc: %v\n%s", err, out)
	}
	after, err := w.Usage(ctx, vol)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d MiB with the file, %d MiB after delete, trim and gc", full.StoredBytes>>20, after.StoredBytes>>20)
	if after.StoredBytes > 128<<20 {
		t.Errorf("the store still holds %d MiB after the file was deleted and trimmed, want it back under 128 MiB", after.StoredBytes>>20)
	}
	if out, err := exec.Command(exe, "fs", "fsck", vol).CombinedOutput(); err != nil {
		t.Errorf("ohm fs fsck: %v\n%s", err, out)
	}
}
