// Package mcpserver exposes Ohm computers to AI agents as Model Context
// Protocol tools (create, list, info, run, read_file, write_file, stop,
// start, delete, set, expose, unexpose, checkpoint, checkpoints, restore,
// fork, delete_checkpoint, resize, changes), each a call to the Ohm daemon through package ohm/client. `ohm
// mcp` serves it over stdio; `ohm serve` serves it at /mcp over MCP's
// streamable HTTP transport (HTTPHandler), behind the same bearer token as
// the rest of the API on TCP.
package mcpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"ohm/client"
)

// Bounds on what one tool call carries back: command output per stream and
// file contents. An agent's context is small; more is truncated (output)
// or refused (files, which ohm computer cp moves at any size).
const (
	maxOutput   = 256 << 10
	maxReadFile = 4 << 20
)

// New returns an MCP server whose tools drive the daemon c talks to.
func New(c *client.Client, version string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "ohm", Version: version}, nil)
	t := tools{c}
	mcp.AddTool(s, &mcp.Tool{Name: "create", Description: "Create a Linux computer (started, with a durable workspace at /home/ohm) and return it. Without a name, one is picked."}, t.create)
	mcp.AddTool(s, &mcp.Tool{Name: "list", Description: "List the computers with their state."}, t.list)
	mcp.AddTool(s, &mcp.Tool{Name: "info", Description: "Show a computer: its state, network and egress allow lists, idle timeout and when it will stop itself if unused, and its exposed ports with their preview URLs."}, t.info)
	mcp.AddTool(s, &mcp.Tool{Name: "run", Description: "Run a shell command in a computer (starting it if stopped) and return its stdout, stderr and exit code."}, t.run)
	mcp.AddTool(s, &mcp.Tool{Name: "read_file", Description: "Read a file in a computer (at most 4 MiB)."}, t.readFile)
	mcp.AddTool(s, &mcp.Tool{Name: "write_file", Description: "Write a file in a computer, creating or replacing it."}, t.writeFile)
	mcp.AddTool(s, &mcp.Tool{Name: "stop", Description: "Stop a computer; its workspace is kept."}, t.stop)
	mcp.AddTool(s, &mcp.Tool{Name: "start", Description: "Start a stopped computer."}, t.start)
	mcp.AddTool(s, &mcp.Tool{Name: "delete", Description: "Delete a computer with its disk and workspace."}, t.delete)
	mcp.AddTool(s, &mcp.Tool{Name: "set", Description: "Change settings of a computer, running or stopped; a setting left out stays as it is. " +
		"idle_timeout_seconds: how long it may go unused (no command, shell or file traffic) before it stops itself; the next run starts it again; 0 never stops it. " +
		"allow_hosts (exact names or *.example.org) and allow_cidrs: where a networked computer may connect, each replacing the computer's list when given ([] clears it), at once if it runs; " +
		"with a list set, DNS answers only the allowed names and everything else outbound is refused; with both empty it reaches anywhere but the host."}, t.set)
	mcp.AddTool(s, &mcp.Tool{Name: "expose", Description: "Expose a TCP port of a computer (a dev server listening on 0.0.0.0 or 127.0.0.1 inside) and return its preview URL, which HTTP and WebSocket traffic reaches it through; give the URL to the user to open in a browser."}, t.expose)
	mcp.AddTool(s, &mcp.Tool{Name: "unexpose", Description: "Remove the preview URL of a port of a computer."}, t.unexpose)
	addCheckpointTools(s, t)
	addChangesTool(s, t)
	mcp.AddTool(s, resizeTool, t.resize)
	return s
}

// HTTPHandler serves the tools of New over MCP's streamable HTTP transport.
// It is stateless (each request stands alone, as the protocol's sessionless
// mode has it), so a daemon restart or many agents leave nothing behind.
func HTTPHandler(c *client.Client, version string) http.Handler {
	s := New(c, version)
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{Stateless: true})
}

type tools struct{ c *client.Client }

