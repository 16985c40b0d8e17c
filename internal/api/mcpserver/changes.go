package mcpserver

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/client"
)

// The change feed as a tool: MCP has no streams a model reads as they
// come, so changes answers one question instead, "what did this command
// change?", from a watch around the command.

const (
	// maxChanges bounds the events changes returns; past it the answer
	// says it was truncated.
	maxChanges = 1000
	// settle is how long changes waits, after the command, for events to
	// stop arriving (the feed coalesces and delivers them a little
	// after the writes); settleMax bounds that wait.
	settle    = 500 * time.Millisecond
	settleMax = 5 * time.Second
)

func addChangesTool(s *mcp.Server, t tools) {
	mcp.AddTool(s, &mcp.Tool{Name: "changes", Description: "Run a command in a computer and report the files it created, modified, deleted or moved " +
		"under path (default /home/ohm), e.g. what an npm install or a build produced. Large bursts are coalesced; overflow events say when some were dropped."}, t.changes)
}

// ChangesInput are the arguments of changes.
type ChangesInput struct {
	Name           string  `json:"name" jsonschema:"the computer"`
	Command        string  `json:"command" jsonschema:"shell command to run (bash -lc where the template has bash)"`
	Path           string  `json:"path,omitempty" jsonschema:"directory to watch in the computer (default /home/ohm)"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 600)"`
}

// ChangesOutput is the answer of changes: the command's result and the
// changes seen while it ran.
type ChangesOutput struct {
	ExitCode  int                 `json:"exit_code"`
	Stdout    string              `json:"stdout"`
	Stderr    string              `json:"stderr"`
	Changes   []client.WatchEvent `json:"changes"`
	Truncated bool                `json:"truncated,omitempty"` // more changes (or output) than returned
}

func (t tools) changes(ctx context.Context, _ *mcp.CallToolRequest, in ChangesInput) (*mcp.CallToolResult, ChangesOutput, error) {
	if in.Command == "" {
		return nil, ChangesOutput{}, errors.New("changes: command is empty")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Starting the command starts a stopped computer; a watch needs it
	// running, so the watch begins with a no-op run.
	if _, err := t.c.Exec(ctx, in.Name, client.ExecRequest{Command: "true"}, io.Discard, io.Discard); err != nil {
		return nil, ChangesOutput{}, err
	}
	w, err := t.c.Watch(wctx, in.Name, in.Path)
	if err != nil {
		return nil, ChangesOutput{}, err
	}
	events := make(chan client.WatchEvent, 64)
	go func() {
		defer close(events)
		for {
			e, err := w.Next()
			if err != nil {
				return
			}
			select {
			case events <- e:
			case <-wctx.Done():
				return
			}
		}
	}()
	defer w.Close()

	var out ChangesOutput
	add := func(e client.WatchEvent) {
		if len(out.Changes) >= maxChanges {
			out.Truncated = true
			return
		}
		out.Changes = append(out.Changes, e)
	}
	type result struct {
		run RunOutput
		err error
	}
	done := make(chan result, 1)
	go func() {
		run, err := t.exec(ctx, RunInput{Name: in.Name, Command: in.Command, TimeoutSeconds: in.TimeoutSeconds})
		done <- result{run, err}
	}()
	// Events are collected while the command runs, then until the feed
	// has been quiet for settle (what the command's last writes made
	// reaches it a little later), at most settleMax.
	quiet := time.NewTimer(settle)
	quiet.Stop()
	defer quiet.Stop()
	var quietC, deadline <-chan time.Time // set once the command is done
	for done != nil || events != nil {
		select {
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			add(e)
			if quietC != nil {
				quiet.Reset(settle)
			}
		case r := <-done:
			if r.err != nil {
				return nil, ChangesOutput{}, r.err
			}
			out.ExitCode, out.Stdout, out.Stderr = r.run.ExitCode, r.run.Stdout, r.run.Stderr
			out.Truncated = out.Truncated || r.run.Truncated
			done = nil
			quiet.Reset(settle)
			quietC, deadline = quiet.C, time.After(settleMax)
		case <-quietC:
			events = nil
		case <-deadline:
			events = nil
		}
	}
	if out.Changes == nil {
		out.Changes = []client.WatchEvent{}
	}
	return nil, out, nil
}
