package computer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// timing collects how long the steps of one lifecycle operation (create,
// start, stop) took, for one line of the daemon's log: that is where the
// time of `ohm computer create` goes is read from (docs/block-layout.md
// has the numbers). Steps may run in parallel, so each is timed on its
// own. A nil *timing records nothing.
type timing struct {
	began time.Time

	mu    sync.Mutex
	steps []timedStep
}

type timedStep struct {
	name string
	d    time.Duration
}

type timingKey struct{}

// withTiming returns ctx carrying a new timing, and that timing.
func withTiming(ctx context.Context) (context.Context, *timing) {
	t := &timing{began: time.Now()}
	return context.WithValue(ctx, timingKey{}, t), t
}

// timingOf is the timing ctx carries, or nil.
func timingOf(ctx context.Context) *timing {
	t, _ := ctx.Value(timingKey{}).(*timing)
	return t
}

// since records step name as having run from began until now; meant for
// `defer timingOf(ctx).since("step", time.Now())`.
func (t *timing) since(name string, began time.Time) {
	if t == nil {
		return
	}
	d := time.Since(began)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.steps = append(t.steps, timedStep{name, d})
}

// String is the total and each step, in the order they ended, e.g.
// "612ms (template 0s, root disk 95ms, ...)".
func (t *timing) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	parts := make([]string, len(t.steps))
	for i, s := range t.steps {
		parts[i] = fmt.Sprintf("%s %v", s.name, s.d.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v (%s)", time.Since(t.began).Round(time.Millisecond), strings.Join(parts, ", "))
}
