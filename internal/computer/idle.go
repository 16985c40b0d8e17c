package computer

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"ohm/internal/egress"
)

// Idle stop: a running computer with an idle timeout stops itself (a
// normal stop: processes get SIGTERM, the workspace is flushed and
// unmounted) once nothing has used it for that long, and the next exec,
// file operation or Busy caller starts it again and waits for it. "Used"
// means an exec or shell session or a file transfer open (each is an Exec,
// which holds the computer busy while it runs, however quiet its output),
// or a Touch from code that carries other traffic to it (preview URLs).
// The countdown starts when the last session ends. It lives in memory: a
// new manager (a daemon restart) starts every running computer's
// countdown afresh, since it cannot know what happened while no daemon
// ran. See README.md, "Idle stop".

// DefaultIdleTimeout is the idle timeout of a computer created without
// one. Long enough that an agent's pauses between tool calls and a person
// reading output never meet it; short enough that a forgotten computer
// gives back its memory and CPU within the hour. A stop keeps everything
// durable (workspace and root disk) and the next use starts it again, so
// it costs only its processes and a start.
const DefaultIdleTimeout = 30 * time.Minute

// MaxIdleTimeout bounds an idle timeout; longer is a typo (0 turns idle
// stop off).
const MaxIdleTimeout = 30 * 24 * time.Hour

// defaultMinIdleTimeout is the shortest idle timeout a manager accepts
// unless Options.MinIdleTimeout says otherwise: less would stop a
// computer between two commands of one task.
const defaultMinIdleTimeout = time.Minute

// IdleTimeout is how long rec's computer may be idle before it stops
// itself; 0 never.
func (r Record) IdleTimeout() time.Duration {
	return time.Duration(math.Round(r.IdleTimeoutSeconds*1000)) * time.Millisecond
}

// IdleReason is the stop reason of a computer that stopped itself after
// timeout without use.
func IdleReason(timeout time.Duration) string {
	return "idle for " + FormatDuration(timeout)
}

// FormatDuration writes d the way people write timeouts: 30m, 1h30m, 90s,
// 1.5s (time.Duration.String without its trailing zero units).
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// checkIdleTimeout refuses an idle timeout outside 0 (off) or
// [min, MaxIdleTimeout].
func checkIdleTimeout(d, min time.Duration) error {
	if d == 0 || (d >= min && d <= MaxIdleTimeout) {
		return nil
	}
	return invalidf("invalid idle timeout %s: must be 0 (never stop) or between %s and %s",
		FormatDuration(d), FormatDuration(min), FormatDuration(MaxIdleTimeout))
}

// activity is what the manager knows about a computer's use.
type activity struct {
	busy    int           // sessions holding it busy (Exec, Busy)
	last    time.Time     // when it was last used: the last session's end, a Touch, a start
	timeout time.Duration // 0: it never stops for idleness
	running bool
	timer   *time.Timer // set while the countdown runs
}

// idleState is a manager's activity of every computer it has seen used or
// started, guarded by mu (taken after Manager.mu and nameLock, never
// before them).
type idleState struct {
	mu     sync.Mutex
	of     map[string]*activity
	closed bool           // Close: no new idle stop begins
	stops  sync.WaitGroup // idle stops under way, which Close waits for
	min    time.Duration  // shortest idle timeout accepted
}

func newIdleState(min time.Duration) *idleState {
	if min <= 0 {
		min = defaultMinIdleTimeout
	}
	return &idleState{of: map[string]*activity{}, min: min}
}

// get returns the activity of name, making it; the caller holds s.mu.
func (s *idleState) get(name string) *activity {
	a, ok := s.of[name]
	if !ok {
		a = &activity{}
		s.of[name] = a
	}
	return a
}

