package watch

import (
	"reflect"
	"testing"
)

func TestCoalescer(t *testing.T) {
	c := func(p string) Event { return Event{Kind: Created, Path: p} }
	m := func(p string) Event { return Event{Kind: Modified, Path: p} }
	d := func(p string) Event { return Event{Kind: Deleted, Path: p} }
	mv := func(from, to string) Event { return Event{Kind: Moved, OldPath: from, Path: to} }
	mvDir := func(from, to string) Event { return Event{Kind: Moved, OldPath: from, Path: to, Dir: true} }
	tests := []struct {
		name    string
		max     int
		in      []Event
		want    []Event
		dropped int
	}{
		{"empty", 10, nil, []Event{}, 0},
		{"created then modified is created", 10, []Event{c("/a"), m("/a"), m("/a")}, []Event{c("/a")}, 0},
		{"modified twice is once", 10, []Event{m("/a"), m("/a")}, []Event{m("/a")}, 0},
		{"modified then deleted is deleted", 10, []Event{m("/a"), d("/a")}, []Event{d("/a")}, 0},
		{"created then deleted is nothing", 10, []Event{c("/a"), m("/a"), d("/a")}, []Event{}, 0},
		{"deleted then created is created", 10, []Event{d("/a"), c("/a")}, []Event{c("/a")}, 0},
		{"came and went then came back", 10, []Event{c("/a"), d("/a"), c("/a")}, []Event{c("/a")}, 0},
		{"order of first appearance", 10, []Event{m("/b"), c("/a"), m("/b"), d("/c")}, []Event{m("/b"), c("/a"), d("/c")}, 0},
		{"a move is kept", 10, []Event{mv("/a", "/b")}, []Event{mv("/a", "/b")}, 0},
		{"a move cuts its old path", 10, []Event{m("/a"), mv("/a", "/b"), c("/a")}, []Event{m("/a"), mv("/a", "/b"), c("/a")}, 0},
		{"a move cuts its new path", 10, []Event{c("/b"), mv("/a", "/b"), m("/b")}, []Event{c("/b"), mv("/a", "/b"), m("/b")}, 0},
		{"a directory move cuts below it", 10, []Event{c("/d/x"), mvDir("/d", "/e"), c("/d/x")}, []Event{c("/d/x"), mvDir("/d", "/e"), c("/d/x")}, 0},
		{"a file move does not cut a sibling with its prefix", 10, []Event{m("/d/x"), mv("/d", "/e"), m("/d/x")}, []Event{m("/d/x"), mv("/d", "/e")}, 0},
		{"full window drops and counts", 2, []Event{c("/a"), c("/b"), c("/c"), m("/a"), c("/d")}, []Event{c("/a"), c("/b")}, 2},
		{"a removed entry frees its room", 1, []Event{c("/a"), d("/a"), c("/b")}, []Event{c("/b")}, 0},
		{"dir flag follows the latest", 10, []Event{{Kind: Deleted, Path: "/a"}, {Kind: Created, Path: "/a", Dir: true}}, []Event{{Kind: Created, Path: "/a", Dir: true}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			co := newCoalescer(tt.max)
			for _, e := range tt.in {
				co.add(e)
			}
			got, dropped := co.take()
			if !reflect.DeepEqual(got, tt.want) || dropped != tt.dropped {
				t.Errorf("got %v dropped %d, want %v dropped %d", got, dropped, tt.want, tt.dropped)
			}
			if !co.empty() {
				t.Error("not empty after take")
			}
			// The next window starts afresh.
			co.add(m("/a"))
			if got, _ := co.take(); !reflect.DeepEqual(got, []Event{m("/a")}) {
				t.Errorf("next window: %v", got)
			}
		})
	}
}
