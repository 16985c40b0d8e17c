package template

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progressWriter condenses a build's progress into a few lines: every
// change of phase is written, and within a phase at most one line per
// progressInterval. A terminal shows each line over the previous one; a log
// keeps them all.
type progressWriter struct {
	mu    sync.Mutex
	w     io.Writer
	phase string
	last  time.Time
	// pct is the highest percentage written: a build's progress never
	// goes backwards on screen, even when a tool's output does.
	pct int
}

const progressInterval = 500 * time.Millisecond

func newProgressWriter(w io.Writer) *progressWriter { return &progressWriter{w: w} }

// Phase starts a new phase and writes "phase: detail" (or just phase).
func (p *progressWriter) Phase(phase, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase = phase
	p.last = time.Now()
	if detail != "" {
		fmt.Fprintf(p.w, "%s: %s\n", phase, detail)
	} else {
		fmt.Fprintln(p.w, phase)
	}
}

// Step reports progress within phase as "[ pct%] message", pct clamped to
// 0-100 and to no less than any percentage written before; it is written
// only if the phase changed or the last line is older than
// progressInterval.
func (p *progressWriter) Step(phase string, pct int, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pct = max(p.pct, min(max(pct, 0), 100))
	now := time.Now()
	if phase == p.phase && now.Sub(p.last) < progressInterval {
		return
	}
	p.phase = phase
	p.last = now
	fmt.Fprintf(p.w, "[%3d%%] "+format+"\n", append([]any{p.pct}, args...)...)
}

// Linef writes a line unconditionally (warnings).
func (p *progressWriter) Linef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// Donef writes the final line of a build.
func (p *progressWriter) Donef(format string, args ...any) { p.Linef(format, args...) }
