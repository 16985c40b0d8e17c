package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Client talks to one Ohm daemon over its Unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client of the daemon listening on socket. It does not
// connect; see Connect for a client that starts the daemon when needed.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// base is the URL prefix of requests; the host is ignored by the dialer.
const base = "http://ohm"

func (c *Client) do(ctx context.Context, method, path string, body any, accept string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("talk to the ohm daemon at %s: %w", c.socket, unwrapURLError(err))
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb struct {
		Error ErrorBody `json:"error"`
	}
	if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
		return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	return &Error{Status: resp.StatusCode, Code: "unknown", Message: fmt.Sprintf("server answered %s: %s", resp.Status, strings.TrimSpace(string(b)))}
}

func (c *Client) doJSON(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Health checks that the daemon answers.
func (c *Client) Health(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Create creates a computer and returns it running. progress, if not nil,
// gets each line of template build output while create has to build it.
func (c *Client) Create(ctx context.Context, req CreateRequest, progress func(line string)) (*Computer, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/computers", req, "application/x-ndjson")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var comp *Computer
	err = readEvents(resp.Body, func(ev *Event) error {
		switch {
		case ev.Progress != "":
			if progress != nil {
				progress(ev.Progress)
			}
		case ev.Computer != nil:
			comp = ev.Computer
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if comp == nil {
		return nil, errors.New("create: the daemon ended its answer without a computer")
	}
	return comp, nil
}

// readEvents calls fn for each NDJSON event of r until r ends; an error
// event ends it with that error.
func readEvents(r io.Reader, fn func(*Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("bad event from the daemon: %w", err)
		}
		if ev.Error != nil {
			return &Error{Code: ev.Error.Code, Message: ev.Error.Message}
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read from the daemon: %w", err)
	}
	return nil
}

// List returns every computer.
func (c *Client) List(ctx context.Context) ([]Computer, error) {
	var out struct {
		Computers []Computer `json:"computers"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/v1/computers", nil, &out); err != nil {
		return nil, err
	}
	return out.Computers, nil
}

// Get returns a computer with its disk and workspace use.
func (c *Client) Get(ctx context.Context, name string) (*Computer, error) {
	var comp Computer
	if err := c.doJSON(ctx, http.MethodGet, "/v1/computers/"+url.PathEscape(name), nil, &comp); err != nil {
		return nil, err
	}
	return &comp, nil
}

// Start starts a stopped computer.
func (c *Client) Start(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/computers/"+url.PathEscape(name)+"/start", nil, nil)
}

// Stop stops a running computer.
func (c *Client) Stop(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/computers/"+url.PathEscape(name)+"/stop", nil, nil)
}

// Delete deletes a computer, stopping it first if it runs.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/computers/"+url.PathEscape(name), nil, nil)
}

// Exec runs a command in a computer (starting it first if stopped),
// streaming its output to stdout and stderr as it comes, and returns its
// exit code.
func (c *Client) Exec(ctx context.Context, name string, req ExecRequest, stdout, stderr io.Writer) (int, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/computers/"+url.PathEscape(name)+"/exec", req, "application/x-ndjson")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	code := -1
	err = readEvents(resp.Body, func(ev *Event) error {
		if ev.ExitCode != nil {
			code = *ev.ExitCode
			return nil
		}
		w := stdout
		if ev.Stream == "stderr" {
			w = stderr
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

// WindowSize is a terminal's size.
type WindowSize struct{ Rows, Cols uint16 }

// Interactive runs a command with stdin (and a PTY if req.TTY) over an
// upgraded connection and returns its exit code. Window sizes sent on
// resize are passed to the PTY. stderr is unused with a PTY.
func (c *Client) Interactive(ctx context.Context, name string, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer, resize <-chan WindowSize) (int, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", c.socket)
	if err != nil {
		return 0, fmt.Errorf("talk to the ohm daemon at %s: %w", c.socket, err)
	}
	defer conn.Close()
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	hreq, err := http.NewRequest(http.MethodPost, base+"/v1/computers/"+url.PathEscape(name)+"/exec", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", UpgradeProtocol)
	if err := hreq.Write(conn); err != nil {
		return 0, fmt.Errorf("talk to the ohm daemon: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		return 0, fmt.Errorf("talk to the ohm daemon: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return 0, decodeError(resp)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return WriteFrame(conn, typ, p)
	}
	done := make(chan struct{})
	defer close(done)
	if stdin == nil {
		if err := send(FrameStdinEOF, nil); err != nil {
			return 0, fmt.Errorf("talk to the ohm daemon: %w", err)
		}
	} else {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if send(FrameStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					send(FrameStdinEOF, nil)
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
					p := make([]byte, 4)
					binary.BigEndian.PutUint16(p, ws.Rows)
					binary.BigEndian.PutUint16(p[2:], ws.Cols)
					if send(FrameResize, p) != nil {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	for {
		typ, p, err := ReadFrame(br)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("session ended without an exit code: %w", err)
		}
		switch typ {
		case FrameStdout:
			if _, err := stdout.Write(p); err != nil {
				return 0, err
			}
		case FrameStderr:
			w := stderr
			if w == nil {
				w = stdout
			}
			if _, err := w.Write(p); err != nil {
				return 0, err
			}
		case FrameExit:
			if len(p) != 4 {
				return 0, errors.New("bad exit frame")
			}
			return int(int32(binary.BigEndian.Uint32(p))), nil
		case FrameError:
			var eb ErrorBody
			json.Unmarshal(p, &eb)
			return 0, &Error{Code: eb.Code, Message: eb.Message}
		}
	}
}

func filesPath(name, p, user string) string {
	q := url.Values{"path": {p}}
	if user != "" {
		q.Set("user", user)
	}
	return "/v1/computers/" + url.PathEscape(name) + "/files?" + q.Encode()
}

// PutFile writes r to the file p in a computer (created or truncated),
// streaming it.
func (c *Client) PutFile(ctx context.Context, name, p, user string, r io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+filesPath(name, p, user), r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("talk to the ohm daemon at %s: %w", c.socket, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

// GetFile copies the file p of a computer to w, streaming it.
func (c *Client) GetFile(ctx context.Context, name, p, user string, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, filesPath(name, p, user), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("read %s:%s: %w", name, p, err)
	}
	return nil
}
