package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to one Ohm daemon, over its Unix socket or over TCP.
type Client struct {
	base  string // URL prefix of requests, e.g. http://ohm or https://host:7070
	where string // for error messages
	token string
	hc    *http.Client
}

// New returns a client of the daemon listening on the Unix socket socket.
// It does not connect; see Connect for a client that starts the daemon when
// needed.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	// The host is ignored by the dialer.
	return &Client{base: "http://ohm", where: socket, hc: &http.Client{Transport: tr}}
}

// NewTCP returns a client of a daemon serving TCP at baseURL
// ("http://127.0.0.1:7070", or "https://..." when it serves TLS), sending
// token as its bearer token. tlsConfig, if not nil, configures TLS (for
// example the CA that signed the daemon's certificate).
func NewTCP(baseURL, token string, tlsConfig *tls.Config) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid daemon URL %q: want http://HOST:PORT or https://HOST:PORT", baseURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig
	}
	return &Client{
		base:  strings.TrimSuffix(u.String(), "/"),
		where: u.Host,
		token: token,
		hc:    &http.Client{Transport: tr},
	}, nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("talk to the ohm daemon at %s: %w", c.where, unwrapURLError(err))
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body any, accept string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return c.send(req)
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
	var eb ErrorAnswer
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
	var out ComputerList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/computers", nil, &out); err != nil {
		return nil, err
	}
	return out.Computers, nil
}

func computerPath(name string) string { return "/v1/computers/" + url.PathEscape(name) }

// Get returns a computer with its disk and workspace use and its limits.
func (c *Client) Get(ctx context.Context, name string) (*Computer, error) {
	var comp Computer
	if err := c.doJSON(ctx, http.MethodGet, computerPath(name), nil, &comp); err != nil {
		return nil, err
	}
	return &comp, nil
}

// Start starts a stopped computer.
func (c *Client) Start(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodPost, computerPath(name)+"/start", nil, nil)
}

// Stop stops a running computer.
func (c *Client) Stop(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodPost, computerPath(name)+"/stop", nil, nil)
}

// Delete deletes a computer, stopping it first if it runs.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, computerPath(name), nil, nil)
}