// arm (re)starts a's countdown if it should run: running, with a timeout,
// no session open. The caller holds m.idle.mu.
func (m *Manager) arm(name string, a *activity) {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	if !a.running || a.timeout <= 0 || a.busy > 0 || m.idle.closed {
		return
	}
	a.timer = time.AfterFunc(time.Until(a.last.Add(a.timeout)), func() { m.idleExpired(name) })
}

// idleStarted notes that computer name runs now, with idle timeout
// timeout: its countdown starts now.
func (m *Manager) idleStarted(name string, timeout time.Duration) {
	m.idle.mu.Lock()
	defer m.idle.mu.Unlock()
	a := m.idle.get(name)
	a.running, a.timeout, a.last = true, timeout, time.Now()
	m.arm(name, a)
}

// idleStopped notes that computer name no longer runs.
func (m *Manager) idleStopped(name string) {
	m.idle.mu.Lock()
	defer m.idle.mu.Unlock()
	a, ok := m.idle.of[name]
	if !ok {
		return
	}
	a.running = false
	m.arm(name, a)
	if a.busy == 0 {
		delete(m.idle.of, name)
	}
}

// Touch records use of computer name now (traffic to one of its ports,
// say), which restarts its idle countdown. It does not start a stopped
// computer, nor hold back a stop already under way: code that needs the
// computer running for a while calls Busy instead.
func (m *Manager) Touch(name string) {
	m.idle.mu.Lock()
	defer m.idle.mu.Unlock()
	if a, ok := m.idle.of[name]; ok && a.running {
		// The timer, when it fires, sees the new time and waits on.
		a.last = time.Now()
	}
}

// Busy starts computer name if it is stopped (waiting for it) and holds it
// busy until release is called: it does not stop for idleness meanwhile,
// and its countdown starts again at the release. Exec holds it this way
// for every command, shell and file transfer; code that carries other
// traffic (a proxied HTTP request or WebSocket) calls Busy for the time it
// does. release may be called more than once.
func (m *Manager) Busy(ctx context.Context, name string) (release func(), err error) {
	_, release, err = m.ensureRunning(ctx, name)
	return release, err
}

// hold marks name busy and returns what ends that; the caller holds the
// lock of name, so that no idle stop runs between its check and the hold.
func (m *Manager) hold(name string) func() {
	m.idle.mu.Lock()
	a := m.idle.get(name)
	a.busy++
	m.arm(name, a)
	m.idle.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			m.idle.mu.Lock()
			defer m.idle.mu.Unlock()
			a.busy--
			a.last = time.Now()
			if m.idle.of[name] != a {
				return // forgotten meanwhile: the computer was deleted
			}
			m.arm(name, a)
			if a.busy == 0 && !a.running {
				delete(m.idle.of, name)
			}
		})
	}
}

// idleExpired runs when name's countdown ends: if nothing used it
// meanwhile, it stops the computer, with IdleReason as the reason.
func (m *Manager) idleExpired(name string) {
	m.idle.mu.Lock()
	if m.idle.closed {
		m.idle.mu.Unlock()
		return
	}
	m.idle.stops.Add(1)
	m.idle.mu.Unlock()
	defer m.idle.stops.Done()

	unlock := m.lock(name)
	defer unlock()
	m.idle.mu.Lock()
	a, ok := m.idle.of[name]
	if !ok || !a.running || a.busy > 0 || a.timeout <= 0 || m.idle.closed {
		m.idle.mu.Unlock()
		return
	}
	if left := time.Until(a.last.Add(a.timeout)); left > 0 {
		m.arm(name, a) // touched since the timer was set
		m.idle.mu.Unlock()
		return
	}
	timeout := a.timeout
	m.idle.mu.Unlock()

	ctx := context.Background()
	rec, err := m.reg.get(ctx, name)
	if err != nil || rec.State != StateRunning {
		return
	}
	l := m.live(name)
	if l == nil {
		return
	}
	if ended(l) {
		m.reapDead(ctx, name, l)
		return
	}
	reason := IdleReason(timeout)
	m.logf("%s: %s; stopping it", name, reason)
	if err := m.stop(ctx, rec, reason); err != nil {
		m.logf("%s: stop after being idle: %v", name, err)
	}
}