// CreateInput are the arguments of create.
type CreateInput struct {
	Name       string  `json:"name,omitempty" jsonschema:"name of the computer (a DNS label); default: a free friendly name"`
	Template   string  `json:"template,omitempty" jsonschema:"template: coding-agent (default) or minimal"`
	DiskSizeMB int     `json:"disk_size_mb,omitempty" jsonschema:"root disk size in MB (default 10240)"`
	CPUs       float64 `json:"cpus,omitempty" jsonschema:"CPU limit (default 2)"`
	MemoryMB   int     `json:"memory_mb,omitempty" jsonschema:"memory limit in MB (default 2048)"`
	// Egress: see set.
	Network    bool     `json:"network,omitempty" jsonschema:"outbound network access (the host stays out of reach)"`
	AllowHosts []string `json:"allow_hosts,omitempty" jsonschema:"limit the network to these host names: exact (pypi.org) or *.example.org; implies network"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty" jsonschema:"limit the network to these address ranges (198.51.100.0/24); implies network"`
	// IdleTimeoutSeconds is a pointer so that 0 (never) differs from left
	// out (the server's default).
	IdleTimeoutSeconds *float64 `json:"idle_timeout_seconds,omitempty" jsonschema:"stop the computer after this many seconds unused (default 1800; 0: never); the next run starts it again"`
}

// ComputerOutput is a computer as the tools return it. IdleStopAt and
// Ports are known only to info (and the tools answering with a computer
// fetched the same way); list leaves them out.
type ComputerOutput struct {
	Name               string       `json:"name"`
	State              string       `json:"state"`
	Template           string       `json:"template,omitempty"`
	Network            bool         `json:"network,omitempty" jsonschema:"outbound network access"`
	AllowHosts         []string     `json:"allow_hosts,omitempty" jsonschema:"the host names a networked computer may reach (none: anywhere but the host)"`
	AllowCIDRs         []string     `json:"allow_cidrs,omitempty" jsonschema:"the address ranges a networked computer may reach"`
	IdleTimeoutSeconds float64      `json:"idle_timeout_seconds,omitempty" jsonschema:"how long it may go unused before it stops itself (0 or absent: never)"`
	IdleStopAt         string       `json:"idle_stop_at,omitempty" jsonschema:"when it stops itself unless used meanwhile (RFC 3339); absent while busy, stopped or without an idle timeout"`
	StopReason         string       `json:"stop_reason,omitempty" jsonschema:"why it last stopped"`
	Ports              []PortOutput `json:"ports,omitempty" jsonschema:"its exposed ports with their preview URLs"`
}

func computerOut(c *client.Computer) ComputerOutput {
	out := ComputerOutput{Name: c.Name, State: c.State, Template: c.Template, Network: c.Network,
		AllowHosts: c.AllowHosts, AllowCIDRs: c.AllowCIDRs, IdleTimeoutSeconds: c.IdleTimeoutSeconds, StopReason: c.StopReason}
	if !c.IdleStopAt.IsZero() {
		out.IdleStopAt = c.IdleStopAt.Format(time.RFC3339)
	}
	for i := range c.Ports {
		out.Ports = append(out.Ports, portOut(&c.Ports[i]))
	}
	return out
}

func (t tools) info(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, ComputerOutput, error) {
	c, err := t.c.Get(ctx, in.Name)
	if err != nil {
		return nil, ComputerOutput{}, err
	}
	return nil, computerOut(c), nil
}

func (t tools) create(ctx context.Context, _ *mcp.CallToolRequest, in CreateInput) (*mcp.CallToolResult, ComputerOutput, error) {
	if in.DiskSizeMB == 0 {
		in.DiskSizeMB = 10240
	}
	c, err := t.c.Create(ctx, client.CreateRequest{Name: in.Name, Template: in.Template, DiskSizeMB: in.DiskSizeMB, CPUs: in.CPUs, MemoryMB: in.MemoryMB,
		Network: in.Network, AllowHosts: in.AllowHosts, AllowCIDRs: in.AllowCIDRs, IdleTimeoutSeconds: in.IdleTimeoutSeconds}, nil)
	if err != nil {
		return nil, ComputerOutput{}, err
	}
	return nil, computerOut(c), nil
}

