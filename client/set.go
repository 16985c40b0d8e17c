package client

import (
	"context"
	"net/http"
	"time"
)

// Set changes the settings of computer name that req gives (PATCH
// /v1/computers/{name}) and returns its record with them. Bad input
// changes nothing.
func (c *Client) Set(ctx context.Context, name string, req SetRequest) (*Computer, error) {
	var comp Computer
	if err := c.doJSON(ctx, http.MethodPatch, computerPath(name), req, &comp); err != nil {
		return nil, err
	}
	return &comp, nil
}

// Seconds returns d in seconds as the API's *_seconds fields take it, for
// CreateRequest.IdleTimeoutSeconds and SetRequest.IdleTimeoutSeconds.
func Seconds(d time.Duration) *float64 {
	s := d.Seconds()
	return &s
}
