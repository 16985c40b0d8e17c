//go:build linux

package sdk

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/internal/api/mcpserver"
)

// TestMCPOverHTTP drives the daemon's MCP tools over streamable HTTP on
// TCP, with the official Go SDK's client, as a remote agent would: the
// bearer token is required, and the tools create, run in, write and read
// files of, and delete a real computer.
func TestMCPOverHTTP(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	endpoint := d.url + "/mcp"
	connect := func(token string) (*mcp.ClientSession, error) {
		tr := &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: bearer{token}}}
		return mcp.NewClient(&mcp.Implementation{Name: "remote-agent", Version: "1"}, nil).Connect(ctx, tr, nil)
	}
	if cs, err := connect("wrong-token-wrong-token-wrong-token"); err == nil {
		cs.Close()
		t.Fatal("an MCP session with a wrong token was accepted")
	} else if !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Errorf("wrong token: %v, want a 401", err)
	}
	cs, err := connect(d.token)
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
	slices.Sort(names)
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
			decodeInto(t, res.StructuredContent, out)
		}
		return res
	}
	var comp mcpserver.ComputerOutput
	if res := call("create", map[string]any{"name": "mcp-http", "template": "minimal", "disk_size_mb": 256}, &comp); res.IsError || comp.Name != "mcp-http" || comp.State != "running" {
		t.Fatalf("create: %s %+v", toolText(res), comp)
	}
	var run mcpserver.RunOutput
	call("run", map[string]any{"name": "mcp-http", "command": "echo out; echo err >&2; exit 5"}, &run)
	if run.ExitCode != 5 || run.Stdout != "out\n" || run.Stderr != "err\n" {
		t.Errorf("run: %+v", run)
	}
	var wrote mcpserver.WriteFileOutput
	call("write_file", map[string]any{"name": "mcp-http", "path": "/home/ohm/notes.txt", "content": "over http\n"}, &wrote)
	if wrote.Bytes != 10 {
		t.Errorf("write_file: %+v", wrote)
	}
	var read mcpserver.ReadFileOutput
	call("read_file", map[string]any{"name": "mcp-http", "path": "/home/ohm/notes.txt"}, &read)
	if read.Content != "over http\n" {
		t.Errorf("read_file: %+v", read)
	}
	if res := call("run", map[string]any{"name": "ghost", "command": "true"}, nil); !res.IsError {
		t.Error("run in a missing computer: not a tool error")
	}
	// info shows an exposed port with its URL on this TCP listener.
	var port mcpserver.PortOutput
	if res := call("expose", map[string]any{"name": "mcp-http", "port": 3000}, &port); res.IsError || port.URL == "" {
		t.Errorf("expose: %s %+v", toolText(res), port)
	}
	var info mcpserver.ComputerOutput
	if res := call("info", map[string]any{"name": "mcp-http"}, &info); res.IsError || len(info.Ports) != 1 || info.Ports[0].URL != port.URL || info.IdleTimeoutSeconds == 0 {
		t.Errorf("info: %s %+v", toolText(res), info)
	}
	if res := call("set", map[string]any{"name": "mcp-http", "allow_hosts": []string{"bad host"}}, nil); !res.IsError || !strings.Contains(toolText(res), `invalid allowed host "bad host"`) {
		t.Errorf("set allow_hosts [bad host]: %s", toolText(res))
	}
	// A checkpoint made, listed and deleted over HTTP.
	var ck mcpserver.CheckpointOutput
	if res := call("checkpoint", map[string]any{"name": "mcp-http"}, &ck); res.IsError || ck.ID == "" {
		t.Fatalf("checkpoint: %s %+v", toolText(res), ck)
	}
	var cks mcpserver.CheckpointsOutput
	if call("checkpoints", map[string]any{"name": "mcp-http"}, &cks); len(cks.Checkpoints) != 1 || cks.Checkpoints[0].ID != ck.ID {
		t.Errorf("checkpoints: %+v", cks)
	}
	if res := call("delete_checkpoint", map[string]any{"name": "mcp-http", "checkpoint": ck.ID}, nil); res.IsError {
		t.Errorf("delete_checkpoint: %s", toolText(res))
	}
	if call("checkpoints", map[string]any{"name": "mcp-http"}, &cks); len(cks.Checkpoints) != 0 {
		t.Errorf("checkpoints after delete_checkpoint: %+v", cks)
	}
	call("delete", map[string]any{"name": "mcp-http"}, nil)
	var list mcpserver.ListOutput
	call("list", map[string]any{}, &list)
	for _, c := range list.Computers {
		if c.Name == "mcp-http" {
			t.Errorf("list after delete: %+v", list)
		}
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
