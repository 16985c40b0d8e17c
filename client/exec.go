package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/coder/websocket"
)

// Exec runs a command in a computer (starting it first if stopped),
// streaming its output to stdout and stderr as it comes, and returns its
// exit code. Cancelling ctx kills the command unless req.Background.
func (c *Client) Exec(ctx context.Context, name string, req ExecRequest, stdout, stderr io.Writer) (int, error) {
	resp, err := c.do(ctx, http.MethodPost, computerPath(name)+"/exec", req, "application/x-ndjson")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return readOutput(resp.Body, stdout, stderr, nil)
}

// readOutput copies the output events of r to stdout and stderr until the
// exit code; onProcess gets a {"process": ...} event.
func readOutput(r io.Reader, stdout, stderr io.Writer, onProcess func(*Process)) (int, error) {
	code := -1
	err := readEvents(r, func(ev *Event) error {
		switch {
		case ev.ExitCode != nil:
			code = *ev.ExitCode
			return nil
		case ev.Process != nil:
			if onProcess != nil {
				onProcess(ev.Process)
			}
			return nil
		case ev.Stream == "":
			return nil
		}
		w := stdout
		if ev.Stream == "stderr" {
			w = stderr
		}
		if w == nil {
			return nil
		}
		var err error
		if ev.DataB64 != nil {
			_, err = w.Write(ev.DataB64)
		} else {
			_, err = io.WriteString(w, ev.Data)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	if code < 0 {
		return 0, errors.New("the daemon ended the command's output without an exit code")
	}
	return code, nil
}

// errStarted ends reading a background exec's answer at its first event.
var errStarted = errors.New("started")

// StartBackground starts a command in the background and returns as soon
// as it runs: its output is kept for Attach and it runs until it exits or
// Kill ends it.
func (c *Client) StartBackground(ctx context.Context, name string, req ExecRequest) (*Process, error) {
	req.Background = true
	resp, err := c.do(ctx, http.MethodPost, computerPath(name)+"/exec", req, "application/x-ndjson")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var p *Process
	err = readEvents(resp.Body, func(ev *Event) error {
		if ev.Process != nil {
			p = ev.Process
			return errStarted
		}
		return nil
	})
	if p == nil {
		if err == nil {
			err = errors.New("the daemon ended a background exec without a process")
		}
		return nil, err
	}
	return p, nil
}

// Processes lists a computer's background processes, running or exited.
func (c *Client) Processes(ctx context.Context, name string) ([]Process, error) {
	var out ProcessList
	if err := c.doJSON(ctx, http.MethodGet, computerPath(name)+"/processes", nil, &out); err != nil {
		return nil, err
	}
	return out.Processes, nil
}

func processPath(name, id string) string {
	return computerPath(name) + "/processes/" + url.PathEscape(id)
}

// Process returns one background process.
func (c *Client) Process(ctx context.Context, name, id string) (*Process, error) {
	var p Process
	if err := c.doJSON(ctx, http.MethodGet, processPath(name, id), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Attach streams a background process's output, from the oldest its ring
// still holds, to stdout and stderr until it exits, and returns its exit
// code. Cancelling ctx detaches without killing it.
func (c *Client) Attach(ctx context.Context, name, id string, stdout, stderr io.Writer) (int, error) {
	resp, err := c.do(ctx, http.MethodGet, processPath(name, id)+"/attach", nil, "application/x-ndjson")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return readOutput(resp.Body, stdout, stderr, nil)
}

// Kill kills a background process (if it still runs) and forgets it.
func (c *Client) Kill(ctx context.Context, name, id string) (*Process, error) {
	var p Process
	if err := c.doJSON(ctx, http.MethodDelete, processPath(name, id), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Interactive runs a command with stdin (and a PTY if req.TTY) over a
// WebSocket and returns its exit code. Window sizes sent on resize go to
// the PTY. With a PTY both streams arrive on stdout. Cancelling ctx ends
// the session, which kills the command.
func (c *Client) Interactive(ctx context.Context, name string, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer, resize <-chan WindowSize) (int, error) {
	hdr := http.Header{}
	if c.token != "" {
		hdr.Set("Authorization", "Bearer "+c.token)
	}
	conn, resp, err := websocket.Dial(ctx, c.base+computerPath(name)+"/exec", &websocket.DialOptions{
		HTTPClient: c.hc, HTTPHeader: hdr,
	})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 {
			return 0, decodeError(resp)
		}
		return 0, fmt.Errorf("talk to the ohm daemon at %s: %w", c.where, unwrapURLError(err))
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4 << 20)
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	if err := conn.Write(ctx, websocket.MessageText, body); err != nil {
		return 0, fmt.Errorf("talk to the ohm daemon: %w", err)
	}
	sessCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	control := func(ctl Control) error {
		b, _ := json.Marshal(ctl)
		return conn.Write(sessCtx, websocket.MessageText, b)
	}
	if stdin == nil {
		if err := control(Control{Type: "eof"}); err != nil {
			return 0, fmt.Errorf("talk to the ohm daemon: %w", err)
		}
	} else {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if conn.Write(sessCtx, websocket.MessageBinary, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					control(Control{Type: "eof"})
					return
				}
			}
		}()
	}
	if resize != nil {
		go func() {
			for {
				select {
				case ws := <-resize:
					if control(Control{Type: "resize", Rows: ws.Rows, Cols: ws.Cols}) != nil {
						return
					}
				case <-sessCtx.Done():
					return
				}
			}
		}()
	}
	for {
		typ, p, err := conn.Read(sessCtx)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("session ended without an exit code: %w", err)
		}
		if typ == websocket.MessageBinary {
			if len(p) == 0 {
				continue
			}
			w := stdout
			if p[0] == StreamStderr && stderr != nil {
				w = stderr
			}
			if _, err := w.Write(p[1:]); err != nil {
				return 0, err
			}
			continue
		}
		var ev Event
		if err := json.Unmarshal(p, &ev); err != nil {
			return 0, fmt.Errorf("bad message from the daemon: %w", err)
		}
		switch {
		case ev.Error != nil:
			return 0, &Error{Code: ev.Error.Code, Message: ev.Error.Message}
		case ev.ExitCode != nil:
			conn.Close(websocket.StatusNormalClosure, "")
			return *ev.ExitCode, nil
		}
	}
}
