package computer

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"ohm/internal/mountinfo"
	"ohm/internal/sandbox"
	"ohm/internal/template"
)

// These tests run the manager over a fake sandbox runtime, to inject
// failures and to check the lifecycle's bookkeeping without runc; the real
// sandbox is exercised by the end-to-end tests of package api. The
// workspace is a bind-mounted directory, which needs root.

type fakeTemplates struct{ root string }

func (f fakeTemplates) List(ctx context.Context) ([]template.Info, error) {
	return []template.Info{
		{Name: "coding-agent", Built: true, Root: f.root},
		{Name: "minimal", Built: true, Root: f.root},
		{Name: "zsh-box", Built: true, Root: f.root, Shell: "/bin/zsh"},
	}, nil
}

func (f fakeTemplates) Ensure(ctx context.Context, name string, progress io.Writer) (string, error) {
	io.WriteString(progress, "building "+name+"\n")
	return f.root, nil
}

// fakeRuntime keeps "sandboxes" in memory and fails where told to.
type fakeRuntime struct {
	mu        sync.Mutex
	failStart error
	failDisk  error
	running   map[string]bool
	live      map[string]*fakeInstance // the last instance of each computer
	stops     int
	cleanups  int
}

type fakeInstance struct {
	rt   *fakeRuntime
	name string

	end    chan struct{} // closed when the "init" ends
	once   sync.Once
	reason string
}

// kill ends the fake init, as a death inside the computer would.
func (i *fakeInstance) kill(reason string) {
	i.once.Do(func() { i.reason = reason; close(i.end) })
}

func (i *fakeInstance) Ended() <-chan struct{} { return i.end }
func (i *fakeInstance) EndReason() string      { return i.reason }
func (i *fakeInstance) Release()               {}

func (rt *fakeRuntime) CreateDisk(ctx context.Context, spec sandbox.Spec) error {
	if rt.failDisk != nil {
		return rt.failDisk
	}
	return os.WriteFile(filepath.Join(spec.StateDir, "disk.img"), nil, 0o600)
}

func (rt *fakeRuntime) Start(ctx context.Context, spec sandbox.Spec) (instance, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.failStart != nil {
		return nil, rt.failStart
	}
	if rt.running == nil {
		rt.running = map[string]bool{}
	}
	rt.running[spec.Name] = true
	inst := &fakeInstance{rt: rt, name: spec.Name, end: make(chan struct{})}
	if rt.live == nil {
		rt.live = map[string]*fakeInstance{}
	}
	rt.live[spec.Name] = inst
	return inst, nil
}

func (rt *fakeRuntime) Attach(ctx context.Context, spec sandbox.Spec) (instance, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !rt.running[spec.Name] {
		return nil, errors.New("not running")
	}
	inst := &fakeInstance{rt: rt, name: spec.Name, end: make(chan struct{})}
	if rt.live == nil {
		rt.live = map[string]*fakeInstance{}
	}
	rt.live[spec.Name] = inst
	return inst, nil
}

func (rt *fakeRuntime) Usage(ctx context.Context, spec sandbox.Spec) (sandbox.DiskUsage, error) {
	return sandbox.DiskUsage{Size: uint64(spec.DiskSizeMB) << 20}, nil
}

func (rt *fakeRuntime) Limits(ctx context.Context, spec sandbox.Spec) (sandbox.Limits, error) {
	return spec.Limits(), nil
}

func (rt *fakeRuntime) Cleanup(ctx context.Context, spec sandbox.Spec) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.cleanups++
	delete(rt.running, spec.Name)
	return nil
}

func (i *fakeInstance) Exec(ctx context.Context, req sandbox.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	io.WriteString(stdout, req.Argv[0])
	return 0, nil
}

func (i *fakeInstance) Stop(ctx context.Context, grace time.Duration) error {
	i.rt.mu.Lock()
	defer i.rt.mu.Unlock()
	i.rt.stops++
	delete(i.rt.running, i.name)
	i.kill("stopped")
	return nil
}

