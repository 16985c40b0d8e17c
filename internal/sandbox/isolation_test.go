package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hostListener listens on the host's loopback and counts the connections
// it accepts: a computer must never reach it.
func hostListener(t *testing.T) (port int, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// TestIsolation runs, as root inside a computer, what an escape would try.
func TestIsolation(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "meitner", 64)
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	t.Run("namespaces", func(t *testing.T) {
		for _, ns := range []string{"mnt", "pid", "uts", "ipc", "net", "cgroup"} {
			host, err := os.Readlink("/proc/self/ns/" + ns)
			if err != nil {
				t.Fatal(err)
			}
			r := sh(t, s, "root", "readlink /proc/1/ns/"+ns+"; readlink /proc/self/ns/"+ns)
			f := strings.Fields(r.stdout)
			if len(f) != 2 || f[0] != f[1] {
				t.Errorf("%s: agent and command in %q", ns, r.stdout)
				continue
			}
			if f[0] == host {
				t.Errorf("%s namespace is the host's (%s)", ns, host)
			}
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		var want uint64
		for _, c := range defaultCaps {
			want |= 1 << capNumbers[c]
		}
		r := sh(t, s, "root", "grep -E '^Cap(Eff|Bnd|Inh|Amb)' /proc/self/status")
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			f := strings.Fields(line)
			got, _ := strconv.ParseUint(f[1], 16, 64)
			switch f[0] {
			case "CapEff:", "CapBnd:":
				if got != want {
					t.Errorf("%s %x, want %x", f[0], got, want)
				}
			default:
				if got != 0 {
					t.Errorf("%s %x, want none", f[0], got)
				}
			}
		}
		for _, c := range []string{"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_RAWIO", "CAP_DAC_READ_SEARCH"} {
			if want&(1<<capNumbers[c]) != 0 {
				t.Errorf("%s granted", c)
			}
		}
	})

	t.Run("seccomp", func(t *testing.T) {
		// The agent itself runs under the filter, and so does all it starts.
		r := sh(t, s, "root", "grep -h '^Seccomp:' /proc/1/status /proc/self/status")
		if r.stdout != "Seccomp:\t2\nSeccomp:\t2\n" {
			t.Errorf("seccomp mode of agent and command: %q, want filter (2)", r.stdout)
		}
		r = run(t, s, ExecRequest{Argv: []string{probeBinary(t, spec), "probe", "syscalls"}, User: "root"})
		if r.code != 0 {
			t.Fatalf("probe: %+v", r)
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if i := strings.LastIndexByte(line, ' '); i > 0 {
				got[line[:i]] = line[i+1:]
			}
		}
		for call, errno := range got {
			want := "EPERM"
			switch call {
			case "clone3":
				want = "ENOSYS" // so that libc falls back to clone
			case "getpid":
				want = "ok"
			}
			if errno != want {
				t.Errorf("%s: %s, want %s", call, errno, want)
			}
		}
		if len(got) < 30 {
			t.Errorf("probe printed %d results: %q", len(got), r.stdout)
		}
	})

	for _, tt := range []struct {
		name, user, script string
	}{
		{"mount", "root", "mount -t tmpfs none /mnt"},
		{"remount root read-write", "root", "mount -o remount,rw /sys"},
		{"nested user namespace", "root", "unshare -U true"},
		{"nested user namespace as ohm", "ohm", "unshare -U -r true"},
		{"new mount namespace", "root", "unshare -m true"},
		{"load a module", "root", "insmod /nonexistent.ko || modprobe -q dummy"},
		{"write /proc/sys", "root", "echo 1 > /proc/sys/kernel/sysrq"},
		{"write /proc/sys/net", "root", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
		{"sysrq", "root", "echo h > /proc/sysrq-trigger"},
		{"write /sys", "root", "echo /tmp/x > /sys/kernel/uevent_helper"},
		{"write the cgroup limits", "root", "if test -d /sys/fs/cgroup/pids; then echo -1 > /sys/fs/cgroup/pids/pids.max; else echo max > /sys/fs/cgroup/pids.max; fi"},
		{"mknod block device", "root", "mknod /tmp/sda b 8 0"},
		{"mknod memory device", "root", "mknod /tmp/mem c 1 1"},
		{"change hostname", "root", "hostname evil"},
		{"network interface", "root", "ip link add dummy0 type dummy"},
		{"host clock", "root", "date -s 2000-01-01 >/dev/null 2>&1; test $(date +%Y) = 2000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := sh(t, s, tt.user, "("+tt.script+") 2>&1")
			if r.code == 0 {
				t.Errorf("%q succeeded: %q", tt.script, r.stdout)
			}
		})
	}

	t.Run("fifo still works", func(t *testing.T) {
		if r := sh(t, s, "root", "mkfifo /tmp/fifo && rm /tmp/fifo"); r.code != 0 {
			t.Errorf("mkfifo: %+v", r)
		}
	})

	t.Run("masked proc", func(t *testing.T) {
		for _, f := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"} {
			r := sh(t, s, "root", "test ! -e "+f+" || wc -c < "+f)
			if n := strings.TrimSpace(r.stdout); n != "" && n != "0" {
				t.Errorf("%s readable: %s bytes", f, n)
			}
		}
		r := sh(t, s, "root", "grep -E ' /proc/(sys|sysrq-trigger|bus|fs|irq) ' /proc/self/mounts | grep -vc ' ro,'")
		if strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("writable /proc paths: %q", r.stdout)
		}
		// On cgroup v1 runc puts the controllers under a tmpfs of the
		// computer's own, writable but private; each controller is ro.
		r = sh(t, s, "root", "grep -E ' /sys | /sys/fs/cgroup[ /].* cgroup2? ' /proc/self/mounts | grep -vc ' ro,'")
		if strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("/sys not read-only: %q", r.stdout)
		}
	})

	t.Run("minimal dev", func(t *testing.T) {
		r := sh(t, s, "root", "find /dev -type c -o -type b | sort")
		got := strings.Fields(r.stdout)
		want := []string{"/dev/full", "/dev/null", "/dev/pts/ptmx", "/dev/random", "/dev/tty", "/dev/urandom", "/dev/zero"}
		sort.Strings(want)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("device nodes %q, want %q", got, want)
		}
		for _, d := range []string{"pts", "shm"} {
			if r := sh(t, s, "root", "test -d /dev/"+d); r.code != 0 {
				t.Errorf("no /dev/%s", d)
			}
		}
		// A node made on the host side would still be refused by the
		// device cgroup: write one into the computer's root and open it.
		rootDev := filepath.Join(spec.paths().rootfs, "tmp", "hostmade")
		if err := mknodChar(rootDev, 1, 1); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(rootDev)
		if r := sh(t, s, "root", "head -c 1 /tmp/hostmade"); r.code == 0 {
			t.Errorf("opened /dev/mem through a node from outside: %+v", r)
		}
	})

	t.Run("host files", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(secret, []byte("host secret"), 0o644)
		for _, path := range []string{secret, "/etc/shadow", spec.paths().image, "/proc/1/root/etc/shadow"} {
			r := sh(t, s, "root", "cat "+path)
			if r.code == 0 || strings.Contains(r.stdout, "host secret") || strings.Contains(r.stdout, "root:") {
				t.Errorf("read %s: %+v", path, r)
			}
		}
	})

	t.Run("host processes", func(t *testing.T) {
		pid := strconv.Itoa(os.Getpid())
		r := sh(t, s, "root", "kill -0 "+pid+" 2>/dev/null && echo signalled; ls /proc | grep -c '^[0-9]'")
		if strings.Contains(r.stdout, "signalled") {
			t.Errorf("signalled host pid %s", pid)
		}
		if n, _ := strconv.Atoi(strings.TrimSpace(lastLine(r.stdout))); n > 5 {
			t.Errorf("%d processes visible", n)
		}
		// The host's own view of PID 1 (init) is not the computer's.
		if r := sh(t, s, "root", "cat /proc/1/cmdline | tr '\\0' ' '"); !strings.HasPrefix(r.stdout, agentBinary) {
			t.Errorf("pid 1 is %q", r.stdout)
		}
	})

	t.Run("host loopback", func(t *testing.T) {
		port, accepted := hostListener(t)
		r := sh(t, s, "root", fmt.Sprintf("nc -w 2 127.0.0.1 %d </dev/null 2>&1", port))
		if r.code == 0 || accepted.Load() != 0 {
			t.Errorf("reached the host's 127.0.0.1:%d: %+v", port, r)
		}
		if r := sh(t, s, "root", "ls /sys/class/net"); r.stdout != "lo\n" {
			t.Errorf("interfaces %q, want lo only", r.stdout)
		}
	})

	t.Run("symlinks and dot-dot through the workspace", func(t *testing.T) {
		os.WriteFile("/tmp/ohm-isolation-marker", []byte("host"), 0o644)
		defer os.Remove("/tmp/ohm-isolation-marker")
		r := sh(t, s, "ohm", `cd /home/ohm && ln -sf /etc/passwd pw && ln -sf ../../../../../../tmp/ohm-isolation-marker mk &&
cat pw; cat mk 2>/dev/null || echo no marker; cat /home/ohm/../../../etc/hostname; ls -a /home/ohm/../../.. | grep -c '^.ohm$'`)
		want := "root:x:0:0:root:/root:/bin/sh\nohm:x:1000:1000:ohm:/home/ohm:/bin/sh\nno marker\nmeitner\n1\n"
		if r.stdout != want {
			t.Errorf("got %q (stderr %q), want the computer's files only: %q", r.stdout, r.stderr, want)
		}
		// The workspace on the host holds the links as links; host-side
		// tools must not follow them (the computer's cp does that inside).
		if target, err := os.Readlink(filepath.Join(spec.Workspace, "pw")); err != nil || target != "/etc/passwd" {
			t.Errorf("host sees %q %v", target, err)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// capNumbers are the capability numbers of linux/capability.h.
var capNumbers = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
	"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
	"CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27,
	"CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31,
}
