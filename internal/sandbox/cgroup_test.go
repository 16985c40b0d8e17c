package sandbox

import (
	"math"
	"testing"
)

// TestSpecLimitsBounded gives Spec values no check let through (a
// computer recorded before its limits were checked): what runc gets is
// bounded by the host, never unlimited and never an overflowed quota.
func TestSpecLimitsBounded(t *testing.T) {
	ncpu := float64(numCPU())
	host := hostMemoryMB()
	if host <= 0 {
		t.Skip("the host's memory is unknown (sysinfo)")
	}
	hostBytes := host << 20
	def := min(int64(DefaultMemoryMB), host) << 20
	for _, tc := range []struct {
		name string
		spec Spec
		want Limits
	}{
		{"defaults", Spec{}, Limits{CPUs: DefaultCPUs, MemoryBytes: def, PIDs: DefaultPIDs}},
		{"in bounds", Spec{CPUs: MinCPUs, MemoryMB: 64, PIDs: 100}, Limits{CPUs: MinCPUs, MemoryBytes: 64 << 20, PIDs: 100}},
		{"huge", Spec{CPUs: 1e308, MemoryMB: 99999999, PIDs: math.MaxInt}, Limits{CPUs: ncpu, MemoryBytes: hostBytes, PIDs: MaxPIDs}},
		{"infinite", Spec{CPUs: math.Inf(1), MemoryMB: math.MaxInt}, Limits{CPUs: ncpu, MemoryBytes: hostBytes, PIDs: DefaultPIDs}},
		{"not a number", Spec{CPUs: math.NaN()}, Limits{CPUs: DefaultCPUs, MemoryBytes: def, PIDs: DefaultPIDs}},
		{"below", Spec{CPUs: 1e-300, MemoryMB: -5, PIDs: -1}, Limits{CPUs: MinCPUs, MemoryBytes: def, PIDs: DefaultPIDs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.spec.Limits(); got != tc.want {
				t.Errorf("Limits() = %+v, want %+v", got, tc.want)
			}
			spec := tc.spec
			spec.Name, spec.StateDir = "bounded", t.TempDir()
			res := ociSpec(spec, spec.paths(), "/agent").Linux.Resources
			quota, period := *res.CPU.Quota, *res.CPU.Period
			if quota <= 0 || float64(quota) > ncpu*float64(period) {
				t.Errorf("cpu.max %d %d: not a quota within the host's %g CPUs", quota, period, ncpu)
			}
			if m := *res.Memory.Limit; m <= 0 || m > hostBytes {
				t.Errorf("memory limit %d: not within the host's %d bytes", m, hostBytes)
			}
		})
	}
}
