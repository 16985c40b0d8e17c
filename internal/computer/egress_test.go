package computer

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"

	"ohm/internal/egress"
	"ohm/internal/sandbox"
)

// egressRuntime is a fakeRuntime whose instances take egress policies,
// failing where told to; it remembers the policy each computer started
// with and the last one set.
type egressRuntime struct {
	*fakeRuntime
	mu       sync.Mutex
	started  map[string]egress.Policy
	set      map[string]egress.Policy
	failNext error
}

type egressInstance struct {
	*fakeInstance
	rt *egressRuntime
}

func (i egressInstance) SetEgress(p egress.Policy) error {
	i.rt.mu.Lock()
	defer i.rt.mu.Unlock()
	if err := i.rt.failNext; err != nil {
		i.rt.failNext = nil
		return err
	}
	i.rt.set[i.name] = p
	return nil
}

func (rt *egressRuntime) Start(ctx context.Context, spec sandbox.Spec) (instance, error) {
	inst, err := rt.fakeRuntime.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	rt.mu.Lock()
	rt.started[spec.Name] = spec.Egress
	rt.mu.Unlock()
	return egressInstance{inst.(*fakeInstance), rt}, nil
}

func newEgressManager(t *testing.T) (*Manager, *egressRuntime, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the workspace is bind-mounted)")
	}
	rt := &egressRuntime{fakeRuntime: &fakeRuntime{}, started: map[string]egress.Policy{}, set: map[string]egress.Policy{}}
	dir := t.TempDir()
	open := func() *Manager {
		m, err := Open(context.Background(), Options{
			DataDir: dir, Workspace: DirWorkspace{}, Templates: fakeTemplates{root: t.TempDir()},
			Logf: t.Logf, sandboxes: rt,
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open()
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		m.Close()
	})
	return m, rt, dir
}

func list(s ...string) *[]string { return &s }

func TestEgressLists(t *testing.T) {
	m, rt, _ := newEgressManager(t)
	ctx := context.Background()

	// A list gives the computer a network; entries come back normalized.
	c, err := m.Create(ctx, CreateOptions{Name: "ada", DiskSizeMB: 64,
		AllowHosts: []string{"PyPI.org.", "*.pythonhosted.org", "pypi.org"}, AllowCIDRs: []string{"198.51.100.7"}})
	if err != nil {
		t.Fatal(err)
	}
	wantHosts, wantCIDRs := []string{"pypi.org", "*.pythonhosted.org"}, []string{"198.51.100.7/32"}
	if !c.Network || !slices.Equal(c.AllowHosts, wantHosts) || !slices.Equal(c.AllowCIDRs, wantCIDRs) {
		t.Errorf("created %+v", c.Record)
	}
	if got := rt.started["ada"]; !slices.Equal(got.Hosts, wantHosts) || !slices.Equal(got.CIDRs, wantCIDRs) {
		t.Errorf("started with %+v", got)
	}

	// Bad input: one clear error, nothing changed.
	bad := []struct {
		what string
		ch   EgressChange
	}{
		{"malformed host", EgressChange{AllowHosts: list("exa mple.org")}},
		{"wildcard inside", EgressChange{AllowHosts: list("a.*.org")}},
		{"address as host", EgressChange{AllowHosts: list("10.0.0.1")}},
		{"malformed CIDR", EgressChange{AllowCIDRs: list("10.0.0.0/33")}},
		{"host bits", EgressChange{AllowCIDRs: list("10.1.2.3/8")}},
	}
	for _, tt := range bad {
		_, err := m.SetEgress(ctx, "ada", tt.ch)
		if ErrorCode(err) != CodeInvalid {
			t.Errorf("%s: %v, want invalid", tt.what, err)
		}
	}
	if _, ok := rt.set["ada"]; ok {
		t.Errorf("a bad change reached the computer: %+v", rt.set["ada"])
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "bad", DiskSizeMB: 64, AllowCIDRs: []string{"nope"}}); ErrorCode(err) != CodeInvalid {
		t.Errorf("create with a bad CIDR: %v", err)
	}
	if _, err := m.Get(ctx, "bad"); ErrorCode(err) != CodeNotFound {
		t.Errorf("bad create left %v", err)
	}

	// A change on the running computer reaches it and the record; the
	// list not named stays.
	rec, err := m.SetEgress(ctx, "ada", EgressChange{AllowHosts: list("example.org")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.AllowHosts, []string{"example.org"}) || !slices.Equal(rec.AllowCIDRs, wantCIDRs) {
		t.Errorf("after set: %+v", rec)
	}
	if got := rt.set["ada"]; !slices.Equal(got.Hosts, []string{"example.org"}) || !slices.Equal(got.CIDRs, wantCIDRs) {
		t.Errorf("computer got %+v", got)
	}
	// The computer refusing the change leaves the record as it was.
	rt.failNext = errors.New("netlink said no")
	if _, err := m.SetEgress(ctx, "ada", EgressChange{AllowCIDRs: list()}); err == nil {
		t.Error("a failed change succeeded")
	}
	if got, _ := m.Get(ctx, "ada"); !slices.Equal(got.AllowCIDRs, wantCIDRs) {
		t.Errorf("after a failed change: %+v", got)
	}

	// Stopped: recorded, and the next start applies it.
	if err := m.Stop(ctx, "ada"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetEgress(ctx, "ada", EgressChange{AllowCIDRs: list()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "ada"); err != nil {
		t.Fatal(err)
	}
	if got := rt.started["ada"]; !slices.Equal(got.Hosts, []string{"example.org"}) || len(got.CIDRs) != 0 {
		t.Errorf("restarted with %+v", got)
	}

	// A computer without a network has none to limit; clearing is fine.
	if _, err := m.Create(ctx, CreateOptions{Name: "offline", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetEgress(ctx, "offline", EgressChange{AllowHosts: list("example.org")}); ErrorCode(err) != CodeInvalid {
		t.Errorf("list on a computer without network: %v", err)
	}
	if _, err := m.SetEgress(ctx, "offline", EgressChange{AllowHosts: list()}); err != nil {
		t.Errorf("clearing the list of a computer without network: %v", err)
	}
	if _, err := m.SetEgress(ctx, "nobody", EgressChange{AllowHosts: list()}); ErrorCode(err) != CodeNotFound {
		t.Errorf("unknown computer: %v", err)
	}
}
