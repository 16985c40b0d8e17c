package vfs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (g *groupCommit) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters
}

// TestGroupCommitSharesRounds checks the group commit's contract with a
// sync that the test controls: callers that arrive while a round runs wait
// for the next one (their changes may postdate the running round's start),
// share it, and get its error.
func TestGroupCommitSharesRounds(t *testing.T) {
	release := make(chan error)
	var rounds atomic.Int32
	g := newGroupCommit(context.Background(), func(context.Context) error {
		rounds.Add(1)
		return <-release
	})

	errFirst := errors.New("first round failed")
	first := make(chan error, 1)
	go func() { first <- g.Wait() }()
	waitFor(t, "the first round to start", func() bool { return rounds.Load() == 1 })

	const late = 5
	lateErrs := make(chan error, late)
	for range late {
		go func() { lateErrs <- g.Wait() }()
	}
	waitFor(t, "the late callers to wait", func() bool { return g.waiting() == 1+late })

	release <- errFirst
	if err := <-first; !errors.Is(err, errFirst) {
		t.Fatalf("first caller: %v, want the first round's error", err)
	}
	// The late callers must not have been answered by the first round.
	waitFor(t, "the second round to start", func() bool { return rounds.Load() == 2 })
	select {
	case err := <-lateErrs:
		t.Fatalf("a late caller returned (%v) before the round it needs finished", err)
	default:
	}
	release <- nil
	for range late {
		if err := <-lateErrs; err != nil {
			t.Errorf("late caller: %v, want the second round's success", err)
		}
	}
	if n := rounds.Load(); n != 2 {
		t.Errorf("%d rounds for %d callers, want 2 (the late ones share one)", n, 1+late)
	}

	// A caller that finds nothing running starts its own round.
	go func() { release <- nil }()
	if err := g.Wait(); err != nil {
		t.Fatalf("idle wait: %v", err)
	}
	if n := rounds.Load(); n != 3 {
		t.Errorf("%d rounds, want 3", n)
	}
}
