package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

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

// TestLimitsRejected: a create whose limits are outside sane bounds (or
// the host's size) is refused with one clear invalid_argument error (400)
// naming the limit, and nothing is created. Values like 1e308 or 1e-7 CPUs
// used to give an unlimited CPU quota.
func TestLimitsRejected(t *testing.T) {
	s, dir := newTestServer(t)
	ncpu := runtime.NumCPU()
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	memMB := int64(si.Totalram) * int64(si.Unit) >> 20
	for _, tc := range []struct {
		body string
		want string // in the message
	}{
		{`{"disk_size_mb":64,"cpus":1e308}`, "cpus"},
		{`{"disk_size_mb":64,"cpus":1e-7}`, "cpus"},
		{`{"disk_size_mb":64,"cpus":-1}`, "cpus"},
		{`{"disk_size_mb":64,"cpus":0.001}`, "cpus"},
		{fmt.Sprintf(`{"disk_size_mb":64,"cpus":%d}`, ncpu+1), "cpus"},
		{`{"disk_size_mb":64,"cpus":1e400}`, "bad request body"},
		{`{"disk_size_mb":64,"memory_mb":99999999}`, "memory"},
		{fmt.Sprintf(`{"disk_size_mb":64,"memory_mb":%d}`, memMB+1), "memory"},
		{`{"disk_size_mb":64,"memory_mb":-5}`, "memory"},
		{`{"disk_size_mb":64,"memory_mb":1}`, "memory"},
		{`{"disk_size_mb":64,"memory_mb":1e20}`, "bad request body"},
		{`{"disk_size_mb":-1}`, "disk size"},
		{`{"disk_size_mb":1}`, "disk size"},
		{`{"disk_size_mb":9223372036854775807}`, "disk size"},
		{`{"disk_size_mb":99999999999}`, "disk size"},
	} {
		req := httptest.NewRequest("POST", "/v1/computers", strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var eb client.ErrorAnswer
		json.Unmarshal(rec.Body.Bytes(), &eb)
		msg := eb.Error.Message
		if rec.Code != 400 || eb.Error.Code != client.CodeInvalid || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: %d %s %q, want 400 invalid_argument, one line about %s", tc.body, rec.Code, eb.Error.Code, msg, tc.want)
		}
	}
	if recs, _ := s.m.List(context.Background()); len(recs) != 0 {
		t.Errorf("refused creates left computers: %+v", recs)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "computers")); len(ents) != 0 {
		t.Errorf("refused creates left directories: %v", ents)
	}
}

// TestRootDiskNotOvercommitted: root disks are sparse, so their size is a
// promise of host space. A computer whose disk, with everyone else's,
// could not be filled without eating the workspaces' reserve is refused
// with an error saying how much is left; nothing of it is created.
func TestRootDiskNotOvercommitted(t *testing.T) {
	c, dir := startDaemon(t)
	ctx := context.Background()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	room := (int64(st.Bavail)*st.Bsize - 1<<30) >> 20 // MB, less the workspace reserve
	size := int(room * 6 / 10)
	if size < 256 {
		t.Skipf("only %d MB free in %s", room, dir)
	}
	if _, err := c.Create(ctx, client.CreateRequest{Name: "big", Template: "minimal", DiskSizeMB: size}, nil); err != nil {
		t.Fatalf("create a %d MB disk with %d MB of room: %v", size, room, err)
	}
	_, err := c.Create(ctx, client.CreateRequest{Name: "bigger", Template: "minimal", DiskSizeMB: size}, nil)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != client.CodeInvalid || e.Status != 400 || !strings.Contains(e.Message, "MB free") {
		t.Fatalf("a second %d MB disk with %d MB of room: %v, want invalid_argument saying what is free", size, room, err)
	}
	t.Logf("refused: %s", e.Message)
	if _, err := c.Get(ctx, "bigger"); !isCode(err, client.CodeNotFound) {
		t.Errorf("the refused computer exists: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "computers", "bigger")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused computer left a directory: %v", err)
	}
	// What fits still fits.
	if _, err := c.Create(ctx, client.CreateRequest{Name: "small", Template: "minimal", DiskSizeMB: 64}, nil); err != nil {
		t.Errorf("a 64 MB disk beside it: %v", err)
	}
	// Deleting gives the promise back.
	if err := c.Delete(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, client.CreateRequest{Name: "bigger", Template: "minimal", DiskSizeMB: size}, nil); err != nil {
		t.Errorf("the %d MB disk once the other is deleted: %v", size, err)
	}
}
