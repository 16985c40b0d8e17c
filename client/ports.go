package client

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// # Preview URLs
//
// POST /v1/computers/{name}/ports/{port} exposes a TCP port of a computer
// at a preview URL, http(s)://<port>-<name>.<preview domain>:<daemon
// port>/ on the daemon's TCP listener: HTTP and WebSocket requests to that
// host reach the port inside the computer (through its init, so a
// computer without a network works too). A private preview's URL carries
// the port's share token (?ohm_token=...), which the daemon turns into a
// cookie for that host; a request with the API token as a bearer header
// passes as well. A public one opens to anyone who can reach the
// listener. DELETE removes it; GET .../ports lists them.

// Port is an exposed port of a computer.
type Port struct {
	Port   int  `json:"port"`
	Public bool `json:"public"`
	// URL is the preview URL, with the share token unless Public. Empty
	// when the daemon serves no TCP listener (`ohm serve --listen`).
	URL       string    `json:"url,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// PortList is the answer of GET /v1/computers/{name}/ports.
type PortList struct {
	Ports []Port `json:"ports"`
}

// ExposeRequest is the body of POST /v1/computers/{name}/ports/{port}.
type ExposeRequest struct {
	// Public opens the preview without a token.
	Public bool `json:"public,omitempty"`
}

func portPath(name string, port int) string {
	return computerPath(name) + "/ports/" + strconv.Itoa(port)
}

// Expose exposes port of computer name and returns it with its preview
// URL. Exposing it again changes only whether it is public.
func (c *Client) Expose(ctx context.Context, name string, port int, public bool) (*Port, error) {
	var out Port
	if err := c.doJSON(ctx, http.MethodPost, portPath(name, port), ExposeRequest{Public: public}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Unexpose removes the preview of port of computer name and returns what
// it was.
func (c *Client) Unexpose(ctx context.Context, name string, port int) (*Port, error) {
	var out Port
	if err := c.doJSON(ctx, http.MethodDelete, portPath(name, port), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ports lists the exposed ports of computer name.
func (c *Client) Ports(ctx context.Context, name string) ([]Port, error) {
	var out PortList
	if err := c.doJSON(ctx, http.MethodGet, computerPath(name)+"/ports", nil, &out); err != nil {
		return nil, err
	}
	return out.Ports, nil
}
