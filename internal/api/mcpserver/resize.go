package mcpserver

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ResizeInput are the arguments of resize.
type ResizeInput struct {
	Name       string `json:"name" jsonschema:"the computer"`
	DiskSizeMB int    `json:"disk_size_mb" jsonschema:"the root disk's new size in MB: at least its current size (a root disk never shrinks)"`
}

// ResizeOutput is the answer of resize.
type ResizeOutput struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	DiskSizeMB int    `json:"disk_size_mb"`
}

// resizeTool is the description of the resize tool.
var resizeTool = &mcp.Tool{Name: "resize", Description: "Grow a computer's root disk (the space for packages and system files outside /home/ohm) to disk_size_mb; a running computer grows at once, a stopped one at its next start. It never shrinks."}

func (t tools) resize(ctx context.Context, _ *mcp.CallToolRequest, in ResizeInput) (*mcp.CallToolResult, ResizeOutput, error) {
	if err := t.c.Resize(ctx, in.Name, in.DiskSizeMB); err != nil {
		return nil, ResizeOutput{}, err
	}
	c, err := t.c.Get(ctx, in.Name)
	if err != nil {
		return nil, ResizeOutput{}, err
	}
	return nil, ResizeOutput{Name: c.Name, State: c.State, DiskSizeMB: c.DiskSizeMB}, nil
}
