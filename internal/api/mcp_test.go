package api

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

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
	if got := strings.Join(names, " "); got != "changes checkpoint checkpoints create delete delete_checkpoint expose fork info list read_file resize restore run set start stop unexpose write_file" {
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
	// A networked computer when this host can give it one, so that set
	// can take an allow list.
	_, slirpErr := exec.LookPath("slirp4netns")
	networked := slirpErr == nil
	var comp mcpserver.ComputerOutput
	if res := call("create", map[string]any{"name": "agent", "template": "minimal", "disk_size_mb": 256, "network": networked}, &comp); res.IsError || comp.Name != "agent" || comp.State != "running" || comp.Network != networked {
		t.Fatalf("create: %s %+v", toolText(res), comp)
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
	if networked {
		if res := call("set", map[string]any{"name": "agent", "allow_hosts": []string{"a.test"}}, &set); res.IsError || !slices.Equal(set.AllowHosts, []string{"a.test"}) || !set.Network {
			t.Errorf("set allow_hosts [a.test]: %s %+v", toolText(res), set)
		}
	} else {
		t.Log("no slirp4netns: the computer has no network, so set can take no allow list")
		if res := call("set", map[string]any{"name": "agent", "allow_hosts": []string{"a.test"}}, nil); !res.IsError || !strings.Contains(toolText(res), "no network to limit") {
			t.Errorf("set allow_hosts on a computer without a network: %s, want an error saying it has none", toolText(res))
		}
	}
	if res := call("set", map[string]any{"name": "agent", "allow_hosts": []string{"bad host"}}, nil); !res.IsError || !strings.Contains(toolText(res), `invalid allowed host "bad host"`) {
		t.Errorf("set allow_hosts [bad host]: %s, want an error naming the host", toolText(res))
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
	// info shows what list and set do not: the ports and the idle stop
	// time, with the allow lists and the idle timeout; the bad set above
	// changed nothing.
	var info mcpserver.ComputerOutput
	if res := call("info", map[string]any{"name": "agent"}, &info); res.IsError {
		t.Fatalf("info: %s", toolText(res))
	}
	if info.Name != "agent" || info.State != "running" || info.IdleTimeoutSeconds != 3600 || len(info.Ports) != 1 || info.Ports[0].Port != 3000 || info.Ports[0].Public {
		t.Errorf("info: %+v", info)
	}
	if at, err := time.Parse(time.RFC3339, info.IdleStopAt); err != nil || !at.After(time.Now()) {
		t.Errorf("info: idle_stop_at %q (%v), want a time to come", info.IdleStopAt, err)
	}
	if networked && (!info.Network || !slices.Equal(info.AllowHosts, []string{"a.test"})) {
		t.Errorf("info: network %v, allow_hosts %v, want a network limited to a.test", info.Network, info.AllowHosts)
	}
	if res := call("info", map[string]any{"name": "ghost"}, nil); !res.IsError {
		t.Errorf("info of a missing computer: not an error")
	}
	if res := call("unexpose", map[string]any{"name": "agent", "port": 3000}, &port); res.IsError || port.Port != 3000 {
		t.Errorf("unexpose: %+v %+v", res, port)
	}
	if res := call("unexpose", map[string]any{"name": "agent", "port": 3000}, nil); !res.IsError {
		t.Errorf("unexpose of a port not exposed: not an error")
	}
	t.Run("checkpoints", func(t *testing.T) {
		var ck mcpserver.CheckpointOutput
		if res := call("checkpoint", map[string]any{"name": "agent", "label": "before"}, &ck); res.IsError || ck.ID == "" || ck.Label != "before" {
			t.Fatalf("checkpoint: %s %+v", toolText(res), ck)
		}
		call("write_file", map[string]any{"name": "agent", "path": "/home/ohm/notes.txt", "content": "changed\n"}, nil)
		var cks mcpserver.CheckpointsOutput
		if call("checkpoints", map[string]any{"name": "agent"}, &cks); len(cks.Checkpoints) != 1 || cks.Checkpoints[0].ID != ck.ID {
			t.Fatalf("checkpoints: %+v", cks)
		}
		var restored mcpserver.ComputerOutput
		if res := call("restore", map[string]any{"name": "agent", "checkpoint": ck.ID}, &restored); res.IsError || restored.Name != "agent" || restored.State != "running" {
			t.Fatalf("restore: %s %+v", toolText(res), restored)
		}
		var read mcpserver.ReadFileOutput
		if call("read_file", map[string]any{"name": "agent", "path": "/home/ohm/notes.txt"}, &read); read.Content != "remember\n" {
			t.Errorf("after restore: %+v", read)
		}
		var fork mcpserver.ComputerOutput
		if res := call("fork", map[string]any{"name": "agent", "new": "agent-fork", "checkpoint": ck.ID}, &fork); res.IsError || fork.Name != "agent-fork" || fork.State != "running" {
			t.Fatalf("fork: %s %+v", toolText(res), fork)
		}
		if call("read_file", map[string]any{"name": "agent-fork", "path": "/home/ohm/notes.txt"}, &read); read.Content != "remember\n" {
			t.Errorf("in the fork: %+v", read)
		}
		call("delete", map[string]any{"name": "agent-fork"}, nil)
		for _, tc := range []struct {
			what string
			args map[string]any
			want string
		}{
			{"an unknown checkpoint", map[string]any{"name": "agent", "checkpoint": "nope"}, "nope"},
			{"no checkpoint", map[string]any{"name": "agent"}, "required"},
			{"a missing computer", map[string]any{"name": "ghost", "checkpoint": ck.ID}, "ghost"},
		} {
			if res := call("delete_checkpoint", tc.args, nil); !res.IsError || !strings.Contains(toolText(res), tc.want) {
				t.Errorf("delete_checkpoint of %s: %s, want an error saying %q", tc.what, toolText(res), tc.want)
			}
		}
		if call("checkpoints", map[string]any{"name": "agent"}, &cks); len(cks.Checkpoints) != 1 {
			t.Fatalf("bad deletes changed the checkpoints: %+v", cks)
		}
		var del mcpserver.CheckpointRef
		if res := call("delete_checkpoint", map[string]any{"name": "agent", "checkpoint": ck.ID}, &del); res.IsError || del.Name != "agent" || del.Checkpoint != ck.ID {
			t.Fatalf("delete_checkpoint: %s %+v", toolText(res), del)
		}
		if call("checkpoints", map[string]any{"name": "agent"}, &cks); len(cks.Checkpoints) != 0 {
			t.Errorf("checkpoints after delete_checkpoint: %+v", cks)
		}
	})
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

// toolText is the text content of a tool result (a tool error's message).
func toolText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, " ")
}
