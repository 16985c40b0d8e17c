package api

import (
	"encoding/json"
	"net/http"
	"time"

	"ohm/client"
	"ohm/internal/computer"
	changes "ohm/internal/watch"
)

// watchWriteTimeout bounds how long one write to a watching client may
// take: a client that stops reading loses its watch rather than holding a
// handler forever (the feed itself never waits for it: it drops events
// and says so with an overflow event).
const watchWriteTimeout = time.Minute

// wireWatchEvent is the wire form of a feed's event.
func wireWatchEvent(e changes.Event) client.WatchEvent {
	return client.WatchEvent{Type: string(e.Kind), Path: e.Path, OldPath: e.OldPath, Dir: e.Dir, Dropped: e.Dropped, Reason: e.Reason}
}

// watch streams the changes under ?path= of a running computer's
// workspace as NDJSON: {"type":"watching"} once the watch is in place,
// the changes, and {"type":"ended"} when the computer stops.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := s.m.Watch(r.Context(), name, r.URL.Query().Get("path"), computer.WatchOptions{})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	p := r.URL.Query().Get("path")
	if p == "" {
		p = computer.WorkspaceHome
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	send := func(ev client.WatchEvent, flush bool) bool {
		rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
		if err := enc.Encode(ev); err != nil {
			return false
		}
		return !flush || rc.Flush() == nil
	}
	if !send(client.WatchEvent{Type: client.WatchWatching, Path: p, Dir: true}, true) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-f.Events():
			if !ok {
				reason := "the watch ended"
				if why := f.Ended(); why != "" {
					reason = "the computer stopped: " + why
				} else if err := f.Err(); err != nil {
					reason = err.Error()
				}
				send(client.WatchEvent{Type: client.WatchEnded, Reason: reason}, true)
				return
			}
			// Flushed when the feed has nothing more ready, so that a
			// burst goes out in few writes.
			if !send(wireWatchEvent(e), len(f.Events()) == 0) {
				return
			}
		}
	}
}
