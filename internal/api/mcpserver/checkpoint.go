package mcpserver

import (
	"context"
	"errors"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/client"
)

// addCheckpointTools adds the tools that save, restore and fork a
// computer's disks (docs/checkpoints.md).
func addCheckpointTools(s *mcp.Server, t tools) {
	mcp.AddTool(s, &mcp.Tool{Name: "checkpoint", Description: "Save a computer's disks (workspace and root disk) before a risky step; it keeps running. Memory and processes are not saved. Returns the checkpoint id for restore and fork."}, t.checkpoint)
	mcp.AddTool(s, &mcp.Tool{Name: "checkpoints", Description: "List a computer's checkpoints, oldest first."}, t.checkpoints)
	mcp.AddTool(s, &mcp.Tool{Name: "restore", Description: "Put a computer's disks back to a checkpoint. A running computer restarts: its processes are gone, its files are as they were at the checkpoint."}, t.restore)
	mcp.AddTool(s, &mcp.Tool{Name: "fork", Description: "Make and start a copy of a computer, from a checkpoint or from its disks now, to try something in parallel. Writes in one never show in the other. Returns the new computer."}, t.fork)
	mcp.AddTool(s, &mcp.Tool{Name: "delete_checkpoint", Description: "Delete a checkpoint of a computer, freeing what it alone holds; the computer and its other checkpoints are unchanged."}, t.deleteCheckpoint)
}

// CheckpointInput are the arguments of checkpoint.
type CheckpointInput struct {
	Name  string `json:"name" jsonschema:"the computer"`
	Label string `json:"label,omitempty" jsonschema:"a note saying what the checkpoint is"`
}

// CheckpointOutput is a checkpoint as the tools return it.
type CheckpointOutput struct {
	ID        string `json:"id"`
	Label     string `json:"label,omitempty"`
	CreatedAt string `json:"created_at"`
	Bytes     uint64 `json:"bytes" jsonschema:"what the checkpoint alone holds"`
}

func checkpointOut(c *client.Checkpoint) CheckpointOutput {
	return CheckpointOutput{ID: c.ID, Label: c.Label, CreatedAt: c.CreatedAt.Format("2006-01-02T15:04:05Z07:00"), Bytes: c.Bytes}
}

func (t tools) checkpoint(ctx context.Context, _ *mcp.CallToolRequest, in CheckpointInput) (*mcp.CallToolResult, CheckpointOutput, error) {
	c, err := t.c.Checkpoint(ctx, in.Name, in.Label)
	if err != nil {
		return nil, CheckpointOutput{}, err
	}
	return nil, checkpointOut(c), nil
}

// CheckpointsOutput is the answer of checkpoints.
type CheckpointsOutput struct {
	Checkpoints []CheckpointOutput `json:"checkpoints"`
}

func (t tools) checkpoints(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, CheckpointsOutput, error) {
	cs, err := t.c.Checkpoints(ctx, in.Name)
	if err != nil {
		return nil, CheckpointsOutput{}, err
	}
	out := CheckpointsOutput{Checkpoints: []CheckpointOutput{}}
	for i := range cs {
		out.Checkpoints = append(out.Checkpoints, checkpointOut(&cs[i]))
	}
	return nil, out, nil
}

// RestoreInput are the arguments of restore.
type RestoreInput struct {
	Name       string `json:"name" jsonschema:"the computer"`
	Checkpoint string `json:"checkpoint" jsonschema:"the checkpoint id"`
}

func (t tools) restore(ctx context.Context, _ *mcp.CallToolRequest, in RestoreInput) (*mcp.CallToolResult, ComputerOutput, error) {
	c, err := t.c.Restore(ctx, in.Name, in.Checkpoint)
	if err != nil {
		return nil, ComputerOutput{}, err
	}
	return nil, computerOut(c), nil
}

// ForkInput are the arguments of fork.
type ForkInput struct {
	Name       string `json:"name" jsonschema:"the computer to fork"`
	New        string `json:"new,omitempty" jsonschema:"the fork's name; default: a free friendly name"`
	Checkpoint string `json:"checkpoint,omitempty" jsonschema:"the checkpoint to fork from; default: the disks as they are now"`
}

func (t tools) fork(ctx context.Context, _ *mcp.CallToolRequest, in ForkInput) (*mcp.CallToolResult, ComputerOutput, error) {
	c, err := t.c.Fork(ctx, in.Name, client.ForkRequest{Name: in.New, Checkpoint: in.Checkpoint})
	if err != nil {
		return nil, ComputerOutput{}, err
	}
	return nil, computerOut(c), nil
}

// CheckpointRef names a checkpoint of a computer: the arguments of
// delete_checkpoint, and its answer.
type CheckpointRef struct {
	Name       string `json:"name" jsonschema:"the computer"`
	Checkpoint string `json:"checkpoint" jsonschema:"the checkpoint id"`
}

func (t tools) deleteCheckpoint(ctx context.Context, _ *mcp.CallToolRequest, in CheckpointRef) (*mcp.CallToolResult, CheckpointRef, error) {
	if in.Checkpoint == "" {
		return nil, CheckpointRef{}, errors.New("checkpoint: the id of the checkpoint to delete is required (list them with checkpoints)")
	}
	if err := t.c.DeleteCheckpoint(ctx, in.Name, in.Checkpoint); err != nil {
		return nil, CheckpointRef{}, err
	}
	return nil, in, nil
}
