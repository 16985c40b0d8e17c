package computer

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"ohm/internal/mountinfo"
)

// These run idle stop over the fake runtime, with idle timeouts of a
// fraction of a second; package api's idle tests run it with real
// computers.

// idleTick is the idle timeout these tests give: short, yet long enough
// that a loaded machine's scheduling does not look like idleness.
const idleTick = 300 * time.Millisecond

// openIdleManager opens a manager of dir over rt that takes idle timeouts
// from 10 ms.
func openIdleManager(t *testing.T, dir, root string, rt *fakeRuntime) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the workspace is bind-mounted)")
	}
	m, err := Open(context.Background(), Options{
		DataDir:        dir,
		Workspace:      DirWorkspace{},
		Templates:      fakeTemplates{root: root},
		Logf:           t.Logf,
		MinIdleTimeout: 10 * time.Millisecond,
		sandboxes:      rt,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newIdleTestManager(t *testing.T, rt *fakeRuntime) *Manager {
	t.Helper()
	m := openIdleManager(t, t.TempDir(), t.TempDir(), rt)
	t.Cleanup(func() {
		recs, _ := m.List(context.Background())
		for _, r := range recs {
			m.Delete(context.Background(), r.Name)
		}
		m.Close()
	})
	return m
}

func dur(d time.Duration) *time.Duration { return &d }

// stays checks that name stays running for d (a check that something does
// not happen has to watch for a while).
func stays(t *testing.T, m *Manager, name string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if rec := mustGet(t, m, name); rec.State != StateRunning {
			t.Fatalf("%s stopped (%s) while it should run", name, rec.StopReason)
		}
	}
}

func TestIdleStop(t *testing.T) {
	m := newIdleTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	c, err := m.Create(ctx, CreateOptions{Name: "nap", DiskSizeMB: 64, IdleTimeout: dur(idleTick)})
	if err != nil {
		t.Fatal(err)
	}
	if c.IdleTimeout() != idleTick {
		t.Errorf("created with idle timeout %v, want %v", c.IdleTimeout(), idleTick)
	}
	info, err := m.Info(ctx, "nap")
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(info.IdleStopAt); left <= 0 || left > idleTick {
		t.Errorf("idle stop at %v: %v from now, want within %v", info.IdleStopAt, left, idleTick)
	}
	waitFor(t, "the idle computer to stop", func() bool { return mustGet(t, m, "nap").State == StateStopped })
	if rec := mustGet(t, m, "nap"); rec.StopReason != "idle for 300ms" {
		t.Errorf("stop reason %q", rec.StopReason)
	}
	if mountinfo.IsMountpoint(m.home("nap")) {
		t.Error("workspace still mounted after the idle stop")
	}
	// The next run starts it, and it stops again when idle.
	if _, err := m.Exec(ctx, "nap", ExecOptions{Command: "true"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if rec := mustGet(t, m, "nap"); rec.State != StateRunning {
		t.Fatalf("after run: %s", rec.State)
	}
	waitFor(t, "the computer to stop again", func() bool { return mustGet(t, m, "nap").State == StateStopped })
}

func TestIdleBusyAndTouch(t *testing.T) {
	m := newIdleTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "hold", DiskSizeMB: 64, IdleTimeout: dur(idleTick)}); err != nil {
		t.Fatal(err)
	}
	release, err := m.Busy(ctx, "hold")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := m.Info(ctx, "hold")
	if !info.IdleStopAt.IsZero() || info.ActiveSessions != 1 {
		t.Errorf("busy: stop at %v, %d sessions; want none and 1", info.IdleStopAt, info.ActiveSessions)
	}
	stays(t, m, "hold", 3*idleTick)
	released := time.Now()
	release()
	release() // a second call is harmless
	waitFor(t, "the released computer to stop", func() bool { return mustGet(t, m, "hold").State == StateStopped })
	if rec := mustGet(t, m, "hold"); rec.StoppedAt.Sub(released) < idleTick-10*time.Millisecond {
		t.Errorf("stopped %v after the release, before its timeout %v", rec.StoppedAt.Sub(released), idleTick)
	}

	// Busy starts a stopped computer; Touch keeps putting the stop off.
	release, err = m.Busy(ctx, "hold")
	if err != nil {
		t.Fatal(err)
	}
	release()
	for end := time.Now().Add(3 * idleTick); time.Now().Before(end); time.Sleep(idleTick / 10) {
		m.Touch("hold")
		if rec := mustGet(t, m, "hold"); rec.State != StateRunning {
			t.Fatalf("stopped (%s) while touched", rec.StopReason)
		}
	}
	waitFor(t, "the untouched computer to stop", func() bool { return mustGet(t, m, "hold").State == StateStopped })
	m.Touch("hold") // on a stopped computer: nothing
	if rec := mustGet(t, m, "hold"); rec.State != StateStopped {
		t.Errorf("Touch started it: %s", rec.State)
	}
}

func TestIdleSet(t *testing.T) {
	m := newIdleTestManager(t, &fakeRuntime{})
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "knob", DiskSizeMB: 64}); err != nil {
		t.Fatal(err)
	}
	if rec := mustGet(t, m, "knob"); rec.IdleTimeout() != DefaultIdleTimeout {
		t.Errorf("default idle timeout %v, want %v", rec.IdleTimeout(), DefaultIdleTimeout)
	}
	for _, tt := range []struct {
		what string
		opts SetOptions
		want string
	}{
		{"nothing", SetOptions{}, "nothing to set"},
		{"negative", SetOptions{IdleTimeout: dur(-time.Second)}, "invalid idle timeout -1s"},
		{"below the minimum", SetOptions{IdleTimeout: dur(time.Millisecond)}, "invalid idle timeout 1ms"},
		{"above the maximum", SetOptions{IdleTimeout: dur(MaxIdleTimeout + time.Hour)}, "invalid idle timeout 721h"},
	} {
		_, err := m.Set(ctx, "knob", tt.opts)
		if err == nil || ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("set %s: %v, want an invalid-input error saying %q", tt.what, err, tt.want)
		}
		if rec := mustGet(t, m, "knob"); rec.IdleTimeout() != DefaultIdleTimeout {
			t.Errorf("set %s changed the idle timeout to %v", tt.what, rec.IdleTimeout())
		}
	}
	if _, err := m.Set(ctx, "ghost", SetOptions{IdleTimeout: dur(0)}); ErrorCode(err) != CodeNotFound {
		t.Errorf("set on a missing computer: %v", err)
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "bad", DiskSizeMB: 64, IdleTimeout: dur(-time.Minute)}); ErrorCode(err) != CodeInvalid {
		t.Errorf("create with a negative idle timeout: %v", err)
	}

	// Shortened on a running computer: the countdown restarts now.
	rec, err := m.Set(ctx, "knob", SetOptions{IdleTimeout: dur(idleTick)})
	if err != nil || rec.IdleTimeout() != idleTick {
		t.Fatalf("set: %v, %v", rec.IdleTimeout(), err)
	}
	waitFor(t, "the computer to stop at its new timeout", func() bool { return mustGet(t, m, "knob").State == StateStopped })

	// 0 turns it off, on a stopped computer too.
	if _, err := m.Set(ctx, "knob", SetOptions{IdleTimeout: dur(0)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "knob"); err != nil {
		t.Fatal(err)
	}
	if info, _ := m.Info(ctx, "knob"); !info.IdleStopAt.IsZero() {
		t.Errorf("idle timeout off, yet a stop at %v", info.IdleStopAt)
	}
	stays(t, m, "knob", 3*idleTick)
}

