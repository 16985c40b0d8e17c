package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

// These tests perform, for real, the attacks an outside probe of Ohm found
// (root in a computer against the host and other computers); see
// SECURITY.md.

// homeSpec is newSpec with the production /home layout: a shared,
// read-only host directory (ShareHome) bound at /home, with a stand-in
// workspace (a tmpfs) mounted on the host at its ohm, as the daemon mounts
// the FUSE workspace there.
func homeSpec(t *testing.T, name string, diskMB int) Spec {
	t.Helper()
	return homeSpecIn(t, name, diskMB, "")
}

// homeSpecIn is homeSpec with everything of the computer's on the host
// under dir ("": test temporary directories).
func homeSpecIn(t *testing.T, name string, diskMB int, dir string) Spec {
	t.Helper()
	spec := newSpecIn(t, name, diskMB, dir)
	if dir == "" {
		dir = t.TempDir()
	}
	home := filepath.Join(dir, "mnt")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ShareHome(home); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(home, "ohm")
	// Without nosuid and nodev, as a workspace may come mounted: Start
	// must add them.
	if err := unix.Mount("workspace", ws, "tmpfs", 0, "size=64m,mode=0755,uid=1000,gid=1000"); err != nil {
		UnshareHome(home)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Unmount(ws, unix.MNT_DETACH)
		UnshareHome(home)
	})
	spec.Workspace, spec.HomeMount = "", home
	return spec
}

// workspaceOf is the host path of spec's workspace.
func workspaceOf(spec Spec) string {
	if spec.HomeMount != "" {
		return filepath.Join(spec.HomeMount, "ohm")
	}
	return spec.Workspace
}

func requireSlirp(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/slirp4netns"); err != nil {
		t.Skip("network tests need slirp4netns (apt package slirp4netns)")
	}
}

// TestNetworkComputerLeavesWorkspacesAlone starts a --network computer
// beside a running one: slirp4netns' sandbox detaching its old root must
// not unmount the running computer's workspace on the host (and so in the
// computer), which is what would have the daemon mount it again, through
// a path the computer can write.
func TestNetworkComputerLeavesWorkspacesAlone(t *testing.T) {
	requireRuntime(t)
	requireSlirp(t)
	spec := homeSpec(t, "lovelace", 32)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)
	if r := sh(t, s, "ohm", "echo kept > /home/ohm/marker && cat /home/ohm/marker"); r.stdout != "kept\n" {
		t.Fatalf("workspace before: %+v", r)
	}

	net := newSpec(t, "babbage", 32)
	net.Network = true
	ns := startSandbox(t, net)
	defer ns.Stop(context.Background(), time.Second)
	// Once slirp4netns runs in its sandbox its root is the empty one: the
	// detach of the old root has happened.
	pid := slirpPid(t, net)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mi, err := os.ReadFile("/proc/" + pid + "/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(mi), net.paths().state) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slirp4netns never entered its sandbox")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if !mountinfo.IsMountpoint(workspaceOf(spec)) {
		t.Error("starting a --network computer unmounted another computer's workspace on the host")
	}
	if r := sh(t, s, "ohm", "cat /home/ohm/marker"); r.stdout != "kept\n" {
		t.Errorf("workspace inside after a --network start: %+v", r)
	}
	// Nor does the other computer's end (its mount namespace going away,
	// slirp4netns' with it).
	if err := ns.Stop(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	if !mountinfo.IsMountpoint(workspaceOf(spec)) {
		t.Error("stopping a --network computer unmounted another computer's workspace on the host")
	}
	if r := sh(t, s, "ohm", "cat /home/ohm/marker"); r.stdout != "kept\n" {
		t.Errorf("workspace inside after a --network stop: %+v", r)
	}
}