// closeIdle stops every countdown and waits for the idle stops under way.
func (m *Manager) closeIdle() {
	m.idle.mu.Lock()
	m.idle.closed = true
	for _, a := range m.idle.of {
		if a.timer != nil {
			a.timer.Stop()
			a.timer = nil
		}
	}
	m.idle.mu.Unlock()
	m.idle.stops.Wait()
}

// IdleStatus is where a computer's idle countdown is.
type IdleStatus struct {
	// StopAt is when it stops itself if nothing uses it meanwhile; zero
	// when it is not running, has no timeout, or is busy.
	StopAt time.Time
	// Sessions is how many exec or shell sessions, file transfers and Busy
	// holders keep it busy now.
	Sessions int
}

// idleStatus reports name's countdown.
func (m *Manager) idleStatus(name string) IdleStatus {
	m.idle.mu.Lock()
	defer m.idle.mu.Unlock()
	a, ok := m.idle.of[name]
	if !ok {
		return IdleStatus{}
	}
	st := IdleStatus{Sessions: a.busy}
	if a.running && a.timeout > 0 && a.busy == 0 {
		st.StopAt = a.last.Add(a.timeout).UTC().Truncate(time.Millisecond)
	}
	return st
}

// SetOptions change settings of a computer, running or stopped; a nil
// field stays as it is. All are checked before any is changed.
type SetOptions struct {
	// IdleTimeout is the new idle timeout (0: never stop for idleness). On
	// a running computer the countdown starts again from now.
	IdleTimeout *time.Duration
	// Egress changes the allow lists (egress.go).
	Egress *EgressChange
}

// Set changes the settings of computer name that opts gives, and returns
// its record as it is then. Bad input changes nothing.
func (m *Manager) Set(ctx context.Context, name string, opts SetOptions) (Record, error) {
	if opts.IdleTimeout == nil && opts.Egress == nil {
		return Record{}, invalidf("nothing to set")
	}
	if opts.IdleTimeout != nil {
		if err := checkIdleTimeout(*opts.IdleTimeout, m.idle.min); err != nil {
			return Record{}, err
		}
	}
	unlock := m.lock(name)
	defer unlock()
	rec, err := m.reg.get(ctx, name)
	if err != nil {
		return Record{}, err
	}
	if rec, err = m.reapIfDead(ctx, rec); err != nil {
		return Record{}, err
	}
	if rec.State == StateCreating {
		return Record{}, statef("computer %q is still being created", name)
	}
	var pol egress.Policy
	if opts.Egress != nil {
		if pol, err = egressPolicy(rec, *opts.Egress); err != nil {
			return Record{}, err
		}
		if rec, err = m.applyEgress(ctx, rec, pol); err != nil {
			return Record{}, err
		}
	}
	if opts.IdleTimeout != nil {
		if d := *opts.IdleTimeout; d != rec.IdleTimeout() {
			if err := m.reg.setIdleTimeout(ctx, name, d); err != nil {
				return Record{}, err
			}
		}
		m.idle.mu.Lock()
		if a, ok := m.idle.of[name]; ok && a.running {
			a.timeout, a.last = *opts.IdleTimeout, time.Now()
			m.arm(name, a)
		}
		m.idle.mu.Unlock()
	}
	return m.reg.get(ctx, name)
}

// setIdleTimeout records name's idle timeout.
func (r *registry) setIdleTimeout(ctx context.Context, name string, d time.Duration) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	res, err := r.db.ExecContext(ctx, `UPDATE computers SET idle_timeout_ms = ?, updated_at = ? WHERE name = ?`, d.Milliseconds(), now, name)
	if err != nil {
		return fmt.Errorf("set idle timeout of %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound(name)
	}
	return nil
}
