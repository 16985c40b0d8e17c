package client

import (
	"context"
	"net/http"
)

// ResizeRequest is the body of POST /v1/computers/{name}/resize.
type ResizeRequest struct {
	// DiskSizeMB is the root disk's new size: at least its current one (a
	// root disk grows, it never shrinks).
	DiskSizeMB int `json:"disk_size_mb"`
}

// Resize grows computer name's root disk to diskSizeMB: a running
// computer at once (df inside shows it as Resize returns), a stopped one
// at its next start. A smaller size, or growth the host cannot give, is
// refused (CodeInvalid).
func (c *Client) Resize(ctx context.Context, name string, diskSizeMB int) error {
	return c.doJSON(ctx, http.MethodPost, computerPath(name)+"/resize", ResizeRequest{DiskSizeMB: diskSizeMB}, nil)
}