func slirpPid(t *testing.T, spec Spec) string {
	t.Helper()
	data, err := os.ReadFile(spec.paths().slirpPid)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// TestWorkspaceRemountAttack is root in a computer preparing the
// workspace remount escape: with the workspace not mounted (its mount
// process died), replace /home/ohm by a symlink to a host path, so that
// mounting the workspace again would mount the computer's executable,
// writable workspace there. /home is read-only inside, so the link cannot
// be made, and ShareHome refuses a link it finds all the same.
func TestWorkspaceRemountAttack(t *testing.T) {
	requireRuntime(t)
	spec := homeSpec(t, "hopper", 32)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	opts := mountOptions(t, s, "/home")
	for _, opt := range []string{"ro", "nosuid", "nodev", "noexec"} {
		if !opts[opt] {
			t.Errorf("/home mounted %v inside, want %s", opts, opt)
		}
	}
	if opts := mountOptions(t, s, homeDir); opts["ro"] || opts["noexec"] {
		t.Errorf("the workspace is mounted %v inside, want writable and executable", opts)
	}
	if r := sh(t, s, "ohm", "echo ok > /home/ohm/f && cat /home/ohm/f"); r.stdout != "ok\n" {
		t.Errorf("workspace not writable: %+v", r)
	}
	// The workspace dies: the host detaches its mount.
	ws := workspaceOf(spec)
	if err := unix.Unmount(ws, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	for _, script := range []string{
		"rmdir /home/ohm && ln -s " + target + " /home/ohm",
		"mv /home/ohm /home/old && ln -s " + target + " /home/ohm",
		"ln -s " + target + " /home/ohm/x",
		"touch /home/file",
	} {
		if r := sh(t, s, "root", "("+script+") 2>&1"); r.code == 0 {
			t.Errorf("%q succeeded in the computer", script)
		}
	}
	if fi, err := os.Lstat(ws); err != nil || !fi.IsDir() {
		t.Fatalf("host's %s is no longer a directory: %v %v", ws, fi, err)
	}
	if entries, _ := os.ReadDir(spec.HomeMount); len(entries) != 1 {
		t.Errorf("the computer changed its /home on the host: %v", entries)
	}

	// Had a link got there (a /home writable before), the host side
	// refuses it rather than following it.
	home := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(home, 0o755)
	if err := os.Symlink(target, filepath.Join(home, "ohm")); err != nil {
		t.Fatal(err)
	}
	if err := ShareHome(home); err == nil {
		UnshareHome(home)
		t.Error("ShareHome accepted a symlink at ohm")
	}
}

// TestShareHomeRechecksMounted is a computer's /home found mounted (the
// daemon restarted) but not as ShareHome leaves it: writable, with a link
// at ohm to a host path. ShareHome must not take it as it is, or the
// workspace would be mounted through the link.
func TestShareHomeRechecksMounted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	target := t.TempDir()
	for _, tc := range []struct {
		name      string
		underLink bool // the directory under the mount has the link too
	}{{"mount", false}, {"mount and directory", true}} {
		t.Run(tc.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(home, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.underLink {
				if err := os.Symlink(target, filepath.Join(home, "ohm")); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Mount("stale", home, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { UnshareHome(home) })
			if err := os.Symlink(target, filepath.Join(home, "ohm")); err != nil {
				t.Fatal(err)
			}
			err := ShareHome(home)
			if tc.underLink {
				if err == nil {
					t.Error("ShareHome accepted a symlink at ohm under the mount")
				}
				if mountinfo.IsMountpoint(home) {
					t.Error("the stale mount is left")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := sharedHome(home); err != nil {
				t.Errorf("after ShareHome: %v", err)
			}
			if fi, err := os.Lstat(filepath.Join(home, "ohm")); err != nil || !fi.IsDir() {
				t.Errorf("ohm: %v %v, want a directory", fi, err)
			}
		})
	}
	if entries, _ := os.ReadDir(target); len(entries) > 0 {
		t.Errorf("the link's target got %v", entries)
	}
}

// TestHostProgramsNotFromPATH puts a runc, a mount and a mkfs.ext4 that
// would run as root first on the daemon's PATH: the sandbox must run the
// system's, never these.
func TestHostProgramsNotFromPATH(t *testing.T) {
	requireRuntime(t)
	evil := t.TempDir()
	marker := filepath.Join(evil, "ran")
	for _, name := range []string{"runc", "mount", "mkfs.ext4", "slirp4netns", "losetup"} {
		script := "#!/bin/sh\necho " + name + " >> " + marker + "\nexit 1\n"
		if err := os.WriteFile(filepath.Join(evil, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	if p, _ := exec.LookPath("runc"); p != filepath.Join(evil, "runc") {
		t.Fatalf("the planted runc is not first on PATH (%s)", p)
	}
	spec := newSpec(t, "turing", 32)
	if _, err := os.Stat("/usr/bin/slirp4netns"); err == nil {
		spec.Network = true
	}
	s := startSandbox(t, spec)
	if r := sh(t, s, "ohm", "echo ok"); r.stdout != "ok\n" {
		t.Errorf("computer: %+v", r)
	}
	if err := s.Stop(context.Background(), time.Second); err != nil {
		t.Error(err)
	}
	if data, err := os.ReadFile(marker); err == nil {
		t.Errorf("programs run from PATH: %q", data)
	}
}

// mountOptions are the per-mount options of the mount at path inside s.
func mountOptions(t *testing.T, s *Sandbox, path string) map[string]bool {
	t.Helper()
	r := sh(t, s, "root", "cat /proc/self/mountinfo")
	var opts map[string]bool
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == path {
			opts = map[string]bool{} // the last (topmost) mount wins
			for _, o := range strings.Split(f[5], ",") {
				opts[o] = true
			}
		}
	}
	if opts == nil {
		t.Fatalf("%s is not a mount point inside", path)
	}
	return opts
}

// TestAgentSocketCannotBeRedirected is root in computer A pointing the
// agent socket the daemon dials at computer B's (the socket A's agent
// made was in a host directory A could write): A's commands must still
// run in A.
func TestAgentSocketCannotBeRedirected(t *testing.T) {
	requireRuntime(t)
	a := startSandbox(t, newSpec(t, "noether", 32))
	defer a.Stop(context.Background(), time.Second)
	bspec := newSpec(t, "germain", 32)
	b := startSandbox(t, bspec)
	defer b.Stop(context.Background(), time.Second)

	for _, script := range []string{
		"mkdir -p /.ohm/run && rm -f /.ohm/run/agent.sock && ln -s " + bspec.paths().socket + " /.ohm/run/agent.sock",
		"for s in $(find / -xdev -type s 2>/dev/null); do rm -f $s && ln -s " + bspec.paths().socket + " $s; done",
	} {
		sh(t, a, "root", script)
		if r := sh(t, a, "ohm", "hostname"); r.stdout != "noether\n" {
			t.Errorf("after %q, a command for noether ran in %q", script, r.stdout)
		}
	}
	if err := ping(context.Background(), a.p.socket); err != nil {
		t.Errorf("noether's agent: %v", err)
	}
	// The socket is the agent's alone: no command inherits it.
	if r := sh(t, a, "root", "ls -l /proc/self/fd/ | grep socket"); r.stdout != "" {
		t.Errorf("a command holds a socket: %q", r.stdout)
	}
	if r := sh(t, a, "root", "env | grep LISTEN_"); r.stdout != "" {
		t.Errorf("a command inherits %q", r.stdout)
	}
}

// TestHostDiskBounded is root in a computer trying to fill the host's
// disk through every path inside that was a host directory or file
// (/home beside the workspace, /.ohm/run, the binds over /etc/hosts,
// /etc/hostname and /etc/resolv.conf, the agent's log through
// /proc/1/fd/1) and the cgroup tmpfs. Everything of the computer's on the
// host (its state directory, with the root disk, and its /home) is on a
// filesystem of the test's own, so that what the computer takes of it is
// measured exactly, whatever else runs on the host: no more than the root
// disk, which is where such bytes may land. Before that, it checks that no
// writable mount inside, and none of the agent's output files, is on one
// of the host's own filesystems, and that every writable tmpfs has a size.
func TestHostDiskBounded(t *testing.T) {
	requireRuntime(t)
	const diskMB = 32
	own := t.TempDir()
	if err := unix.Mount("ohm-test-host", own, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=512m,mode=0755"); err != nil {
		t.Fatalf("a filesystem of the test's own: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(own, unix.MNT_DETACH) })
	spec := homeSpecIn(t, "franklin", diskMB, own)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	// The host's own filesystems, and the test's: no writable mount inside
	// may be one of them.
	hostDevs := map[string]string{} // "major:minor": a path on it
	for _, p := range []string{"/", "/tmp", os.TempDir(), "/var", "/var/tmp", "/run", filepath.Dir(own), own} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil {
			hostDevs[fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))] = p
		}
	}
	mi := sh(t, s, "root", "cat /proc/self/mountinfo").stdout
	top := map[string]string{} // mountpoint: its topmost mount, listed last
	for _, line := range strings.Split(strings.TrimSpace(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			top[f[4]] = line
		}
	}
	for _, line := range top {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 10 || sep < 6 {
			t.Fatalf("mountinfo line %q", line)
		}
		opts, fstype, super := ","+f[5]+",", f[sep+1], ","+f[sep+3]+","
		if !strings.Contains(opts, ",rw,") {
			continue
		}
		if p, ok := hostDevs[f[2]]; ok {
			t.Errorf("%s is a writable mount of the host's filesystem of %s (%s)", f[4], p, line)
		}
		if fstype == "tmpfs" && !strings.Contains(super, ",size=") {
			t.Errorf("%s is a writable tmpfs of no set size (%s)", f[4], line)
		}
	}
	// The agent's output: what root writes to /proc/1/fd/1 or 2 lands
	// where it points.
	for _, fd := range []string{"1", "2"} {
		r := sh(t, s, "root", "stat -L -c %d /proc/1/fd/"+fd)
		dev, err := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64)
		if err != nil {
			t.Fatalf("device of the agent's fd %s: %+v", fd, r)
		}
		if p, ok := hostDevs[fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))]; ok {
			t.Errorf("the agent's fd %s is a file on the host's filesystem of %s", fd, p)
		}
	}

	ownFree := func() int64 {
		var fs unix.Statfs_t
		if err := unix.Statfs(own, &fs); err != nil {
			t.Fatal(err)
		}
		return int64(fs.Bavail) * fs.Bsize
	}
	before := ownFree()
	const tryMB = 200
	for _, target := range []string{
		"/home/fill", "/.ohm/run/fill", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
		"/proc/1/fd/1", "/sys/fs/cgroup/fill",
	} {
		r := sh(t, s, "root", fmt.Sprintf("dd if=/dev/zero of=%s bs=1M count=%d 2>&1; r=$?; sync; exit $r", target, tryMB))
		t.Logf("%s: exit %d: %s", target, r.code, strings.TrimSpace(r.stdout))
	}
	dropMB := (before - ownFree()) >> 20
	t.Logf("the computer's filesystem on the host: free space dropped by %d MB", dropMB)
	// The root disk may fill, and its image's filesystem metadata with it.
	if dropMB > diskMB+diskMB/4 {
		t.Errorf("the computer took %d MB of the host's disk, more than its %d MB root disk", dropMB, diskMB)
	}
	if r := sh(t, s, "root", "rm -f /home/fill /.ohm/run/fill /sys/fs/cgroup/fill; : > /etc/hosts; : > /proc/1/fd/1; echo ok"); r.stdout != "ok\n" {
		t.Errorf("cleanup: %+v", r)
	}
	if err := ping(context.Background(), s.p.socket); err != nil {
		t.Errorf("agent after the fill: %v", err)
	}
}

// TestOOMTakesCommandsNotInit fills a small computer's memory with many
// processes, each smaller than the agent: the OOM killer would pick the
// agent, the largest (and with it the whole computer), were it not
// protected. Commands it starts are not protected.
func TestOOMTakesCommandsNotInit(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "ride", 32)
	spec.MemoryMB, spec.PIDs = 96, 1024
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	// -1000 for the agent where the host may lower a score (it lacks
	// CAP_SYS_RESOURCE in some containers); commands 1000 above it.
	want := "-1000\n0\n"
	if !hasCap(unix.CAP_SYS_RESOURCE) {
		t.Log("no CAP_SYS_RESOURCE here: the agent keeps score 0, commands get 1000")
		want = "0\n1000\n"
	}
	if r := sh(t, s, "root", "cat /proc/1/oom_score_adj /proc/self/oom_score_adj"); r.stdout != want {
		t.Errorf("oom_score_adj of the agent and a command: %q, want %q", r.stdout, want)
	}
	events := "grep oom_kill /sys/fs/cgroup/memory/memory.oom_control"
	if v, _ := DetectCgroups(); v == CgroupV2 {
		events = "grep oom_kill /sys/fs/cgroup/memory.events"
	}
	// Each subshell holds 3 MB; the script ends itself once the OOM
	// killer has struck three times.
	script := `for i in $(seq 60); do (x=$(head -c 3000000 /dev/zero | tr '\0' a); sleep 1000) & done
while [ "$(` + events + ` | cut -d' ' -f2)" -lt 3 ]; do sleep 0.1; done; echo oom; kill -9 0`
	r := run(t, s, ExecRequest{Argv: []string{"sh", "-c", script}, User: "ohm", Timeout: time.Minute})
	t.Logf("storm: exit %d, %q", r.code, r.stdout)
	if err := ping(context.Background(), s.p.socket); err != nil {
		t.Fatalf("the agent died in the OOM storm: %v", err)
	}
	if r.stdout != "oom\n" {
		t.Errorf("storm: %+v, want the OOM killer to have struck", r)
	}
	if r := sh(t, s, "ohm", "echo alive"); r.stdout != "alive\n" {
		t.Errorf("after the storm: %+v", r)
	}
}

// TestSetuidStaysInside is root in a computer leaving setuid-root
// binaries wherever it can write: setuid works inside the computer's own
// root (sudo needs it), nowhere else, and no file the computer made
// carries a usable setuid bit on the host.
func TestSetuidStaysInside(t *testing.T) {
	requireRuntime(t)
	spec := homeSpec(t, "johnson", 64)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, exe, filepath.Join(workspaceOf(spec), ".probe"), 0o755)

	for _, tt := range []struct {
		path string
		euid string // of user ohm running it: "" if it cannot be made
	}{
		{"/usr/local/bin/suid", "0"}, // the computer's own root disk
		{"/home/ohm/suid", "1000"},   // the workspace: nosuid
		{"/home/suid", ""},
		{"/.ohm/run/suid", "0"}, // no longer a host directory: the root disk
	} {
		r := sh(t, s, "root", fmt.Sprintf("mkdir -p $(dirname %[1]s) && cp /home/ohm/.probe %[1]s && chmod 4755 %[1]s 2>&1", tt.path))
		if tt.euid == "" {
			if r.code == 0 {
				t.Errorf("root made a setuid file at %s", tt.path)
			}
			continue
		}
		if r.code != 0 {
			t.Errorf("make %s: %+v", tt.path, r)
			continue
		}
		if r := run(t, s, ExecRequest{Argv: []string{tt.path, "probe", "ids"}, User: "ohm"}); r.stdout != "1000 "+tt.euid+"\n" {
			t.Errorf("%s run by ohm: uid, euid %q, want 1000 %s", tt.path, r.stdout, tt.euid)
		}
	}
	// Root's binds over /etc are files of the root disk: a setuid bit there
	// must be inert on the host too.
	sh(t, s, "root", "chmod 4755 /etc/hosts")

	for _, dir := range []string{spec.StateDir, spec.HomeMount} {
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.Type()&os.ModeSymlink != 0 {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Mode()&os.ModeSetuid == 0 {
				return nil
			}
			var fs unix.Statfs_t
			if err := unix.Statfs(path, &fs); err != nil {
				t.Errorf("statfs %s: %v", path, err)
			} else if fs.Flags&unix.ST_NOSUID == 0 {
				t.Errorf("setuid file %s on a host mount without nosuid", path)
			}
			return nil
		})
	}
}

