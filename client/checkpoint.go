package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Checkpoint is a saved point of a computer's disks (its workspace and
// root disk). Memory and processes are not saved: a restored or forked
// computer boots fresh on the saved disks.
type Checkpoint struct {
	ID        string    `json:"id"`
	Label     string    `json:"label,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Bytes is what the checkpoint alone holds: what deleting it gives back.
	Bytes uint64   `json:"bytes"`
	Disks []string `json:"disks"` // the disk images it holds: workspace.img, root.img
}

// CheckpointRequest is the body of POST /v1/computers/{name}/checkpoints.
type CheckpointRequest struct {
	Label string `json:"label,omitempty"`
}

// CheckpointList is the answer of GET /v1/computers/{name}/checkpoints,
// oldest first.
type CheckpointList struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// CheckpointDeleted is the answer of DELETE
// /v1/computers/{name}/checkpoints/{id}.
type CheckpointDeleted struct {
	ID    string `json:"id"`
	State string `json:"state"` // always "deleted"
}

// RestoreRequest is the body of POST /v1/computers/{name}/restore.
type RestoreRequest struct {
	Checkpoint string `json:"checkpoint"`
}

// ForkRequest is the body of POST /v1/computers/{name}/fork.
type ForkRequest struct {
	Name       string `json:"name,omitempty"`       // the fork's name; default: a free friendly name
	Checkpoint string `json:"checkpoint,omitempty"` // default: the computer's disks as they are now
}

// Checkpoint saves the disks of computer name; a running computer keeps
// running (its filesystems are frozen for a moment).
func (c *Client) Checkpoint(ctx context.Context, name, label string) (*Checkpoint, error) {
	var out Checkpoint
	if err := c.doJSON(ctx, http.MethodPost, computerPath(name)+"/checkpoints", CheckpointRequest{Label: label}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Checkpoints lists the checkpoints of computer name, oldest first.
func (c *Client) Checkpoints(ctx context.Context, name string) ([]Checkpoint, error) {
	var out CheckpointList
	if err := c.doJSON(ctx, http.MethodGet, computerPath(name)+"/checkpoints", nil, &out); err != nil {
		return nil, err
	}
	return out.Checkpoints, nil
}

// DeleteCheckpoint deletes checkpoint id of computer name.
func (c *Client) DeleteCheckpoint(ctx context.Context, name, id string) error {
	return c.doJSON(ctx, http.MethodDelete, computerPath(name)+"/checkpoints/"+url.PathEscape(id), nil, nil)
}

// Restore puts the disks of computer name back to checkpoint id. A
// running computer is stopped and started again (its processes restart).
func (c *Client) Restore(ctx context.Context, name, id string) (*Computer, error) {
	var out Computer
	if err := c.doJSON(ctx, http.MethodPost, computerPath(name)+"/restore", RestoreRequest{Checkpoint: id}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Fork makes and starts a new computer with the disks of computer name at
// checkpoint (now, when empty), sharing their blocks.
func (c *Client) Fork(ctx context.Context, name string, req ForkRequest) (*Computer, error) {
	var out Computer
	if err := c.doJSON(ctx, http.MethodPost, computerPath(name)+"/fork", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
