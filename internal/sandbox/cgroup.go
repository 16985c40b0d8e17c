package sandbox

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"

	"golang.org/x/sys/unix"
)

// Limits are a computer's resource limits.
type Limits struct {
	CPUs        float64 // CPU time per second of wall-clock time
	MemoryBytes int64   // memory (and memory+swap: swap adds nothing)
	PIDs        int64   // processes and threads
}

// Bounds of the limits a computer gets (Spec.Limits). The upper ones of
// CPU and memory are the host's size: a limit above it limits nothing.
const (
	MinCPUs = 0.01    // a CFS quota of 1 ms per 100 ms period
	MaxPIDs = 1 << 16 // processes and threads; the daemon asks for DefaultPIDs
)

// Limits are the limits spec asks for, with the defaults filled in for
// what it leaves at zero, and bounded: CPUs between MinCPUs and the
// host's, memory at most the host's RAM, PIDs at most MaxPIDs. Whatever a
// Spec holds (a record written before its values were checked, a value
// that is not a number), a computer never runs unlimited, nor with a CPU
// quota that overflows the cgroup's.
func (s Spec) Limits() Limits {
	l := Limits{CPUs: s.CPUs, PIDs: int64(s.PIDs)}
	if math.IsNaN(l.CPUs) || l.CPUs <= 0 {
		l.CPUs = DefaultCPUs
	}
	l.CPUs = min(max(l.CPUs, MinCPUs), float64(numCPU()))
	memMB := int64(s.MemoryMB)
	if memMB <= 0 {
		memMB = DefaultMemoryMB
	}
	if host := hostMemoryMB(); host > 0 {
		memMB = min(memMB, host)
	}
	l.MemoryBytes = min(memMB, math.MaxInt64>>20) << 20
	if l.PIDs <= 0 {
		l.PIDs = DefaultPIDs
	}
	l.PIDs = min(l.PIDs, MaxPIDs)
	return l
}

// hostMemoryMB is the host's RAM in MB (0 if unknown).
func hostMemoryMB() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit) >> 20
}

// CgroupVersion is the cgroup hierarchy computers' limits live in.
type CgroupVersion int

// The cgroup hierarchies.
const (
	CgroupV1 CgroupVersion = 1 // per-controller hierarchies (a hybrid host counts as v1)
	CgroupV2 CgroupVersion = 2 // the unified hierarchy
)

func (v CgroupVersion) String() string { return "cgroup v" + strconv.Itoa(int(v)) }

// controllers are the cgroup controllers a computer's limits need.
var controllers = []string{"cpu", "memory", "pids"}

// DetectCgroups tells which cgroup hierarchy the host runs, the way runc
// decides it (/sys/fs/cgroup is cgroup2 or not), and fails when a
// controller the limits need is missing: a computer never runs unlimited.
func DetectCgroups() (CgroupVersion, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return 0, fmt.Errorf("cgroups: %w", err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			return 0, fmt.Errorf("cgroups: %w", err)
		}
		have := strings.Fields(string(data))
		for _, c := range controllers {
			if !slices.Contains(have, c) {
				return 0, fmt.Errorf("cgroups: the cgroup v2 hierarchy has no %s controller, so computers could not be limited", c)
			}
		}
		return CgroupV2, nil
	}
	for _, c := range controllers {
		if _, err := v1Mount(c); err != nil {
			return 0, err
		}
	}
	return CgroupV1, nil
}

// v1Mount finds where controller's cgroup v1 hierarchy is mounted.
func v1Mount(controller string) (string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup"))
	if err != nil {
		return "", fmt.Errorf("cgroups: %w", err)
	}
	for _, m := range ms {
		if slices.Contains(strings.Split(m.VFSOptions, ","), controller) {
			return m.Mountpoint, nil
		}
	}
	return "", fmt.Errorf("cgroups: no cgroup v1 hierarchy has the %s controller, so computers could not be limited", controller)
}

// swapAccounted reports whether the memory controller accounts swap (a v1
// host booted without swapaccount has no memory.memsw files, and runc
// fails on a swap limit there). On v2 runc skips a missing swap file.
func swapAccounted() bool {
	v, err := DetectCgroups()
	if err != nil || v == CgroupV2 {
		return true
	}
	m, err := v1Mount("memory")
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(m, "memory.memsw.limit_in_bytes"))
	return err == nil
}

// CurrentLimits reads the limits in force for spec's running computer from
// its cgroup.
func CurrentLimits(spec Spec) (Limits, error) {
	v, err := DetectCgroups()
	if err != nil {
		return Limits{}, err
	}
	cg := cgroupPath(spec, spec.paths())
	var l Limits
	if v == CgroupV2 {
		dir := filepath.Join("/sys/fs/cgroup", cg)
		if l.MemoryBytes, err = readLimit(filepath.Join(dir, "memory.max")); err == nil {
			if l.PIDs, err = readLimit(filepath.Join(dir, "pids.max")); err == nil {
				l.CPUs, err = readCPUMax(filepath.Join(dir, "cpu.max"))
			}
		}
	} else {
		dirs := map[string]string{}
		for _, c := range controllers {
			m, err := v1Mount(c)
			if err != nil {
				return Limits{}, err
			}
			dirs[c] = filepath.Join(m, cg)
		}
		if l.MemoryBytes, err = readLimit(filepath.Join(dirs["memory"], "memory.limit_in_bytes")); err == nil {
			if l.PIDs, err = readLimit(filepath.Join(dirs["pids"], "pids.max")); err == nil {
				var quota, period int64
				if quota, err = readLimit(filepath.Join(dirs["cpu"], "cpu.cfs_quota_us")); err == nil {
					if period, err = readLimit(filepath.Join(dirs["cpu"], "cpu.cfs_period_us")); err == nil {
						l.CPUs = cpus(quota, period)
					}
				}
			}
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Limits{}, fmt.Errorf("limits of %s: not running", spec.Name)
		}
		return Limits{}, fmt.Errorf("limits of %s: %w", spec.Name, err)
	}
	return l, nil
}

// readLimit reads a cgroup file holding one number, or "max" or -1 for
// none (returned as math.MaxInt64).
func readLimit(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" || s == "-1" {
		return math.MaxInt64, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// readCPUMax reads cgroup v2's cpu.max: "QUOTA PERIOD" or "max PERIOD".
func readCPUMax(path string) (float64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, fmt.Errorf("%s: malformed %q", path, data)
	}
	period, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if f[0] == "max" {
		return cpus(-1, period), nil
	}
	quota, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return cpus(quota, period), nil
}

// cpus turns a CFS quota and period into a CPU count; no quota is the
// whole host.
func cpus(quota, period int64) float64 {
	if quota <= 0 || quota == math.MaxInt64 || period <= 0 {
		return float64(numCPU())
	}
	return float64(quota) / float64(period)
}
