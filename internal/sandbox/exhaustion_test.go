package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLimitsInForce(t *testing.T) {
	requireRuntime(t)
	v, err := DetectCgroups()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host runs %v", v)

	spec := newSpec(t, "bohr", 32)
	spec.CPUs, spec.MemoryMB, spec.PIDs = 0.5, 300, 100
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)
	want := Limits{CPUs: 0.5, MemoryBytes: 300 << 20, PIDs: 100}
	if got := spec.Limits(); got != want {
		t.Errorf("Spec.Limits %+v, want %+v", got, want)
	}
	got, err := CurrentLimits(spec)
	if err != nil || got != want {
		t.Errorf("CurrentLimits %+v %v, want %+v", got, err, want)
	}
	// Read from inside, through the computer's cgroup namespace.
	script := "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
	wantIn := "314572800\n100\n50000\n"
	if v == CgroupV2 {
		script = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"
		wantIn = "314572800\n100\n50000 100000\n"
	}
	if r := sh(t, s, "ohm", script); r.stdout != wantIn {
		t.Errorf("inside: %q (stderr %q), want %q", r.stdout, r.stderr, wantIn)
	}

	// Nothing given: the defaults, never unlimited.
	def := newSpec(t, "bragg", 32)
	def.CPUs, def.MemoryMB, def.PIDs = 0, 0, 0
	ds := startSandbox(t, def)
	defer ds.Stop(context.Background(), time.Second)
	got, err = CurrentLimits(def)
	want = Limits{CPUs: DefaultCPUs, MemoryBytes: DefaultMemoryMB << 20, PIDs: DefaultPIDs}
	if err != nil || got != want {
		t.Errorf("default limits %+v %v, want %+v", got, err, want)
	}

	ds.Stop(context.Background(), time.Second)
	if _, err := CurrentLimits(def); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("limits of a stopped computer: %v", err)
	}
}

// cgroupFile is the host path of a cgroup file of spec's computer.
func cgroupFile(t *testing.T, spec Spec, controller, v1name, v2name string) string {
	t.Helper()
	v, err := DetectCgroups()
	if err != nil {
		t.Fatal(err)
	}
	cg := cgroupPath(spec, spec.paths())
	if v == CgroupV2 {
		return filepath.Join("/sys/fs/cgroup", cg, v2name)
	}
	m, err := v1Mount(controller)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(m, cg, v1name)
}

func readInt(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// eventCount reads "NAME N" from a cgroup events file.
func eventCount(t *testing.T, path, name string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func TestForkBomb(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "fermi", 32)
	spec.PIDs = 64
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	events := cgroupFile(t, spec, "pids", "pids.events", "pids.events")
	current := cgroupFile(t, spec, "pids", "pids.current", "pids.current")
	procs := cgroupFile(t, spec, "pids", "cgroup.procs", "cgroup.procs")
	r := run(t, s, ExecRequest{
		Argv:    []string{"sh", "-c", "b() { b | b & }; b; sleep 100"},
		Timeout: 3 * time.Second,
	})
	t.Logf("fork bomb: exit %d, %d forks refused", r.code, eventCount(t, events, "max"))
	if eventCount(t, events, "max") == 0 {
		t.Error("the PID limit was never hit")
	}
	if n := readInt(t, current); n > spec.PIDs {
		t.Errorf("%d tasks, over the limit of %d", n, spec.PIDs)
	}
	// Once the bomb is gone (the exec's timeout killed its process group)
	// the computer works again.
	left := 0
	eventually(30*time.Second, func() bool {
		data, err := os.ReadFile(procs)
		if err != nil {
			t.Fatal(err)
		}
		left = len(strings.Fields(string(data)))
		return left == 1 // the agent alone
	})
	if left != 1 {
		t.Errorf("%d processes left after the bomb", left)
	}
	if r := sh(t, s, "ohm", "echo alive"); r.stdout != "alive\n" {
		t.Errorf("after the fork bomb: %+v", r)
	}
	if r := sh(t, s, "ohm", "for i in 1 2 3 4 5 6 7 8; do sleep 0 & done; wait; echo forks"); r.stdout != "forks\n" {
		t.Errorf("forking after the fork bomb: %+v", r)
	}
}

func TestMemoryHog(t *testing.T) {
	requireRuntime(t)
	spec := newSpec(t, "dirac", 32)
	spec.MemoryMB = 128
	s := startSandbox(t, spec)
	defer s.Stop(context.Background(), time.Second)

	sh(t, s, "ohm", "sleep 1000 >/dev/null 2>&1 &")
	r := run(t, s, ExecRequest{Argv: []string{probeBinary(t, spec), "probe", "hog", "1024"}})
	if r.code != 128+9 {
		t.Errorf("memory hog: exit %d (%q), want killed (137)", r.code, r.stdout)
	}
	// Only the hog: the agent and the other process live on.
	if r := sh(t, s, "ohm", "ps -o comm= | grep -qx sleep && echo alive"); r.stdout != "alive\n" {
		t.Errorf("after the OOM kill: %+v", r)
	}
	if err := ping(context.Background(), spec.paths().socket); err != nil {
		t.Errorf("agent after the OOM kill: %v", err)
	}
	if v, _ := DetectCgroups(); v == CgroupV1 {
		if n := eventCount(t, cgroupFile(t, spec, "memory", "memory.oom_control", ""), "oom_kill"); n == 0 {
			t.Error("no OOM kill counted in the computer's cgroup")
		}
	} else if n := eventCount(t, cgroupFile(t, spec, "memory", "", "memory.events"), "oom_kill"); n == 0 {
		t.Error("no OOM kill counted in the computer's cgroup")
	}
}