// ListOutput is the answer of list.
type ListOutput struct {
	Computers []ComputerOutput `json:"computers"`
}

func (t tools) list(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ListOutput, error) {
	cs, err := t.c.List(ctx)
	if err != nil {
		return nil, ListOutput{}, err
	}
	out := ListOutput{Computers: []ComputerOutput{}}
	for i := range cs {
		out.Computers = append(out.Computers, computerOut(&cs[i]))
	}
	return nil, out, nil
}

// RunInput are the arguments of run.
type RunInput struct {
	Name           string  `json:"name" jsonschema:"the computer"`
	Command        string  `json:"command" jsonschema:"shell command (run through bash -lc)"`
	User           string  `json:"user,omitempty" jsonschema:"ohm (default) or root"`
	Workdir        string  `json:"workdir,omitempty" jsonschema:"absolute working directory; default /home/ohm"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 600)"`
}

// RunOutput is the answer of run.
type RunOutput struct {
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
}

// capped keeps the first n bytes written to it.
type capped struct {
	buf       bytes.Buffer
	n         int
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.n - c.buf.Len()
	if len(p) > room {
		c.truncated = true
		p = p[:max(room, 0)]
	}
	c.buf.Write(p)
	return len(p), nil
}

func (c *capped) String() string { return strings.ToValidUTF8(c.buf.String(), "\uFFFD") }

func (t tools) run(ctx context.Context, _ *mcp.CallToolRequest, in RunInput) (*mcp.CallToolResult, RunOutput, error) {
	out, err := t.exec(ctx, in)
	if err != nil {
		return nil, RunOutput{}, err
	}
	return nil, out, nil
}

// exec runs in's command (600 s at most unless in says otherwise) and
// returns its exit code and the first maxOutput bytes of each stream.
func (t tools) exec(ctx context.Context, in RunInput) (RunOutput, error) {
	if in.TimeoutSeconds == 0 {
		in.TimeoutSeconds = 600
	}
	stdout, stderr := &capped{n: maxOutput}, &capped{n: maxOutput}
	code, err := t.c.Exec(ctx, in.Name, client.ExecRequest{Command: in.Command, User: in.User, Workdir: in.Workdir, TimeoutSeconds: in.TimeoutSeconds}, stdout, stderr)
	if err != nil {
		return RunOutput{}, err
	}
	return RunOutput{ExitCode: code, Stdout: stdout.String(), Stderr: stderr.String(), Truncated: stdout.truncated || stderr.truncated}, nil
}

// FileInput names a file.
type FileInput struct {
	Name string `json:"name" jsonschema:"the computer"`
	Path string `json:"path" jsonschema:"absolute path in the computer, e.g. /home/ohm/notes.txt"`
}

// ReadFileOutput is the answer of read_file: Content if the file is UTF-8
// text, ContentBase64 otherwise.
type ReadFileOutput struct {
	Path          string `json:"path"`
	Size          int    `json:"size"`
	Content       string `json:"content,omitempty"`
	ContentBase64 string `json:"content_base64,omitempty"`
}

func (t tools) readFile(ctx context.Context, _ *mcp.CallToolRequest, in FileInput) (*mcp.CallToolResult, ReadFileOutput, error) {
	fi, err := t.c.Stat(ctx, in.Name, in.Path, "")
	if err != nil {
		return nil, ReadFileOutput{}, err
	}
	if fi.Size > maxReadFile {
		return nil, ReadFileOutput{}, errors.New(in.Path + " is larger than 4 MiB: read part of it with run (head, sed -n) or copy it with ohm computer cp")
	}
	var buf bytes.Buffer
	if err := t.c.GetFile(ctx, in.Name, in.Path, "", &limitWriter{w: &buf, n: maxReadFile}); err != nil {
		return nil, ReadFileOutput{}, err
	}
	out := ReadFileOutput{Path: in.Path, Size: buf.Len()}
	if utf8.Valid(buf.Bytes()) {
		out.Content = buf.String()
	} else {
		out.ContentBase64 = base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	return nil, out, nil
}

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, errors.New("file grew past 4 MiB while being read")
	}
	l.n -= len(p)
	return l.w.Write(p)
}

