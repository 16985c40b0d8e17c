package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNetwork starts a computer with outbound access and checks its
// interface and route, and that the host's loopback stays out of reach.
// It sends nothing to any address off this machine.
func TestNetwork(t *testing.T) {
	requireRuntime(t)
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Skip("network tests need slirp4netns (apt package slirp4netns)")
	}
	spec := newSpec(t, "shannon", 32)
	spec.Network = true
	s := startSandbox(t, spec)

	if r := sh(t, s, "root", "ls /sys/class/net | sort | tr '\\n' ' '"); r.stdout != "lo tap0 " {
		t.Errorf("interfaces %q, want lo and tap0", r.stdout)
	}
	// Default route (destination 0) through the slirp gateway 10.0.2.2
	// (0202000A in /proc/net/route's little-endian hex).
	if r := sh(t, s, "root", "awk '$2 == \"00000000\" {print $1, $3}' /proc/net/route"); r.stdout != "tap0 0202000A\n" {
		t.Errorf("default route %q, want via 10.0.2.2 on tap0", r.stdout)
	}
	if r := sh(t, s, "root", "cat /etc/resolv.conf"); !strings.HasPrefix(r.stdout, "nameserver "+slirpResolver+"\n") {
		t.Errorf("resolv.conf %q", r.stdout)
	}
	port, accepted := hostListener(t)
	for _, addr := range []string{"127.0.0.1", slirpGateway} {
		r := sh(t, s, "ohm", fmt.Sprintf("nc -w 2 %s %d </dev/null 2>&1", addr, port))
		if r.code == 0 || accepted.Load() != 0 {
			t.Errorf("reached the host's 127.0.0.1:%d through %s: %+v", port, addr, r)
		}
	}
	// Still no capability to reconfigure the network from inside.
	if r := sh(t, s, "root", "ip addr add 10.0.2.99/24 dev tap0 2>&1"); r.code == 0 {
		t.Errorf("root changed the tap address: %+v", r)
	}

	data, err := os.ReadFile(spec.paths().slirpPid)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(data))
	if err := s.Stop(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "slirp4netns" {
			t.Errorf("slirp4netns (pid %d) outlived the computer", pid)
		}
	}

	// Restarted, it has its network again.
	s = startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)
	if r := sh(t, s, "root", "ls /sys/class/net | grep -c tap0"); r.stdout != "1\n" {
		t.Errorf("after restart: %+v", r)
	}
}
