package computer

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"

	"ohm/internal/sandbox"
)

// specRuntime is a fakeRuntime that keeps the specs it starts.
type specRuntime struct {
	*fakeRuntime
	mu      sync.Mutex
	started []sandbox.Spec
}

func (rt *specRuntime) Start(ctx context.Context, spec sandbox.Spec) (instance, error) {
	rt.mu.Lock()
	rt.started = append(rt.started, spec)
	rt.mu.Unlock()
	return rt.fakeRuntime.Start(ctx, spec)
}

// TestStartBoundsRecordedLimits is a computer recorded with limits no
// create accepts (cpus 1e308, memory 99999999 MB: a record from before
// limits were checked): its start gives the sandbox limits within the
// host, says so in the log, and leaves the record as it is.
func TestStartBoundsRecordedLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the workspace is bind-mounted)")
	}
	rt := &specRuntime{fakeRuntime: &fakeRuntime{}}
	var logged []string
	var logMu sync.Mutex
	m, err := Open(context.Background(), Options{
		DataDir:   t.TempDir(),
		Workspace: DirWorkspace{},
		Templates: fakeTemplates{root: t.TempDir()},
		Logf: func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			logged = append(logged, fmt.Sprintf(format, args...))
		},
		sandboxes: rt,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Delete(context.Background(), "box")
		m.Close()
	})
	ctx := context.Background()
	ncpu, hostMB := hostCPUs(), hostMemoryMB()
	for _, tc := range []struct {
		cpus  float64
		memMB int
	}{
		{1e308, 99999999},
		{-1, 1}, // (NaN cannot be recorded: SQLite stores it as NULL)
		{0, math.MaxInt32},
	} {
		if _, err := m.Create(ctx, CreateOptions{Name: "box", DiskSizeMB: 64}); err != nil {
			t.Fatal(err)
		}
		if err := m.Stop(ctx, "box"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.reg.db.ExecContext(ctx, `UPDATE computers SET cpus = ?, memory_mb = ? WHERE name = ?`, tc.cpus, tc.memMB, "box"); err != nil {
			t.Fatal(err)
		}
		if rec := mustGet(t, m, "box"); rec.MemoryMB != tc.memMB {
			t.Fatalf("record not changed: %+v", rec)
		}
		rt.mu.Lock()
		rt.started = nil
		rt.mu.Unlock()
		if err := m.Start(ctx, "box"); err != nil {
			t.Fatalf("start: %v", err)
		}
		rt.mu.Lock()
		started := rt.started
		rt.mu.Unlock()
		if len(started) != 1 {
			t.Fatalf("%d sandboxes started, want 1", len(started))
		}
		spec := started[0]
		if math.IsNaN(spec.CPUs) || spec.CPUs < MinCPUs || spec.CPUs > ncpu {
			t.Errorf("cpus %g: sandbox got cpus %g, want within [%g, %g]", tc.cpus, spec.CPUs, MinCPUs, ncpu)
		}
		if spec.MemoryMB < MinMemoryMB || (hostMB > 0 && int64(spec.MemoryMB) > hostMB) {
			t.Errorf("memory %d: sandbox got memory %d MB, want within [%d, %d]", tc.memMB, spec.MemoryMB, MinMemoryMB, hostMB)
		}
		c, err := m.Info(ctx, "box")
		if err != nil {
			t.Fatal(err)
		}
		if l := c.Limits; l == nil || l.CPUs != spec.CPUs || l.MemoryBytes != int64(spec.MemoryMB)<<20 {
			t.Errorf("info limits %+v, want the ones started with (%g, %d MB)", l, spec.CPUs, spec.MemoryMB)
		}
		logMu.Lock()
		var said bool
		for _, l := range logged {
			said = said || strings.Contains(l, "recorded limits are refused")
		}
		logged = nil
		logMu.Unlock()
		if !said {
			t.Errorf("cpus %g memory %d: nothing logged about the limits", tc.cpus, tc.memMB)
		}
		if err := m.Delete(ctx, "box"); err != nil {
			t.Fatal(err)
		}
	}
}
