// Package client is the Go client of the Ohm API that `ohm serve` answers
// on its Unix socket. The CLI uses it; so can programs.
//
// # Wire format
//
// Requests and plain answers are JSON. Errors are
//
//	{"error": {"code": "not_found", "message": "computer \"x\" does not exist"}}
//
// with an HTTP status matching the code. Long operations answer with NDJSON
// (one JSON object per line, flushed as it happens):
//
//   - POST /v1/computers with "Accept: application/x-ndjson": zero or more
//     {"progress": "..."} (template build output, one line each), then
//     {"computer": {...}} or {"error": {...}}.
//   - POST /v1/computers/{name}/exec: {"stream": "stdout"|"stderr",
//     "data": "..."} while the command runs, then {"exit_code": N} or
//     {"error": {...}}. Output that is not valid UTF-8 comes as "data_b64"
//     (standard base64) instead of "data", so any bytes survive.
//
// Interactive sessions (stdin, a PTY, window resize) use the same exec URL
// with "Connection: Upgrade" and "Upgrade: ohm-exec". The server answers
// 101 Switching Protocols and both sides then exchange frames: a type byte,
// a 4-byte big-endian payload length and the payload (see the Frame
// constants).
package client

import (
	"fmt"
	"time"
)

// Computer is a computer as the API reports it.
type Computer struct {
	Name       string            `json:"name"`
	State      string            `json:"state"` // creating, running or stopped
	Template   string            `json:"template"`
	DiskSizeMB int               `json:"disk_size_mb"`
	CPUs       float64           `json:"cpus"`
	MemoryMB   int               `json:"memory_mb"`
	PIDs       int               `json:"pids"`
	Env        map[string]string `json:"env,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	Disk       *DiskUsage        `json:"disk,omitempty"`      // root disk, from info
	Workspace  *WorkspaceUsage   `json:"workspace,omitempty"` // from info
}

// DiskUsage is a root disk's size and use.
type DiskUsage struct {
	SizeBytes uint64 `json:"size_bytes"`
	UsedBytes uint64 `json:"used_bytes"`
}

// WorkspaceUsage is what a workspace holds.
type WorkspaceUsage struct {
	UsedBytes   uint64 `json:"used_bytes"`
	StoredBytes uint64 `json:"stored_bytes"`
	Files       uint64 `json:"files"`
	Capacity    uint64 `json:"capacity_bytes"`
}

// CreateRequest is the body of POST /v1/computers. Zero values take the
// server's defaults (template coding-agent, 2 CPUs, 2048 MB); DiskSizeMB is
// required.
type CreateRequest struct {
	Name       string            `json:"name,omitempty"`
	Template   string            `json:"template,omitempty"`
	DiskSizeMB int               `json:"disk_size_mb"`
	CPUs       float64           `json:"cpus,omitempty"`
	MemoryMB   int               `json:"memory_mb,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
}

// ExecRequest is the body of POST /v1/computers/{name}/exec. Command runs
// through `bash -lc` (`sh -c` where the template has no bash); Argv, if
// set, runs as is instead.
type ExecRequest struct {
	Command        string            `json:"command,omitempty"`
	Argv           []string          `json:"argv,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Workdir        string            `json:"workdir,omitempty"`
	User           string            `json:"user,omitempty"` // ohm (default) or root
	TimeoutSeconds float64           `json:"timeout_seconds,omitempty"`
	TTY            bool              `json:"tty,omitempty"` // interactive sessions only
	Rows           uint16            `json:"rows,omitempty"`
	Cols           uint16            `json:"cols,omitempty"`
}

// Event is one line of an NDJSON answer.
type Event struct {
	Progress string     `json:"progress,omitempty"`
	Computer *Computer  `json:"computer,omitempty"`
	Stream   string     `json:"stream,omitempty"`
	Data     string     `json:"data,omitempty"`
	DataB64  []byte     `json:"data_b64,omitempty"`
	ExitCode *int       `json:"exit_code,omitempty"`
	Error    *ErrorBody `json:"error,omitempty"`
}

// ErrorBody is the "error" member of an error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error is an error the server answered.
type Error struct {
	Status  int // HTTP status, 0 inside a stream
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server error %d (%s)", e.Status, e.Code)
	}
	return e.Message
}

// Frame types of an interactive session. Client to server: FrameStdin,
// FrameStdinEOF, FrameResize (rows and columns, 2 bytes each, big endian).
// Server to client: FrameStdout, FrameStderr, FrameExit (exit code, 4
// bytes big endian), FrameError (an ErrorBody as JSON).
const (
	FrameStdin    byte = 3
	FrameStdinEOF byte = 4
	FrameResize   byte = 5
	FrameStdout   byte = 6
	FrameStderr   byte = 7
	FrameExit     byte = 8
	FrameError    byte = 9
)

// MaxFrame bounds a frame's payload.
const MaxFrame = 1 << 20

// UpgradeProtocol is the Upgrade header value of an interactive session.
const UpgradeProtocol = "ohm-exec"
