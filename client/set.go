package client

import (
	"context"
	"net/http"
)

// SetRequest is the body of PATCH /v1/computers/{name}: what to change of
// a computer, running or not. A field left out (nil) stays as it is.
type SetRequest struct {
	// Egress allow list: each list given replaces the computer's (an
	// empty one clears it); with both empty a networked computer reaches
	// anywhere but the host. A running computer follows a change at once.
	AllowHosts *[]string `json:"allow_hosts,omitempty"`
	AllowCIDRs *[]string `json:"allow_cidrs,omitempty"`
}

// Set changes computer name as req says and returns it. Bad input (a
// malformed host pattern or CIDR) changes nothing.
func (c *Client) Set(ctx context.Context, name string, req SetRequest) (*Computer, error) {
	var out Computer
	if err := c.doJSON(ctx, http.MethodPatch, computerPath(name), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
