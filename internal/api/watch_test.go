package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"

	"ohm/client"
)

// watchStream reads a Watcher in the background, so that a test can wait
// for events with deadlines (and never calls t.Fatal off its goroutine).
type watchStream struct {
	events chan client.WatchEvent
	err    chan error // the error Next ended with: io.EOF after ended
}

func streamWatch(w *client.Watcher) *watchStream {
	s := &watchStream{events: make(chan client.WatchEvent, 1<<16), err: make(chan error, 1)}
	go func() {
		for {
			ev, err := w.Next()
			if err != nil {
				close(s.events)
				s.err <- err
				return
			}
			s.events <- ev
		}
	}()
	return s
}

// until returns the events up to and including the first that satisfies
// stop; it fails the test after 60s.
func (s *watchStream) until(t *testing.T, stop func(client.WatchEvent) bool) []client.WatchEvent {
	t.Helper()
	var got []client.WatchEvent
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("the watch ended (%v) before the awaited event; got %v", <-s.err, got)
			}
			got = append(got, ev)
			if stop(ev) {
				return got
			}
		case <-deadline:
			t.Fatalf("no awaited event within 60s; got %d events, the last %v", len(got), got[max(0, len(got)-5):])
		}
	}
}

func named(p string) func(client.WatchEvent) bool {
	return func(ev client.WatchEvent) bool { return ev.Path == p }
}

// netEffect drops a modified that follows a created of the same path (a
// write right after the create that fell into the next window).
func netEffect(evs []client.WatchEvent) []client.WatchEvent {
	created := map[string]bool{}
	var out []client.WatchEvent
	for _, ev := range evs {
		if ev.Type == client.WatchModified && created[ev.Path] {
			continue
		}
		if ev.Type == client.WatchCreated {
			created[ev.Path] = true
		}
		out = append(out, ev)
	}
	return out
}

func ev(typ, p string) client.WatchEvent { return client.WatchEvent{Type: typ, Path: p} }
func dirEv(typ, p string) client.WatchEvent {
	return client.WatchEvent{Type: typ, Path: p, Dir: true}
}

