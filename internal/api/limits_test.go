package api

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ohm/client"
)

// exec runs command in computer name as root and returns its stdout,
// failing the test unless it exits 0.
func execOut(t *testing.T, c *client.Client, name, command string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code, err := c.Exec(context.Background(), name, client.ExecRequest{Command: command, User: "root"}, &stdout, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("%s: run %q: code %d, err %v, stderr %q", name, command, code, err, stderr.String())
	}
	return stdout.String()
}

// Info reports the limits in force: read back from the cgroup while the
// computer runs (a change made to the cgroup behind ohm's back shows),
// the asked ones while it is stopped; and whether it has a network.
func TestInfoLimits(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	const name = "limits-info"
	if _, err := c.Create(ctx, client.CreateRequest{Name: name, Template: "minimal", DiskSizeMB: 64, CPUs: 1.5, MemoryMB: 300}, nil); err != nil {
		t.Fatal(err)
	}
	want := client.Limits{CPUs: 1.5, MemoryBytes: 300 << 20, PIDs: 4096}
	comp, err := c.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if comp.Limits == nil || *comp.Limits != want || comp.Network {
		t.Fatalf("running: limits %+v, network %v; want %+v, no network", comp.Limits, comp.Network, want)
	}

	// Change the pids limit in the cgroup itself: info must show it.
	files, _ := filepath.Glob("/sys/fs/cgroup/pids/ohm/" + name + "-*/pids.max")
	if len(files) == 0 {
		files, _ = filepath.Glob("/sys/fs/cgroup/ohm/" + name + "-*/pids.max")
	}
	if len(files) != 1 {
		t.Fatalf("cgroup pids.max of %s: found %v", name, files)
	}
	if err := os.WriteFile(files[0], []byte("777"), 0); err != nil {
		t.Fatal(err)
	}
	if comp, err = c.Get(ctx, name); err != nil || comp.Limits == nil || comp.Limits.PIDs != 777 {
		t.Errorf("after pids.max=777: limits %+v, %v; want the cgroup's 777", comp.Limits, err)
	}

	if err := c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	if comp, err = c.Get(ctx, name); err != nil || comp.Limits == nil || *comp.Limits != want {
		t.Errorf("stopped: limits %+v, %v; want %+v", comp.Limits, err, want)
	}
}

// A computer with a network has slirp4netns's tap0 and a default route
// through it; one without has loopback only. No traffic leaves the host:
// the test only reads the computer's interface and route tables.
func TestNetwork(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Skip("needs slirp4netns (apt-get install slirp4netns)")
	}
	if _, err := c.Create(ctx, client.CreateRequest{Name: "offline", Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, client.CreateRequest{Name: "online", Template: "minimal", DiskSizeMB: 64, Network: true}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		network bool
		ifaces  string
	}{
		{"offline", false, "lo"},
		{"online", true, "lo tap0"},
	} {
		comp, err := c.Get(ctx, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if comp.Network != tc.network {
			t.Errorf("%s: network %v, want %v", tc.name, comp.Network, tc.network)
		}
		// The restart proves the setting is kept in the registry.
		for round := range 2 {
			got := strings.Join(strings.Fields(execOut(t, c, tc.name, "ls /sys/class/net")), " ")
			if got != tc.ifaces {
				t.Errorf("%s (round %d): interfaces %q, want %q", tc.name, round, got, tc.ifaces)
			}
			routes := execOut(t, c, tc.name, "cat /proc/net/route")
			hasDefault := false
			for _, line := range strings.Split(routes, "\n")[1:] {
				if f := strings.Fields(line); len(f) > 1 && f[0] == "tap0" && f[1] == "00000000" {
					hasDefault = true
				}
			}
			if hasDefault != tc.network {
				t.Errorf("%s (round %d): default route via tap0 %v, want %v:\n%s", tc.name, round, hasDefault, tc.network, routes)
			}
			if err := c.Stop(ctx, tc.name); err != nil {
				t.Fatal(err)
			}
			if err := c.Start(ctx, tc.name); err != nil {
				t.Fatal(err)
			}
		}
	}
}
