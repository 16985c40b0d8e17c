package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// The types of WatchEvent.
const (
	WatchWatching = "watching" // first: the watch is in place
	WatchCreated  = "created"
	WatchModified = "modified"
	WatchDeleted  = "deleted"
	WatchMoved    = "moved"    // old_path was renamed to path
	WatchOverflow = "overflow" // events were dropped: rescan path
	WatchEnded    = "ended"    // last: the computer stopped (reason says why)
)

// WatchEvent is one line of GET /v1/computers/{name}/watch.
type WatchEvent struct {
	Type    string `json:"type"`
	Path    string `json:"path,omitempty"`     // in the computer; for moved, the new path
	OldPath string `json:"old_path,omitempty"` // moved only
	Dir     bool   `json:"dir,omitempty"`      // path is a directory
	// Dropped is, for overflow, at least how many events were lost (0:
	// unknown, the kernel's queue overflowed).
	Dropped int    `json:"dropped,omitempty"`
	Reason  string `json:"reason,omitempty"` // overflow: where events were lost; ended: why
}

// Watcher reads a watch's events; see Client.Watch.
type Watcher struct {
	body io.ReadCloser
	sc   *bufio.Scanner
	done bool
}

// Watch starts watching the changes under path (in the computer; "" is
// /home/ohm) of running computer name. It returns once the watch is in
// place: changes made after it returns are reported. Read the events with
// Next; Close ends the watch.
func (c *Client) Watch(ctx context.Context, name, path string) (*Watcher, error) {
	p := computerPath(name) + "/watch"
	if path != "" {
		p += "?path=" + url.QueryEscape(path)
	}
	resp, err := c.do(ctx, http.MethodGet, p, nil, "application/x-ndjson")
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	w := &Watcher{body: resp.Body, sc: sc}
	first, err := w.Next()
	if err != nil {
		w.Close()
		return nil, err
	}
	if first.Type != WatchWatching {
		w.Close()
		return nil, fmt.Errorf("watch %s: the daemon began with a %q event", name, first.Type)
	}
	return w, nil
}

// Next returns the next event. After the ended event it returns io.EOF;
// a stream cut before it (the daemon went away) gives
// io.ErrUnexpectedEOF, and an error event of the daemon an *Error.
func (w *Watcher) Next() (WatchEvent, error) {
	if w.done {
		return WatchEvent{}, io.EOF
	}
	for w.sc.Scan() {
		line := w.sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var probe struct {
			WatchEvent
			Error *ErrorBody `json:"error"`
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			return WatchEvent{}, fmt.Errorf("bad watch event from the daemon: %w", err)
		}
		if probe.Error != nil {
			w.done = true
			return WatchEvent{}, &Error{Code: probe.Error.Code, Message: probe.Error.Message}
		}
		if probe.Type == WatchEnded {
			w.done = true
		}
		return probe.WatchEvent, nil
	}
	w.done = true
	if err := w.sc.Err(); err != nil {
		return WatchEvent{}, fmt.Errorf("read from the daemon: %w", err)
	}
	return WatchEvent{}, io.ErrUnexpectedEOF
}

// Close ends the watch.
func (w *Watcher) Close() error {
	w.done = true
	return w.body.Close()
}