// TestWatch follows a real computer's workspace while commands inside
// change it, with paths as the computer sees them; a second watch is
// limited to a directory; stop ends both.
func TestWatch(t *testing.T) {
	c, dataDir := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "watched")
	const h = "/home/ohm"

	for _, bad := range []string{"/etc", "/home/ohmx", "relative", "/home/ohm/../../etc"} {
		if _, err := c.Watch(ctx, "watched", bad); !isCode(err, client.CodeInvalid) {
			t.Errorf("watch %q: %v, want invalid", bad, err)
		}
	}
	if _, err := c.Watch(ctx, "nosuch", ""); !isCode(err, client.CodeNotFound) {
		t.Errorf("watch of a missing computer: %v", err)
	}

	wAll, err := c.Watch(ctx, "watched", "")
	if err != nil {
		t.Fatal(err)
	}
	defer wAll.Close()
	wSrc, err := c.Watch(ctx, "watched", h+"/src/")
	if err != nil {
		t.Fatal(err)
	}
	defer wSrc.Close()
	all, src := streamWatch(wAll), streamWatch(wSrc)

	steps := []struct {
		cmd  string
		want []client.WatchEvent
		// maybe may show up too: files of a directory deleted before its
		// events were read are reported by the directory's deletion.
		maybe []client.WatchEvent
	}{
		{"mkdir src && echo a > a.txt && echo b > src/b.txt && touch end1", []client.WatchEvent{
			dirEv("created", h+"/src"), ev("created", h+"/a.txt"), ev("created", h+"/src/b.txt"), ev("created", h+"/end1"),
		}, nil},
		{"echo more >> a.txt && touch end2", []client.WatchEvent{
			ev("modified", h+"/a.txt"), ev("created", h+"/end2"),
		}, nil},
		{"mv a.txt src/c.txt && mv src renamed && touch end3", []client.WatchEvent{
			{Type: "moved", OldPath: h + "/a.txt", Path: h + "/src/c.txt"},
			{Type: "moved", OldPath: h + "/src", Path: h + "/renamed", Dir: true},
			ev("created", h+"/end3"),
		}, nil},
		{"rm renamed/b.txt && touch end4", []client.WatchEvent{
			ev("deleted", h+"/renamed/b.txt"), ev("created", h+"/end4"),
		}, nil},
		{"rm -r renamed && touch end5", []client.WatchEvent{
			dirEv("deleted", h+"/renamed"), ev("created", h+"/end5"),
		}, []client.WatchEvent{ev("deleted", h+"/renamed/c.txt")}},
	}
	for i, st := range steps {
		if out, code := run(t, c, "watched", "cd /home/ohm && "+st.cmd); code != 0 {
			t.Fatalf("%s: %d %s", st.cmd, code, out)
		}
		got := netEffect(all.until(t, named(fmt.Sprintf("%s/end%d", h, i+1))))
		var filtered []client.WatchEvent
		for _, e := range got {
			if !slicesContains(st.maybe, e) {
				filtered = append(filtered, e)
			}
		}
		if !reflect.DeepEqual(filtered, st.want) {
			t.Errorf("%s:\ngot  %v\nwant %v", st.cmd, got, st.want)
		}
	}

	// The CLI's watch --json: NDJSON, one event per line, until the stop.
	cli := cliWatch(t, dataDir, "watched")
	t.Run("cli", func(t *testing.T) {
		// The watch is set up once an event arrives: touch files until one
		// is seen.
		deadline := time.Now().Add(time.Minute)
		for i := 0; ; i++ {
			probe := fmt.Sprintf("%s/cli%d", h, i)
			if out, code := run(t, c, "watched", "touch "+probe); code != 0 {
				t.Fatalf("touch: %d %s", code, out)
			}
			if e, ok := cli.next(t, 2*time.Second, named(probe)); ok {
				if e.Type != client.WatchCreated || e.Dir {
					t.Errorf("watch --json: %+v, want a created file", e)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("watch --json printed no event for the files touched")
			}
		}
	})

	if err := c.Stop(ctx, "watched"); err != nil {
		t.Fatal(err)
	}
	if e, ok := cli.next(t, 30*time.Second, func(e client.WatchEvent) bool { return e.Type == client.WatchEnded }); !ok || !strings.Contains(e.Reason, "stopped") {
		t.Errorf("watch --json after the stop: %+v %v, want an ended event", e, ok)
	}
	if err := cli.wait(t); err != nil {
		t.Errorf("watch --json after the stop: %v, want exit 0", err)
	}
	for name, s := range map[string]*watchStream{"all": all, "src": src} {
		evs := s.until(t, func(e client.WatchEvent) bool { return e.Type == client.WatchEnded })
		last := evs[len(evs)-1]
		if !strings.Contains(last.Reason, "stopped") {
			t.Errorf("%s: ended %q", name, last.Reason)
		}
		select {
		case err := <-s.err:
			if !errors.Is(err, io.EOF) {
				t.Errorf("%s: after ended: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: the stream did not end after ended", name)
		}
		if name != "src" {
			continue
		}
		// The watch of src saw src and what moved in and out of it only.
		want := []client.WatchEvent{
			dirEv("created", h+"/src"), ev("created", h+"/src/b.txt"),
			ev("created", h+"/src/c.txt"), // moved in
			dirEv("deleted", h+"/src"),    // moved out
			{Type: client.WatchEnded, Reason: last.Reason},
		}
		if got := netEffect(evs); !reflect.DeepEqual(got, want) {
			t.Errorf("watch of src:\ngot  %v\nwant %v", got, want)
		}
	}

	if _, err := c.Watch(ctx, "watched", ""); !isCode(err, client.CodeState) || !strings.Contains(err.Error(), "not running") {
		t.Errorf("watch of a stopped computer: %v", err)
	}
}

func slicesContains(s []client.WatchEvent, e client.WatchEvent) bool {
	for _, x := range s {
		if x == e {
			return true
		}
	}
	return false
}

// TestWatchBurst: 20,000 files made at once, with one watcher reading and
// one not reading at all, neither hold the command up, and what the
// watchers miss they say they missed.
func TestWatchBurst(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	newComputer(t, c, "burst")
	const n = 20000
	mk := func(dir string) string {
		return fmt.Sprintf("mkdir %[1]s && cd %[1]s && i=0; while [ $i -lt %[2]d ]; do : > f$i; i=$((i+1)); done", dir, n)
	}
	sh := func(cmd string) {
		t.Helper()
		if out, code := run(t, c, "burst", cmd); code != 0 {
			t.Fatalf("%.60s...: exit %d: %s", cmd, code, out)
		}
	}
	start := time.Now()
	sh(mk("/home/ohm/unwatched"))
	base := time.Since(start)

	reader, err := c.Watch(ctx, "burst", "")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	stalled, err := c.Watch(ctx, "burst", "")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	rs := streamWatch(reader)

	start = time.Now()
	sh(mk("/home/ohm/watched") + " && touch /home/ohm/end")
	watched := time.Since(start)
	t.Logf("%d files: %v unwatched, %v with two watches (one not read)", n, base, watched)

	evs := rs.until(t, named("/home/ohm/end"))
	created, overflow := 0, false
	for _, e := range evs {
		switch {
		case e.Type == client.WatchCreated && path.Dir(e.Path) == "/home/ohm/watched":
			created++
		case e.Type == client.WatchOverflow:
			overflow = true
		}
	}
	t.Logf("the reading watch: %d of %d files, overflow %v", created, n, overflow)
	if created != n && !overflow {
		t.Errorf("the reading watch saw %d of %d files and no overflow", created, n)
	}

	// The stalled one is read only now: it dropped most and says so.
	ss := streamWatch(stalled)
	sh("touch /home/ohm/end2")
	evs = ss.until(t, named("/home/ohm/end2"))
	created, overflow, dropped := 0, false, 0
	for _, e := range evs {
		switch e.Type {
		case client.WatchCreated:
			created++
		case client.WatchOverflow:
			overflow = true
			dropped += e.Dropped
		}
	}
	t.Logf("the stalled watch: %d events, %d created, %d dropped", len(evs), created, dropped)
	if !overflow {
		t.Errorf("the stalled watch lost events without an overflow event (%d created)", created)
	}
}

// cliStream is a running `ohm computer watch NAME --json`, its lines
// parsed in the background (where nothing calls t.Fatal).
type cliStream struct {
	cmd    *exec.Cmd
	events chan client.WatchEvent // closed at the end of its output
	bad    chan string            // lines that are not one JSON event
	stderr *strings.Builder
}

// cliWatch starts `ohm computer watch name --json` on the daemon of dir.
func cliWatch(t *testing.T, dir, name string) *cliStream {
	t.Helper()
	cmd := exec.Command(buildOhm(t), "computer", "watch", name, "--json", "--data-dir", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &cliStream{cmd: cmd, events: make(chan client.WatchEvent, 1024), bad: make(chan string, 16), stderr: &strings.Builder{}}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e client.WatchEvent
			dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil || e.Type == "" {
				select {
				case s.bad <- sc.Text():
				default:
				}
				continue
			}
			s.events <- e
		}
	}()
	return s
}

// next returns the first event matching want within d; events before it
// are skipped.
func (s *cliStream) next(t *testing.T, d time.Duration, want func(client.WatchEvent) bool) (client.WatchEvent, bool) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case line := <-s.bad:
			t.Errorf("watch --json printed a line that is not one event: %q", line)
		case e, ok := <-s.events:
			if !ok {
				t.Fatalf("watch --json ended early: %v", s.wait(t))
			}
			if want(e) {
				return e, true
			}
		case <-timeout:
			return client.WatchEvent{}, false
		}
	}
}

// wait waits for the command to exit, once its output has ended.
func (s *cliStream) wait(t *testing.T) error {
	t.Helper()
	for range s.events {
	}
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("%w: %s", err, s.stderr)
	}
	return nil
}