func newTestManager(t *testing.T, rt *fakeRuntime) (*Manager, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the workspace is bind-mounted)")
	}
	dir := t.TempDir()
	m, err := Open(context.Background(), Options{
		DataDir:   dir,
		Workspace: DirWorkspace{},
		Templates: fakeTemplates{root: t.TempDir()},
		Logf:      t.Logf,
		sandboxes: rt,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		m.Close()
	})
	return m, dir
}

func TestCreateBadInput(t *testing.T) {
	m, _ := newTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "taken", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		what string
		opts CreateOptions
		code Code
	}{
		{"unknown template", CreateOptions{Template: "nope", DiskSizeMB: 64}, CodeInvalid},
		{"invalid name", CreateOptions{Name: "Not_A_Label", DiskSizeMB: 64}, CodeInvalid},
		{"duplicate name", CreateOptions{Name: "taken", DiskSizeMB: 64}, CodeExists},
		{"disk size 0", CreateOptions{DiskSizeMB: 0}, CodeInvalid},
		{"negative disk size", CreateOptions{DiskSizeMB: -5}, CodeInvalid},
		{"disk larger than the host", CreateOptions{DiskSizeMB: 1 << 40}, CodeInvalid},
		{"bad env", CreateOptions{DiskSizeMB: 64, Env: map[string]string{"A=B": "c"}}, CodeInvalid},
	}
	for _, tt := range tests {
		_, err := m.Create(ctx, tt.opts)
		if err == nil {
			t.Errorf("%s: create succeeded", tt.what)
			continue
		}
		if got := ErrorCode(err); got != tt.code {
			t.Errorf("%s: code %s (%v), want %s", tt.what, got, err, tt.code)
		}
	}
	recs, _ := m.List(ctx)
	if len(recs) != 1 {
		t.Errorf("after bad creates: %d computers, want 1", len(recs))
	}
}

func TestCreatePicksFreeNames(t *testing.T) {
	m, _ := newTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	for _, want := range []string{"einstein", "curie", "newton"} {
		c, err := m.Create(ctx, CreateOptions{DiskSizeMB: 64})
		if err != nil {
			t.Fatal(err)
		}
		if c.Name != want || c.State != StateRunning {
			t.Errorf("create: %s %s, want %s running", c.Name, c.State, want)
		}
	}
}

func TestCreateRollsBack(t *testing.T) {
	for _, tt := range []struct {
		what string
		rt   *fakeRuntime
	}{
		{"start fails", &fakeRuntime{failStart: errors.New("injected start failure")}},
		{"disk fails", &fakeRuntime{failDisk: errors.New("injected disk failure")}},
	} {
		t.Run(tt.what, func(t *testing.T) {
			m, dir := newTestManager(t, tt.rt)
			ctx := context.Background()
			_, err := m.Create(ctx, CreateOptions{Name: "doomed", DiskSizeMB: 64})
			if err == nil {
				t.Fatal("create succeeded")
			}
			if _, err := m.Get(ctx, "doomed"); ErrorCode(err) != CodeNotFound {
				t.Errorf("after failed create: get: %v, want not found", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "computers", "doomed")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after failed create: state dir: %v, want gone", err)
			}
			if mountinfo.IsMountpoint(filepath.Join(dir, "computers", "doomed", "mnt")) {
				t.Error("after failed create: workspace still mounted")
			}
		})
	}
}

func TestMissingComputer(t *testing.T) {
	m, _ := newTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	ops := map[string]func() error{
		"start":  func() error { return m.Start(ctx, "ghost") },
		"stop":   func() error { return m.Stop(ctx, "ghost") },
		"delete": func() error { return m.Delete(ctx, "ghost") },
		"info":   func() error { _, err := m.Info(ctx, "ghost"); return err },
		"run": func() error {
			_, err := m.Exec(ctx, "ghost", ExecOptions{Command: "true"}, nil, io.Discard, io.Discard)
			return err
		},
	}
	for op, f := range ops {
		err := f()
		if ErrorCode(err) != CodeNotFound {
			t.Errorf("%s of a missing computer: %v, want not found", op, err)
		} else if err.Error() != `computer "ghost" does not exist` {
			t.Errorf("%s of a missing computer: message %q", op, err)
		}
	}
}

