package watch

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs for a test (tmpfs reports file handles to
// fanotify as btrfs does); it skips without root.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount, fanotify)")
	}
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=512m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func openFeed(t *testing.T, opts Options) *Feed {
	t.Helper()
	f, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// collect reads f's events until one satisfies stop or the deadline
// passes.
func collect(t *testing.T, f *Feed, stop func(Event) bool) []Event {
	t.Helper()
	var got []Event
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-f.Events():
			if !ok {
				return got
			}
			got = append(got, e)
			if stop(e) {
				return got
			}
		case <-deadline:
			t.Fatalf("no end event within 10s; got %v", got)
		}
	}
}

func marker(name string) func(Event) bool {
	return func(e Event) bool { return filepath.Base(e.Path) == name }
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFeedReportsChanges(t *testing.T) {
	root := mountTmpfs(t)
	must(t, os.Mkdir(filepath.Join(root, "old"), 0o755))
	f := openFeed(t, Options{Root: root, Prefix: "/home/ohm"})
	p := func(s string) string { return filepath.Join(root, s) }
	must(t, os.WriteFile(p("a"), []byte("1"), 0o644))
	must(t, os.Mkdir(p("d"), 0o755))
	must(t, os.WriteFile(p("d/b"), []byte("2"), 0o644))
	must(t, os.Rename(p("d/b"), p("c")))
	must(t, os.Rename(p("old"), p("new")))
	must(t, os.WriteFile(p("end1"), nil, 0o644))
	got := collect(t, f, marker("end1"))
	want := []Event{
		{Kind: Created, Path: "/home/ohm/a"},
		{Kind: Created, Path: "/home/ohm/d", Dir: true},
		{Kind: Created, Path: "/home/ohm/d/b"},
		{Kind: Moved, OldPath: "/home/ohm/d/b", Path: "/home/ohm/c"},
		{Kind: Moved, OldPath: "/home/ohm/old", Path: "/home/ohm/new", Dir: true},
		{Kind: Created, Path: "/home/ohm/end1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}

	// A later window: modified, deleted (a directory with its files).
	must(t, os.WriteFile(p("a"), []byte("more"), 0o644))
	must(t, os.Remove(p("c")))
	must(t, os.RemoveAll(p("d")))
	must(t, os.WriteFile(p("end2"), nil, 0o644))
	got = collect(t, f, marker("end2"))
	want = []Event{
		{Kind: Modified, Path: "/home/ohm/a"},
		{Kind: Deleted, Path: "/home/ohm/c"},
		{Kind: Deleted, Path: "/home/ohm/d", Dir: true},
		{Kind: Created, Path: "/home/ohm/end2"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
}

func TestFeedPathFilter(t *testing.T) {
	root := mountTmpfs(t)
	p := func(s string) string { return filepath.Join(root, s) }
	must(t, os.MkdirAll(p("src/sub"), 0o755))
	must(t, os.Mkdir(p("other"), 0o755))
	f := openFeed(t, Options{Root: root, Prefix: "/home/ohm", Path: "/home/ohm/src"})
	must(t, os.WriteFile(p("other/x"), nil, 0o644))
	must(t, os.WriteFile(p("srcfoo"), nil, 0o644)) // a sibling sharing the prefix
	must(t, os.WriteFile(p("src/sub/y"), nil, 0o644))
	must(t, os.Rename(p("src/sub/y"), p("other/y"))) // moved out: deleted
	must(t, os.Rename(p("other/x"), p("src/x")))     // moved in: created
	must(t, os.WriteFile(p("src/end"), nil, 0o644))
	got := collect(t, f, marker("end"))
	want := []Event{
		{Kind: Created, Path: "/home/ohm/src/sub/y"},
		{Kind: Deleted, Path: "/home/ohm/src/sub/y"},
		{Kind: Created, Path: "/home/ohm/src/x"},
		{Kind: Created, Path: "/home/ohm/src/end"},
	}
	// Created then deleted in one window may coalesce to nothing.
	if !reflect.DeepEqual(got, want) && !reflect.DeepEqual(got, append([]Event(nil), want[2:]...)) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
}

// TestFeedOverflow: a burst larger than the buffer, with nobody reading,
// neither blocks the writer nor loses the signal to rescan.
func TestFeedOverflow(t *testing.T) {
	root := mountTmpfs(t)
	f := openFeed(t, Options{Root: root, Prefix: "/home/ohm", Buffer: 100})
	start := time.Now()
	for i := range 20000 {
		must(t, os.WriteFile(filepath.Join(root, fmt.Sprintf("f%05d", i)), nil, 0o644))
	}
	t.Logf("20000 files written in %v with a feed that nobody reads", time.Since(start))
	must(t, os.WriteFile(filepath.Join(root, "end"), nil, 0o644))
	// The buffer is full: the end marker itself is dropped; wait for the
	// feed to have read everything the kernel queued, then read.
	f.Close()
	var created, overflows, dropped int
	for e := range f.Events() {
		switch e.Kind {
		case Created:
			created++
		case Overflow:
			overflows++
			dropped += e.Dropped
		}
	}
	if overflows == 0 {
		t.Fatalf("%d created, no overflow event", created)
	}
	if created > 99 {
		t.Errorf("%d created events through a buffer of 100", created)
	}
	t.Logf("%d created, %d overflow events, %d dropped", created, overflows, dropped)
}

func TestOpenErrors(t *testing.T) {
	root := mountTmpfs(t)
	for _, opts := range []Options{
		{Root: root, Prefix: "/home/ohm", Path: "/etc"},
		{Root: root, Prefix: "/home/ohm", Path: "/home/ohmx"},
		{Root: filepath.Join(root, "missing"), Prefix: "/home/ohm"},
	} {
		if f, err := Open(opts); err == nil {
			f.Close()
			t.Errorf("Open(%+v) succeeded", opts)
		}
	}
}

// TestFeedRenamedBeforeRead: the events of a window are read only after
// the directories they name were renamed (the feed's reader starts after
// the changes), and still carry the paths of their own moment.
func TestFeedRenamedBeforeRead(t *testing.T) {
	root := mountTmpfs(t)
	p := func(s string) string { return filepath.Join(root, s) }
	for _, path := range []string{"", "/home/ohm/src"} {
		t.Run("path="+path, func(t *testing.T) {
			must(t, os.RemoveAll(p("top")))
			f, err := open(Options{Root: root, Prefix: "/home/ohm", Path: path})
			if err != nil {
				t.Fatal(err)
			}
			must(t, os.Mkdir(p("src"), 0o755))
			must(t, os.WriteFile(p("a"), []byte("1"), 0o644))
			must(t, os.Rename(p("a"), p("src/c")))
			must(t, os.Rename(p("src"), p("renamed")))
			must(t, os.Mkdir(p("top"), 0o755))
			must(t, os.Rename(p("renamed"), p("top/r")))
			must(t, os.WriteFile(p("top/r/d"), nil, 0o644))
			must(t, os.WriteFile(p("top/r/end"), nil, 0o644))
			go f.run()
			t.Cleanup(f.Close)
			var got []Event
			if path == "" {
				got = collect(t, f, marker("end"))
			}
			want := []Event{
				{Kind: Created, Path: "/home/ohm/src", Dir: true},
				{Kind: Created, Path: "/home/ohm/a"},
				{Kind: Moved, OldPath: "/home/ohm/a", Path: "/home/ohm/src/c"},
				{Kind: Moved, OldPath: "/home/ohm/src", Path: "/home/ohm/renamed", Dir: true},
				{Kind: Created, Path: "/home/ohm/top", Dir: true},
				{Kind: Moved, OldPath: "/home/ohm/renamed", Path: "/home/ohm/top/r", Dir: true},
				{Kind: Created, Path: "/home/ohm/top/r/d"},
				{Kind: Created, Path: "/home/ohm/top/r/end"},
			}
			if path != "" {
				// Only src and what moved in and out of it; the marker is
				// outside, so the feed is closed to read to the end.
				f.Close()
				got = nil
				for e := range f.Events() {
					got = append(got, e)
				}
				// (src created, then moved out: deleted, in one window.)
				want = []Event{{Kind: Created, Path: "/home/ohm/src/c"}}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got\n%v\nwant\n%v", got, want)
			}
		})
	}
}
