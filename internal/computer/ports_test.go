package computer

import (
	"context"
	"testing"
)

// TestPortsPersist: exposed ports are in the registry: a new manager
// finds them, exposing again keeps the token, deleting the computer
// forgets them, and bad input changes nothing.
func TestPortsPersist(t *testing.T) {
	rt := &fakeRuntime{}
	m, dir := newTestManager(t, rt)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "web", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		port int
		code Code
	}{
		{"nosuch", 3000, CodeNotFound},
		{"web", 0, CodeInvalid},
		{"web", 65536, CodeInvalid},
		{"web", -80, CodeInvalid},
	} {
		if _, err := m.Expose(ctx, tt.name, tt.port, false); ErrorCode(err) != tt.code {
			t.Errorf("expose %s %d: %v, want %s", tt.name, tt.port, err, tt.code)
		}
		if _, err := m.Unexpose(ctx, tt.name, tt.port); ErrorCode(err) != tt.code {
			t.Errorf("unexpose %s %d: %v, want %s", tt.name, tt.port, err, tt.code)
		}
	}
	if _, err := m.Unexpose(ctx, "web", 3000); ErrorCode(err) != CodeNotFound {
		t.Errorf("unexpose of a port not exposed: %v", err)
	}
	if ps, err := m.Ports(ctx, "web"); err != nil || len(ps) != 0 {
		t.Fatalf("ports after bad input: %v %v", ps, err)
	}
	p, err := m.Expose(ctx, "web", 3000, false)
	if err != nil || p.Token == "" || p.Public {
		t.Fatalf("expose: %+v %v", p, err)
	}
	if _, err := m.Expose(ctx, "web", 80, true); err != nil {
		t.Fatal(err)
	}
	if again, err := m.Expose(ctx, "web", 3000, true); err != nil || again.Token != p.Token || !again.Public {
		t.Errorf("expose again: %+v %v, want the same token, public", again, err)
	}
	// A fake sandbox cannot reach ports: one clear error.
	if _, err := m.DialPort(ctx, "web", 3000); err == nil {
		t.Error("DialPort through a fake sandbox succeeded")
	}

	m.Close()
	m2, err := Open(ctx, Options{DataDir: dir, Workspace: DirWorkspace{}, Templates: fakeTemplates{root: t.TempDir()}, Logf: t.Logf, sandboxes: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	ps, err := m2.Ports(ctx, "web")
	if err != nil || len(ps) != 2 || ps[0].Port != 80 || ps[1].Port != 3000 || ps[1].Token != p.Token || !ps[1].Public {
		t.Fatalf("ports after reopening: %+v %v", ps, err)
	}
	if got, err := m2.ExposedPort(ctx, "web", 80); err != nil || !got.Public {
		t.Errorf("exposed port 80: %+v %v", got, err)
	}
	if _, err := m2.ExposedPort(ctx, "web", 81); ErrorCode(err) != CodeNotFound {
		t.Errorf("port 81: %v", err)
	}
	if _, err := m2.Unexpose(ctx, "web", 80); err != nil {
		t.Fatal(err)
	}
	if err := m2.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	// A new computer of the same name starts with no ports.
	if _, err := m2.Create(ctx, CreateOptions{Name: "web", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	if ps, err := m2.Ports(ctx, "web"); err != nil || len(ps) != 0 {
		t.Errorf("ports of a new computer with a deleted one's name: %+v %v", ps, err)
	}
	m2.Delete(ctx, "web")
}