func TestLifecycle(t *testing.T) {
	rt := &fakeRuntime{}
	m, dir := newTestManager(t, rt)
	ctx := context.Background()
	c, err := m.Create(ctx, CreateOptions{Name: "box", DiskSizeMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "computers", c.Name, "mnt", "ohm")
	if !mountinfo.IsMountpoint(home) {
		t.Fatal("workspace not mounted after create")
	}
	if err := m.Start(ctx, "box"); ErrorCode(err) != CodeState {
		t.Errorf("start of a running computer: %v, want %s", err, CodeState)
	}
	if err := os.WriteFile(filepath.Join(home, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if mountinfo.IsMountpoint(home) {
		t.Error("workspace still mounted after stop")
	}
	if err := m.Stop(ctx, "box"); ErrorCode(err) != CodeState {
		t.Errorf("stop of a stopped computer: %v, want %s", err, CodeState)
	}
	// run on a stopped computer starts it.
	if _, err := m.Exec(ctx, "box", ExecOptions{Command: "true"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if rec, _ := m.Get(ctx, "box"); rec.State != StateRunning {
		t.Errorf("after run on a stopped computer: %s, want running", rec.State)
	}
	if b, err := os.ReadFile(filepath.Join(home, "f")); err != nil || string(b) != "kept" {
		t.Errorf("workspace file after stop/start: %q, %v", b, err)
	}
	stops := rt.stops
	if err := m.Delete(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if rt.stops != stops+1 {
		t.Error("delete of a running computer did not stop it")
	}
	if _, err := os.Stat(filepath.Join(dir, "computers", "box")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after delete: state dir: %v, want gone", err)
	}
}

func TestExecChoosesShell(t *testing.T) {
	m, _ := newTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "box", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	var out writerFunc
	var got string
	out = func(p []byte) (int, error) { got = string(p); return len(p), nil }
	if _, err := m.Exec(ctx, "box", ExecOptions{Command: "echo hi"}, nil, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got != "/bin/sh" { // the fake template root has no bash
		t.Errorf("argv[0] = %q, want /bin/sh", got)
	}
	// The template manifest's shell wins over probing the root.
	if _, err := m.Create(ctx, CreateOptions{Name: "zed", Template: "zsh-box", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Exec(ctx, "zed", ExecOptions{Command: "echo hi"}, nil, out, io.Discard); err != nil || got != "/bin/zsh" {
		t.Errorf("argv[0] = %q (%v), want the manifest's /bin/zsh", got, err)
	}
	if _, err := m.Exec(ctx, "box", ExecOptions{Command: "x", User: "mallory"}, nil, out, io.Discard); ErrorCode(err) != CodeInvalid {
		t.Errorf("bad user: %v, want %s", err, CodeInvalid)
	}
	if _, err := m.Exec(ctx, "box", ExecOptions{}, nil, out, io.Discard); ErrorCode(err) != CodeInvalid {
		t.Errorf("empty command: %v, want %s", err, CodeInvalid)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestReconcile(t *testing.T) {
	rt := &fakeRuntime{}
	m, dir := newTestManager(t, rt)
	ctx := context.Background()
	for _, n := range []string{"alive", "dead"} {
		if _, err := m.Create(ctx, CreateOptions{Name: n, DiskSizeMB: 64}); err != nil {
			t.Fatal(err)
		}
	}
	// A half-created row, as a daemon dying mid-create leaves it.
	if err := m.reg.insert(ctx, Record{Name: "half", State: StateCreating, Template: "minimal", DiskSizeMB: 64, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	// "dead"'s sandbox died with the host; "alive"'s kept running.
	delete(rt.running, "dead")

	m2, err := Open(ctx, Options{DataDir: dir, Workspace: DirWorkspace{}, Templates: m.tmpl, Logf: t.Logf, sandboxes: rt})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	for name, want := range map[string]State{"alive": StateRunning, "dead": StateStopped} {
		rec, err := m2.Get(ctx, name)
		if err != nil || rec.State != want {
			t.Errorf("%s after reconcile: %s %v, want %s", name, rec.State, err, want)
		}
	}
	if _, err := m2.Get(ctx, "half"); ErrorCode(err) != CodeNotFound {
		t.Errorf("half-created computer after reconcile: %v, want gone", err)
	}
	if mountinfo.IsMountpoint(filepath.Join(dir, "computers", "dead", "mnt")) {
		t.Error("dead computer's workspace still mounted")
	}
	for _, n := range []string{"alive", "dead"} {
		if err := m2.Delete(ctx, n); err != nil {
			t.Error(err)
		}
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// When a computer's init ends behind the manager's back, the computer is
// stopped for real (its sandbox stopped, its workspace unmounted) with the
// reason recorded, and the next run starts it again.
func TestInitDeathStopsComputer(t *testing.T) {
	rt := &fakeRuntime{}
	m, _ := newTestManager(t, rt)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "box", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	inst := rt.live["box"]
	rt.mu.Unlock()
	inst.kill("init was killed (out of memory)")
	waitFor(t, "the computer to be recorded stopped", func() bool {
		rec, err := m.Get(ctx, "box")
		return err == nil && rec.State == StateStopped
	})
	rec, _ := m.Get(ctx, "box")
	if rec.StopReason != "init was killed (out of memory)" || rec.StoppedAt.IsZero() {
		t.Errorf("stop reason %q at %v, want the init's", rec.StopReason, rec.StoppedAt)
	}
	if mountinfo.IsMountpoint(m.home("box")) {
		t.Error("workspace still mounted after the init died")
	}
	if _, err := m.Exec(ctx, "box", ExecOptions{Command: "true"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("run after the init died: %v", err)
	}
	if rec, _ := m.Get(ctx, "box"); rec.State != StateRunning {
		t.Errorf("after run: %s, want running", rec.State)
	}

	// A death the watcher has not handled yet is handled by the next
	// operation: run never meets a dead sandbox recorded running.
	unlock := m.lock("box") // hold the watcher off
	rt.mu.Lock()
	inst = rt.live["box"]
	rt.mu.Unlock()
	inst.kill("init exited with status 0")
	if _, err := m.reapIfDead(ctx, mustGet(t, m, "box")); err != nil {
		t.Fatal(err)
	}
	unlock()
	if rec := mustGet(t, m, "box"); rec.State != StateStopped || rec.StopReason != "init exited with status 0" {
		t.Errorf("after reapIfDead: %s (%q), want stopped with the init's reason", rec.State, rec.StopReason)
	}
	if err := m.Start(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if rec := mustGet(t, m, "box"); rec.StopReason != "" || !rec.StoppedAt.IsZero() {
		t.Errorf("running again, it still has the stop reason %q (at %v)", rec.StopReason, rec.StoppedAt)
	}
	if err := m.Stop(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if rec := mustGet(t, m, "box"); rec.StopReason != ReasonStopped {
		t.Errorf("stop reason after stop: %q, want %q", rec.StopReason, ReasonStopped)
	}
}

func mustGet(t *testing.T, m *Manager, name string) Record {
	t.Helper()
	rec, err := m.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// The per-computer locks live only while in use: operations on many names,
// existing or not, leave none behind.
func TestLocksDoNotAccumulate(t *testing.T) {
	m, _ := newTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	for _, name := range []string{"a1", "a2", "a3"} {
		if _, err := m.Create(ctx, CreateOptions{Name: name, DiskSizeMB: 64}); err != nil {
			t.Fatal(err)
		}
		m.Start(ctx, "missing-"+name)
		if err := m.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// The watchers of the deleted sandboxes take and drop the locks too.
	waitFor(t, "the lock map to empty", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.locks) == 0
	})
	// A stale lock (dropped from the map) cannot be taken with TryLock.
	l := m.lockOf("x")
	unlock := m.lock("x")
	unlock()
	if l.TryLock() {
		t.Error("TryLock of a lock dropped from the map succeeded")
	}
}
