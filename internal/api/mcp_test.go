package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/internal/api/mcpserver"
)

// TestMCP drives a real daemon with the minimal template through an MCP
// client session of the official SDK, as an agent would.
func TestMCP(t *testing.T) {
	c, _ := startDaemon(t)
	ctx := context.Background()
	serverT, clientT := mcp.NewInMemoryTransports()
	ss, err := mcpserver.New(c, "test").Connect(ctx, serverT, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil).Connect(ctx, clientT, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if got := strings.Join(names, " "); got != "changes checkpoint checkpoints create delete expose fork list read_file resize restore run set start stop unexpose write_file" {
		t.Errorf("tools: %s", got)
	}

	call := func(name string, args map[string]any, out any) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out != nil && !res.IsError {
			b, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		return res
	}
	var comp mcpserver.ComputerOutput
	if res := call("create", map[string]any{"name": "agent", "template": "minimal", "disk_size_mb": 256}, &comp); res.IsError || comp.Name != "agent" || comp.State != "running" {
		t.Fatalf("create: %+v %+v", res, comp)
	}
	var list mcpserver.ListOutput
	call("list", map[string]any{}, &list)
	if len(list.Computers) != 1 || list.Computers[0].Name != "agent" {
		t.Errorf("list: %+v", list)
	}
	var run mcpserver.RunOutput
	call("run", map[string]any{"name": "agent", "command": "echo out; echo err >&2; exit 5"}, &run)
	if run.ExitCode != 5 || run.Stdout != "out\n" || run.Stderr != "err\n" {
		t.Errorf("run: %+v", run)
	}
	var wrote mcpserver.WriteFileOutput
	call("write_file", map[string]any{"name": "agent", "path": "/home/ohm/notes.txt", "content": "remember\n"}, &wrote)
	if wrote.Bytes != 9 {
		t.Errorf("write_file: %+v", wrote)
	}
	var set mcpserver.SetOutput
	if res := call("set", map[string]any{"name": "agent", "idle_timeout_seconds": 3600}, &set); res.IsError || set.IdleTimeoutSeconds != 3600 {
		t.Errorf("set: %+v %+v", res, set)
	}
	if res := call("set", map[string]any{"name": "agent", "idle_timeout_seconds": -1}, nil); !res.IsError {
		t.Errorf("set of a negative idle timeout: not an error")
	}
	var ch mcpserver.ChangesOutput
	if res := call("changes", map[string]any{"name": "agent", "command": "mkdir -p /home/ohm/built && echo x > /home/ohm/built/out.txt && echo done"}, &ch); res.IsError || ch.ExitCode != 0 || ch.Stdout != "done\n" {
		t.Errorf("changes: %+v %+v", res, ch)
	}
	sawOut := false
	for _, e := range ch.Changes {
		sawOut = sawOut || e.Path == "/home/ohm/built/out.txt" && e.Type == "created"
	}
	if !sawOut {
		t.Errorf("changes: no created event for /home/ohm/built/out.txt in %+v", ch.Changes)
	}
	if res := call("changes", map[string]any{"name": "agent", "command": ""}, nil); !res.IsError {
		t.Errorf("changes without a command: not an error")
	}
	call("stop", map[string]any{"name": "agent"}, nil)
	call("start", map[string]any{"name": "agent"}, nil)
	var read mcpserver.ReadFileOutput
	call("read_file", map[string]any{"name": "agent", "path": "/home/ohm/notes.txt"}, &read)
	if read.Content != "remember\n" {
		t.Errorf("read_file after stop/start: %+v", read)
	}
	// Errors are tool errors the agent can read, not protocol failures.
	if res := call("read_file", map[string]any{"name": "agent", "path": "/home/ohm/missing"}, nil); !res.IsError {
		t.Errorf("read_file of a missing file: not an error: %+v", res)
	}
	if res := call("run", map[string]any{"name": "ghost", "command": "true"}, nil); !res.IsError {
		t.Errorf("run in a missing computer: not an error")
	}
	var port mcpserver.PortOutput
	if res := call("expose", map[string]any{"name": "agent", "port": 3000}, &port); res.IsError || port.Port != 3000 || port.Note == "" {
		t.Errorf("expose (no TCP listener: no URL, a note why): %+v %+v", res, port)
	}
	if res := call("expose", map[string]any{"name": "agent", "port": 70000}, nil); !res.IsError {
		t.Errorf("expose of port 70000: not an error")
	}
	if res := call("unexpose", map[string]any{"name": "agent", "port": 3000}, &port); res.IsError || port.Port != 3000 {
		t.Errorf("unexpose: %+v %+v", res, port)
	}
	if res := call("unexpose", map[string]any{"name": "agent", "port": 3000}, nil); !res.IsError {
		t.Errorf("unexpose of a port not exposed: not an error")
	}
	var resized mcpserver.ResizeOutput
	if res := call("resize", map[string]any{"name": "agent", "disk_size_mb": 320}, &resized); res.IsError && canResizeExt4Online() || !res.IsError && resized.DiskSizeMB != 320 {
		t.Errorf("resize: %+v %+v", res, resized)
	}
	if res := call("resize", map[string]any{"name": "agent", "disk_size_mb": 100}, nil); !res.IsError {
		t.Errorf("resize to a smaller size: not an error")
	}
	call("delete", map[string]any{"name": "agent"}, nil)
	call("list", map[string]any{}, &list)
	if len(list.Computers) != 0 {
		t.Errorf("list after delete: %+v", list)
	}
}