// TestHardening makes, as root inside a computer, the calls a computer
// has no use for (vsock, which reaches the hypervisor; the host's audit
// log; exotic socket families; modify_ldt; personalities that weaken
// memory protections) and reads what describes the host: each must fail
// or show nothing, while the everyday variants work.
func TestHardening(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "wu", 32)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	r := run(t, s, ExecRequest{Argv: []string{probeBinary(t, spec), "probe", "hardening"}, User: "root"})
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			got[line[:i]] = line[i+1:]
		}
	}
	for _, tt := range []struct{ call, want string }{
		// What a kernel without them answers: sudo takes that as auditing
		// not configured, and stays quiet.
		{"socket(AF_VSOCK)", "EAFNOSUPPORT"},
		{"socket(AF_VSOCK, high bits)", "EAFNOSUPPORT"},
		{"socket(NETLINK_AUDIT)", "EPROTONOSUPPORT"},
		{"socket(NETLINK_AUDIT, high bits)", "EPROTONOSUPPORT"},
		{"socket(NETLINK_KOBJECT_UEVENT)", "EPROTONOSUPPORT"},
		{"socket(AF_ALG)", "EPERM"},
		{"socket(AF_TIPC)", "EPERM"},
		{"modify_ldt", "EPERM"},
		{"personality(ADDR_NO_RANDOMIZE)", "EPERM"},
		{"personality(READ_IMPLIES_EXEC)", "EPERM"},
		{"personality(PER_BSD)", "EPERM"},
		{"socket(AF_UNIX)", "ok"},
		{"socket(AF_INET)", "ok"},
		{"socket(AF_INET6)", "ok"},
		// Allowed by the filter, refused for want of CAP_NET_RAW, which
		// would let frames past the egress rules (docs/egress.md).
		{"socket(AF_PACKET)", "EPERM"},
		{"socket(NETLINK_ROUTE)", "ok"},
		{"personality(query)", "ok"},
		{"personality(PER_LINUX)", "ok"},
	} {
		if got[tt.call] != tt.want {
			t.Errorf("%s: %q, want %s", tt.call, got[tt.call], tt.want)
		}
	}
	for _, tt := range []struct{ name, script string }{
		{"kernel command line", "cat /proc/cmdline"},
		{"host partitions", "cat /proc/partitions"},
		{"host block devices", "ls /sys/block /sys/class/block /sys/dev/block"},
	} {
		if r := sh(t, s, "root", tt.script+" 2>/dev/null | grep -v ':$' | grep ."); r.stdout != "" {
			t.Errorf("%s visible: %q", tt.name, r.stdout)
		}
	}
	// What the computer's tools still need works.
	if r := sh(t, s, "root", "ip addr show lo >/dev/null && echo ok"); r.stdout != "ok\n" {
		t.Errorf("ip (netlink): %+v", r)
	}
}