// A manager opened over running computers (a daemon restart) starts their
// countdowns again.
func TestIdleAfterReopen(t *testing.T) {
	rt := &fakeRuntime{}
	dir, root := t.TempDir(), t.TempDir()
	m := openIdleManager(t, dir, root, rt)
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "phoenix", DiskSizeMB: 64, IdleTimeout: dur(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, "phoenix", SetOptions{IdleTimeout: dur(idleTick)}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	reopened := time.Now()
	m2 := openIdleManager(t, dir, root, rt)
	defer m2.Close()
	defer m2.Delete(ctx, "phoenix")
	if info, _ := m2.Info(ctx, "phoenix"); info.State != StateRunning || info.IdleStopAt.Before(reopened) {
		t.Errorf("after reopening: %s, idle stop at %v (reopened at %v)", info.State, info.IdleStopAt, reopened)
	}
	waitFor(t, "the computer to stop after the reopen", func() bool { return mustGet(t, m2, "phoenix").State == StateStopped })
	if rec := mustGet(t, m2, "phoenix"); rec.StopReason != "idle for 300ms" {
		t.Errorf("stop reason %q", rec.StopReason)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Minute:        "30m",
		time.Hour:               "1h",
		90 * time.Minute:        "1h30m",
		90 * time.Second:        "1m30s",
		1500 * time.Millisecond: "1.5s",
		300 * time.Millisecond:  "300ms",
		0:                       "0s",
		MaxIdleTimeout:          "720h",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
