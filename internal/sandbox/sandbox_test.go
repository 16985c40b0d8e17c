package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ohm/internal/agent"
	"ohm/internal/filecopy"
	"ohm/internal/mountinfo"
)

// TestMain makes the test binary double as the agent: the tests bind it
// into the computer as /.ohm/ohm and runc starts it as `ohm agent`.
func TestMain(m *testing.M) {
	if len(os.Args) >= 2 && os.Args[1] == "agent" {
		socket := "/.ohm/run/agent.sock"
		if len(os.Args) >= 4 && os.Args[2] == "--socket" {
			socket = os.Args[3]
		}
		if err := agent.Run(context.Background(), socket); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) >= 2 && os.Args[1] == "probe" {
		os.Exit(probe(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func requireRuntime(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sandbox tests need root (loop devices, mounts, runc)")
	}
	for _, bin := range []string{"runc", "mkfs.ext4", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("sandbox tests need %s", bin)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("sandbox tests need /bin/busybox (apt package busybox-static)")
	}
}

// buildRootfs makes a tiny template root: static busybox, the shared
// libraries the test binary (the agent) needs, and users root and ohm.
func buildRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "home", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	copyFile(t, "/bin/busybox", filepath.Join(root, "bin/busybox"), 0o755)
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Fields(string(out)) {
		os.Symlink("busybox", filepath.Join(root, "bin", name))
	}
	exe, _ := os.Executable()
	if out, err := exec.Command("ldd", exe).Output(); err == nil {
		for _, lib := range regexp.MustCompile(`(/[^ ]+\.so[^ ]*)`).FindAllString(string(out), -1) {
			dst := filepath.Join(root, lib)
			os.MkdirAll(filepath.Dir(dst), 0o755)
			real, err := filepath.EvalSymlinks(lib)
			if err != nil {
				t.Fatal(err)
			}
			copyFile(t, real, dst, 0o755)
		}
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nohm:x:1000:1000:ohm:/home/ohm:/bin/sh\n")
	write("etc/group", "root:x:0:\nohm:x:1000:\nusers:x:100:ohm\n")
	return root
}

func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	if err := filecopy.New(src, dst, perm); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or timeout passes, and says which.
// Tests wait on what they can observe with it, never on a fixed sleep.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// newSpec returns the spec of a fresh computer with its disk created.
func newSpec(t *testing.T, name string, diskMB int) Spec {
	t.Helper()
	return newSpecIn(t, name, diskMB, "")
}

// newSpecIn is newSpec with the computer's state and workspace in
// directories under dir ("": test temporary directories).
func newSpecIn(t *testing.T, name string, diskMB int, dir string) Spec {
	t.Helper()
	ws, state := t.TempDir(), t.TempDir()
	if dir != "" {
		ws, state = filepath.Join(dir, "ws"), filepath.Join(dir, "state")
		for _, d := range []string{ws, state} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	os.Chown(ws, 1000, 1000)
	spec := Spec{
		// A static `ohm` binary can stand in for the test binary as agent.
		AgentBinary:  os.Getenv("OHM_TEST_AGENT"),
		Name:         name,
		StateDir:     state,
		TemplateRoot: buildRootfs(t),
		DiskSizeMB:   diskMB,
		Workspace:    ws,
		CPUs:         1,
		MemoryMB:     512,
		PIDs:         256,
		Env:          []string{"OHM_TEST=yes"},
	}
	start := time.Now()
	if err := CreateDisk(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	t.Logf("create disk (%d MB): %v", diskMB, time.Since(start))
	t.Cleanup(func() { Cleanup(context.Background(), spec) })
	return spec
}

func startSandbox(t *testing.T, spec Spec) *Sandbox {
	t.Helper()
	start := time.Now()
	s, err := Start(context.Background(), spec)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(spec.StateDir, "agent.log"))
		t.Fatalf("%v\nagent log:\n%s", err, log)
	}
	t.Logf("start: %v", time.Since(start))
	return s
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, s *Sandbox, req ExecRequest) result {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := s.Exec(context.Background(), req, nil, &out, &errb)
	if err != nil {
		t.Fatalf("exec %q: %v", req.Argv, err)
	}
	return result{out.String(), errb.String(), code}
}

func sh(t *testing.T, s *Sandbox, user, script string) result {
	t.Helper()
	return run(t, s, ExecRequest{Argv: []string{"sh", "-c", script}, User: user})
}

func TestSandbox(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "curie", 64)
	s := startSandbox(t, spec)

	tests := []struct {
		name       string
		user       string
		script     string
		wantOut    string
		wantErr    string
		wantCode   int
		outPattern string
	}{
		{name: "stdout", script: "echo hi", wantOut: "hi\n"},
		{name: "stderr", script: "echo out; echo err >&2", wantOut: "out\n", wantErr: "err\n"},
		{name: "exit code", script: "exit 3", wantCode: 3},
		{name: "killed", script: "kill -9 $$", wantCode: 128 + 9},
		{name: "default user", script: "id -u", wantOut: "1000\n"},
		{name: "ohm", user: "ohm", script: "id -u; echo $HOME $USER; pwd", wantOut: "1000\n/home/ohm ohm\n/home/ohm\n"},
		{name: "root", user: "root", script: "id -u; echo $HOME", wantOut: "0\n/root\n"},
		{name: "supplementary groups", script: "id -G", wantOut: "1000 100\n"},
		{name: "hostname", script: "hostname; cat /etc/hostname", wantOut: "curie\ncurie\n"},
		{name: "computer env", script: "echo $OHM_TEST", wantOut: "yes\n"},
		{name: "pid 1 is the agent", script: "cat /proc/1/cmdline | tr '\\0' ' '", wantOut: "/.ohm/ohm agent --socket /.ohm/run/agent.sock "},
		// The agent, this sh, and ps: nothing of the host.
		{name: "host processes invisible", script: "ps -o pid= > /tmp/ps; wc -l < /tmp/ps", outPattern: `^\s*3\n$`},
		// Off so that sudo's setuid works (SECURITY.md says why).
		{name: "setuid allowed", script: "grep NoNewPrivs /proc/self/status", outPattern: `NoNewPrivs:\s*0\n`},
		{name: "loopback only", script: "ls /sys/class/net", wantOut: "lo\n"},
		{name: "sys read-only", user: "root", script: "touch /sys/x 2>/dev/null || echo ro", wantOut: "ro\n"},
		{name: "command not found", script: "exec nosuchcommand", wantCode: 127, outPattern: ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sh(t, s, tt.user, tt.script)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tt.wantCode, r.stderr)
			}
			if tt.outPattern != "" {
				if !regexp.MustCompile(tt.outPattern).MatchString(r.stdout) {
					t.Errorf("stdout %q does not match %q", r.stdout, tt.outPattern)
				}
			} else if tt.wantCode == 0 && r.stdout != tt.wantOut {
				t.Errorf("stdout %q, want %q", r.stdout, tt.wantOut)
			}
			if tt.wantErr != "" && r.stderr != tt.wantErr {
				t.Errorf("stderr %q, want %q", r.stderr, tt.wantErr)
			}
		})
	}

	t.Run("direct exec not found", func(t *testing.T) {
		r := run(t, s, ExecRequest{Argv: []string{"nosuchcommand"}})
		if r.code != 127 || !strings.Contains(r.stderr, "nosuchcommand") {
			t.Errorf("got %d %q, want 127 and a message", r.code, r.stderr)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		var out bytes.Buffer
		code, err := s.Exec(context.Background(), ExecRequest{Argv: []string{"tr", "a-z", "A-Z"}},
			strings.NewReader("hello\n"), &out, io.Discard)
		if err != nil || code != 0 || out.String() != "HELLO\n" {
			t.Errorf("got %d %v %q", code, err, out.String())
		}
	})

	t.Run("tty", func(t *testing.T) {
		var out bytes.Buffer
		code, err := s.Exec(context.Background(), ExecRequest{
			Argv: []string{"sh", "-c", "test -t 0 && test -t 1 && stty size"},
			TTY:  true, Size: WindowSize{Rows: 42, Cols: 117},
		}, nil, &out, io.Discard)
		if err != nil || code != 0 || !strings.Contains(out.String(), "42 117") {
			t.Errorf("got %d %v %q", code, err, out.String())
		}
	})

	t.Run("workspace", func(t *testing.T) {
		r := sh(t, s, "", "echo saved > /home/ohm/state.txt && stat -c %u /home/ohm/state.txt")
		if r.code != 0 || r.stdout != "1000\n" {
			t.Fatalf("got %+v", r)
		}
		data, err := os.ReadFile(filepath.Join(spec.Workspace, "state.txt"))
		if err != nil || string(data) != "saved\n" {
			t.Errorf("host sees %q, %v", data, err)
		}
	})

	t.Run("root disk size", func(t *testing.T) {
		r := sh(t, s, "", "df -k / | tail -1")
		f := strings.Fields(r.stdout)
		if len(f) < 2 {
			t.Fatalf("df: %+v", r)
		}
		kb, _ := strconv.Atoi(f[1])
		if kb != 64*1024 {
			t.Errorf("df / shows %d KiB, want exactly 64 MiB", kb)
		}
		u, err := Usage(context.Background(), spec)
		if err != nil || u.Size != 64<<20 || u.Used == 0 {
			t.Errorf("usage %+v %v", u, err)
		}
	})

	t.Run("disk full", func(t *testing.T) {
		r := sh(t, s, "root", "dd if=/dev/zero of=/big bs=1M count=200 2>&1; echo rc=$?")
		if !strings.Contains(r.stdout, "No space left on device") {
			t.Errorf("filling the root disk: %q, want ENOSPC", r.stdout)
		}
		r = sh(t, s, "", "echo still > /home/ohm/ok && cat /home/ohm/ok")
		if r.stdout != "still\n" {
			t.Errorf("workspace after root disk full: %+v", r)
		}
		sh(t, s, "root", "rm /big && sync")
		// discard hands the freed blocks back: the image becomes sparse
		// again (the kernel discards a moment after the commit).
		var alloc int64
		eventually(30*time.Second, func() bool {
			var st syscall.Stat_t
			if err := syscall.Stat(spec.paths().image, &st); err != nil {
				t.Fatal(err)
			}
			alloc = st.Blocks * 512
			return alloc < 16<<20
		})
		if alloc >= 16<<20 {
			t.Errorf("image still allocates %d MiB after the file was removed", alloc>>20)
		}
		if err := os.WriteFile(filepath.Join(t.TempDir(), "x"), []byte("host ok"), 0o644); err != nil {
			t.Errorf("host write: %v", err)
		}
	})

	t.Run("streaming", func(t *testing.T) {
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			_, err := s.Exec(context.Background(), ExecRequest{Argv: []string{"sh", "-c", "echo first; sleep 2; echo second"}}, nil, pw, io.Discard)
			pw.CloseWithError(err)
			errc <- err
		}()
		start := time.Now()
		buf := make([]byte, 64)
		n, err := pr.Read(buf)
		if err != nil || string(buf[:n]) != "first\n" {
			t.Fatalf("first read %q %v", buf[:n], err)
		}
		if d := time.Since(start); d >= 2*time.Second {
			t.Errorf("first line came after %v: not streamed", d)
		}
		go io.Copy(io.Discard, pr)
		<-errc
	})

	t.Run("timeout", func(t *testing.T) {
		r := run(t, s, ExecRequest{Argv: []string{"sh", "-c", "sleep 60 & sleep 60"}, Timeout: 200 * time.Millisecond})
		if r.code != 128+9 {
			t.Errorf("exit code %d, want %d", r.code, 128+9)
		}
		// The whole process group is gone, not just the shell.
		// The kill is sent before the exit code answers; the processes
		// may take a moment to be gone.
		var left string
		eventually(30*time.Second, func() bool {
			left = strings.TrimSpace(sh(t, s, "", "ps -o comm= | grep -c sleep").stdout)
			return left == "0"
		})
		if left != "0" {
			t.Errorf("sleep processes left: %q", left)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := s.Exec(ctx, ExecRequest{Argv: []string{"sleep", "60"}}, nil, io.Discard, io.Discard)
		if err == nil {
			t.Error("cancelled exec returned no error")
		}
	})

	t.Run("attach", func(t *testing.T) {
		a, err := Attach(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		if r := sh(t, a, "", "echo attached"); r.stdout != "attached\n" {
			t.Errorf("got %+v", r)
		}
	})

	// Round trip of `true`, the figure the run target is about.
	const n = 20
	begin := time.Now()
	for range n {
		if r := run(t, s, ExecRequest{Argv: []string{"true"}}); r.code != 0 {
			t.Fatal(r)
		}
	}
	t.Logf("exec true: %v per round trip", time.Since(begin)/n)

	sh(t, s, "root", "echo kept > /root/persist; sleep 1000 >/dev/null 2>&1 &")
	begin = time.Now()
	if err := s.Stop(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop: %v", time.Since(begin))
	if err := s.Stop(context.Background(), time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if mountinfo.IsMountpoint(spec.paths().disk) || mountinfo.IsMountpoint(spec.paths().rootfs) {
		t.Error("stop left mounts behind")
	}
	if _, err := Attach(context.Background(), spec); err == nil {
		t.Error("attach to a stopped computer succeeded")
	}
	if u, err := Usage(context.Background(), spec); err != nil || u.Size != 64<<20 || u.Used != 0 {
		t.Errorf("usage of a stopped computer: %+v %v", u, err)
	}

	s = startSandbox(t, spec)
	if r := sh(t, s, "root", "cat /root/persist"); r.stdout != "kept\n" {
		t.Errorf("root fs after restart: %+v", r)
	}
	if _, err := Start(context.Background(), spec); err == nil {
		t.Error("start of a running computer succeeded")
	}
	if err := s.Stop(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestStopKillsStubbornProcesses(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "hopper", 32)
	s := startSandbox(t, spec)
	sh(t, s, "root", "trap '' TERM; (trap '' TERM; sleep 1000) >/dev/null 2>&1 &")
	begin := time.Now()
	if err := s.Stop(context.Background(), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop with a process ignoring SIGTERM: %v", time.Since(begin))
	if mountinfo.IsMountpoint(spec.paths().disk) {
		t.Error("root disk still mounted")
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "lovelace", 32)
	startSandbox(t, spec) // and forget it, as a crashed daemon would
	if err := Cleanup(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if mountinfo.IsMountpoint(spec.paths().disk) {
		t.Error("root disk still mounted")
	}
	s := startSandbox(t, spec)
	s.Stop(context.Background(), time.Second)
}

func TestCreateDiskErrors(t *testing.T) {
	requireRuntime(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		mb   int
	}{{"zero", 0}, {"negative", -1}, {"larger than the host", 1 << 40}} {
		t.Run(tt.name, func(t *testing.T) {
			err := CreateDisk(context.Background(), Spec{Name: "x", StateDir: dir, DiskSizeMB: tt.mb})
			if err == nil {
				t.Fatal("no error")
			}
			if _, err := os.Stat(filepath.Join(dir, "root.img")); err == nil {
				t.Error("image left behind")
			}
		})
	}
}

func TestLimits(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "noether", 32)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)
	for _, tt := range []struct{ file, want string }{
		{"/sys/fs/cgroup/memory/memory.limit_in_bytes", strconv.Itoa(512 << 20)},
		{"/sys/fs/cgroup/pids/pids.max", "256"},
		{"/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000"},
	} {
		r := sh(t, s, "", "cat "+tt.file)
		if strings.TrimSpace(r.stdout) != tt.want {
			t.Errorf("%s = %q, want %s (stderr %q)", tt.file, r.stdout, tt.want, r.stderr)
		}
	}
	r := sh(t, s, "root", "grep CapBnd /proc/self/status")
	f := strings.Fields(r.stdout)
	if len(f) != 2 {
		t.Fatalf("CapBnd: %+v", r)
	}
	caps, _ := strconv.ParseUint(f[1], 16, 64)
	const capSysAdmin, capNetAdmin, capSysModule, capSysPtrace = 21, 12, 16, 19
	for _, c := range []uint{capSysAdmin, capNetAdmin, capSysModule, capSysPtrace} {
		if caps&(1<<c) != 0 {
			t.Errorf("capability %d in the bounding set %x", c, caps)
		}
	}
}

func TestDynamicAgentWithoutLibc(t *testing.T) {
	requireRuntime(t)
	exe, _ := os.Executable()
	if out, err := exec.Command("ldd", exe).CombinedOutput(); err != nil || strings.Contains(string(out), "not a dynamic") {
		t.Skip("the test binary is static")
	}
	spec := newSpec(t, "turing", 32)
	spec.TemplateRoot = t.TempDir() // no loader in it
	spec.AgentBinary = exe
	_, err := Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("got %v, want a clear error about the dynamically linked agent", err)
	}
	if mountinfo.IsMountpoint(spec.paths().disk) {
		t.Error("failed start left the root disk mounted")
	}
}

// TestRootIsDevRoot checks that the computer's / reads as a disk, /dev/root,
// in df and /proc/mounts, as on a machine booted from one.
func TestRootIsDevRoot(t *testing.T) {
	requireRuntime(t)
	s := startSandbox(t, newSpec(t, "kovalevskaya", 32))
	defer s.Stop(context.Background(), time.Second)
	if r := sh(t, s, "ohm", "df -h / | awk 'NR == 2 {print $1}'; awk '$2 == \"/\" {print $1}' /proc/mounts"); r.stdout != "/dev/root\n/dev/root\n" {
		t.Errorf("filesystem of / in df and /proc/mounts: %q, want /dev/root", r.stdout)
	}
}