// TestInitIgnoresSignalsFromInside is root in a computer signalling its
// init, the agent: none of it may end the computer (the daemon would then
// call a dead computer running), while a stop from the host still ends
// every process gracefully.
func TestInitIgnoresSignalsFromInside(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "mirzakhani", 32)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	for _, sig := range []string{"TERM", "INT", "HUP", "QUIT", "ABRT", "SEGV", "BUS", "USR1", "USR2", "PIPE", "ALRM", "KILL", "STOP"} {
		sh(t, s, "root", "kill -"+sig+" 1")
		if err := ping(context.Background(), s.p.socket); err != nil {
			t.Fatalf("the agent after kill -%s 1: %v", sig, err)
		}
	}
	if r := sh(t, s, "root", "grep State /proc/1/status"); !strings.Contains(r.stdout, "S (sleeping)") && !strings.Contains(r.stdout, "R (running)") {
		t.Errorf("agent %q", r.stdout)
	}

	// A stop still asks every process to end: this one leaves a mark in
	// the workspace when it gets SIGTERM.
	sh(t, s, "ohm", "(trap 'echo term > /home/ohm/got; exit 0' TERM; while :; do sleep 0.05; done) >/dev/null 2>&1 &")
	if err := s.Stop(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(spec.Workspace, "got")); string(data) != "term\n" {
		t.Errorf("a process did not get SIGTERM at stop: %q %v", data, err)
	}
}