// WriteFileInput are the arguments of write_file.
type WriteFileInput struct {
	Name    string `json:"name" jsonschema:"the computer"`
	Path    string `json:"path" jsonschema:"absolute path in the computer"`
	Content string `json:"content" jsonschema:"the file's new contents"`
}

// WriteFileOutput is the answer of write_file.
type WriteFileOutput struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

func (t tools) writeFile(ctx context.Context, _ *mcp.CallToolRequest, in WriteFileInput) (*mcp.CallToolResult, WriteFileOutput, error) {
	if err := t.c.PutFile(ctx, in.Name, in.Path, "", strings.NewReader(in.Content)); err != nil {
		return nil, WriteFileOutput{}, err
	}
	return nil, WriteFileOutput{Path: in.Path, Bytes: len(in.Content)}, nil
}

// NameInput names a computer.
type NameInput struct {
	Name string `json:"name" jsonschema:"the computer"`
}

func (t tools) transition(ctx context.Context, name string, op func(context.Context, string) error, state string) (*mcp.CallToolResult, ComputerOutput, error) {
	if err := op(ctx, name); err != nil {
		return nil, ComputerOutput{}, err
	}
	return nil, ComputerOutput{Name: name, State: state}, nil
}

func (t tools) stop(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, ComputerOutput, error) {
	return t.transition(ctx, in.Name, t.c.Stop, "stopped")
}

func (t tools) start(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, ComputerOutput, error) {
	return t.transition(ctx, in.Name, t.c.Start, "running")
}

func (t tools) delete(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, ComputerOutput, error) {
	return t.transition(ctx, in.Name, t.c.Delete, "deleted")
}

// SetInput are the arguments of set; a setting left out stays as it is.
type SetInput struct {
	Name               string    `json:"name" jsonschema:"the computer"`
	IdleTimeoutSeconds *float64  `json:"idle_timeout_seconds,omitempty" jsonschema:"stop the computer after this many seconds unused (0: never; otherwise 60 to 2592000)"`
	AllowHosts         *[]string `json:"allow_hosts,omitempty" jsonschema:"the allowed host names: exact (pypi.org) or *.example.org (the names under it)"`
	AllowCIDRs         *[]string `json:"allow_cidrs,omitempty" jsonschema:"the allowed address ranges (198.51.100.0/24)"`
}

// SetOutput is the answer of set: the computer's settings after it.
type SetOutput struct {
	Name               string   `json:"name"`
	State              string   `json:"state"`
	IdleTimeoutSeconds float64  `json:"idle_timeout_seconds"`
	Network            bool     `json:"network"`
	AllowHosts         []string `json:"allow_hosts"`
	AllowCIDRs         []string `json:"allow_cidrs"`
}

func (t tools) set(ctx context.Context, _ *mcp.CallToolRequest, in SetInput) (*mcp.CallToolResult, SetOutput, error) {
	c, err := t.c.Set(ctx, in.Name, client.SetRequest{IdleTimeoutSeconds: in.IdleTimeoutSeconds, AllowHosts: in.AllowHosts, AllowCIDRs: in.AllowCIDRs})
	if err != nil {
		return nil, SetOutput{}, err
	}
	out := SetOutput{Name: c.Name, State: c.State, IdleTimeoutSeconds: c.IdleTimeoutSeconds, Network: c.Network,
		AllowHosts: c.AllowHosts, AllowCIDRs: c.AllowCIDRs}
	if out.AllowHosts == nil {
		out.AllowHosts = []string{}
	}
	if out.AllowCIDRs == nil {
		out.AllowCIDRs = []string{}
	}
	return nil, out, nil
}
