// Package client is the Go client of the Ohm API that `ohm serve` answers
// on its root-only Unix socket and, when asked, on TCP with a bearer token.
// The ohm CLI uses it; so can programs. The API is described by the OpenAPI
// document the daemon serves at /v1/openapi.json.
//
// # Wire format
//
// Requests and plain answers are JSON. Every error is
//
//	{"error": {"code": "not_found", "message": "computer \"x\" does not exist"}}
//
// with the HTTP status of its code (see the Code constants and HTTPStatus). Long
// operations answer with NDJSON (one JSON object per line, flushed as it
// happens):
//
//   - POST /v1/computers with "Accept: application/x-ndjson": zero or more
//     {"progress": "..."} (template build output, one line each), then
//     {"computer": {...}} or {"error": {...}}.
//   - POST /v1/computers/{name}/exec: {"stream": "stdout"|"stderr",
//     "data": "..."} while the command runs, then {"exit_code": N} or
//     {"error": {...}}. Output that is not valid UTF-8 comes as "data_b64"
//     (standard base64) instead of "data", so any bytes survive. With
//     "background": true the first event is {"process": {...}}: the
//     command then outlives the request, its output is kept in a bounded
//     ring, and GET /v1/computers/{name}/processes/{id}/attach streams it
//     again (a {"dropped": N} event says how many bytes the ring lost).
//     Without it, a client that disconnects kills the command.
//
// PATCH /v1/computers/{name} with a SetRequest changes settings of a
// computer (its idle timeout), running or stopped, and answers the
// computer; a field left out stays as it is.
//
// # Interactive sessions
//
// GET /v1/computers/{name}/exec with a WebSocket upgrade runs a command
// with stdin and optionally a PTY. The client's first message is the
// ExecRequest as JSON text. Then:
//
//   - client to server, binary: bytes for the command's stdin;
//   - client to server, text: {"type": "resize", "rows": R, "cols": C} or
//     {"type": "eof"} (closes stdin);
//   - server to client, binary: one stream byte (1 stdout, 2 stderr) and
//     the output bytes;
//   - server to client, text: an Event: {"process": ...} for a background
//     session, then finally {"exit_code": N} or {"error": ...}, after which
//     the server closes the connection.
//
// Closing the WebSocket kills the command unless it runs in the
// background.
//
// # Files
//
// GET and PUT /v1/computers/{name}/files?path=/abs/path move one file's
// bytes; with archive=tar they move a directory as a tar stream (GET
// archives the directory's contents; PUT extracts into the directory,
// creating it). GET .../files/stat and .../files/list describe paths. All
// file I/O happens inside the computer as its user (ohm unless user=root),
// so paths resolve in the computer's own filesystem and cannot reach the
// host.
package client

import (
	"fmt"
	"sort"
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
	Network    bool              `json:"network"` // outbound access beyond loopback
	CreatedAt  time.Time         `json:"created_at"`
	Disk       *DiskUsage        `json:"disk,omitempty"`      // root disk, from Get
	Workspace  *WorkspaceUsage   `json:"workspace,omitempty"` // from Get
	Limits     *Limits           `json:"limits,omitempty"`    // from Get
	// StopReason says why the computer last stopped: "stopped on
	// request", or its init's end ("init was killed (out of memory)") when
	// it died inside and the daemon stopped it. It stays after a restart.
	StopReason string    `json:"stop_reason,omitempty"`
	StoppedAt  time.Time `json:"stopped_at,omitzero"` // when it last stopped
	// AllowHosts and AllowCIDRs are the egress allow list: with either
	// set, the computer reaches only these host names ("pypi.org",
	// "*.example.org") and address ranges; the host itself never.
	AllowHosts []string `json:"allow_hosts,omitempty"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	// IdleTimeoutSeconds is how long the computer may go without exec,
	// shell, file or port traffic before it stops itself (0: never). A
	// running command counts as traffic, however quiet.
	IdleTimeoutSeconds float64 `json:"idle_timeout_seconds"`
	// IdleStopAt is when it will stop itself if nothing uses it
	// meanwhile; from Get, and only while it runs idle with a timeout.
	IdleStopAt time.Time `json:"idle_stop_at,omitzero"`
	// ActiveSessions counts the exec and shell sessions, file transfers
	// and proxied requests keeping it busy now (from Get).
	ActiveSessions int `json:"active_sessions,omitempty"`
	// Ports are its exposed ports with their preview URLs (from Get).
	Ports []Port `json:"ports,omitempty"`
}

// Limits are the resource limits in force for a computer: read back from
// its cgroup while it runs, what it will get at start while stopped.
type Limits struct {
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memory_bytes"`
	PIDs        int64   `json:"pids"`
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
	// ReplicaLagSeconds is the age of the oldest metadata change the
	// replica lacks (nil when the workspace has no replica).
	ReplicaLagSeconds *float64 `json:"replica_lag_seconds,omitempty"`
	// Layout is "block" (a kernel filesystem on a device image in the
	// volume) or "file" (files at the volume's root).
	Layout string `json:"layout,omitempty"`
	// Incident says what last went wrong under the running workspace and
	// what was done about it, if anything did.
	Incident string `json:"incident,omitempty"`
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
	// Network gives the computer outbound access beyond its loopback
	// (through slirp4netns; the host's own loopback stays out of reach).
	Network bool `json:"network,omitempty"`
	// AllowHosts and AllowCIDRs limit the network to these host names
	// (exact, or "*.example.org" for the names under it) and address
	// ranges; either implies Network.
	AllowHosts []string `json:"allow_hosts,omitempty"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	// IdleTimeoutSeconds is how long it may go unused before it stops
	// itself; nil takes the server's default (30 minutes), 0 never stops
	// it.
	IdleTimeoutSeconds *float64 `json:"idle_timeout_seconds,omitempty"`
}

// SetRequest is the body of PATCH /v1/computers/{name}: the settings to
// change, on a running or stopped computer. A field left out (nil) stays
// as it is; all are checked before any changes.
type SetRequest struct {
	// IdleTimeoutSeconds is the new idle timeout (0: never stop for
	// idleness); a running computer's countdown starts again from now.
	IdleTimeoutSeconds *float64 `json:"idle_timeout_seconds,omitempty"`
	// AllowHosts and AllowCIDRs are the egress allow list: each list given
	// replaces the computer's (an empty one clears it); with both empty a
	// networked computer reaches anywhere but the host. A running computer
	// follows a change at once.
	AllowHosts *[]string `json:"allow_hosts,omitempty"`
	AllowCIDRs *[]string `json:"allow_cidrs,omitempty"`
}

// ExecRequest is the body of POST /v1/computers/{name}/exec (and the first
// message of an interactive session). Command runs through the template's
// shell (`bash -lc`, or `sh -c` where the template has no bash); Argv, if
// set, runs as is instead. In an interactive session an empty Command and
// Argv run a login shell.
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
	// Background keeps the command running when the client goes away.
	Background bool `json:"background,omitempty"`
}

// ComputerList is the answer of GET /v1/computers.
type ComputerList struct {
	Computers []Computer `json:"computers"`
}

// Deleted is the answer of DELETE /v1/computers/{name}.
type Deleted struct {
	Name  string `json:"name"`
	State string `json:"state"` // always "deleted"
}

// Health is the answer of GET /healthz.
type Health struct {
	Status string `json:"status"` // always "ok"
}

// Event is one line of an NDJSON answer (or one text message of an
// interactive session).
type Event struct {
	Progress string     `json:"progress,omitempty"`
	Computer *Computer  `json:"computer,omitempty"`
	Process  *Process   `json:"process,omitempty"`
	Stream   string     `json:"stream,omitempty"`
	Data     string     `json:"data,omitempty"`
	DataB64  []byte     `json:"data_b64,omitempty"`
	Dropped  int64      `json:"dropped,omitempty"`
	ExitCode *int       `json:"exit_code,omitempty"`
	Error    *ErrorBody `json:"error,omitempty"`
}

// Process is a command running in the background in a computer.
type Process struct {
	ID        string    `json:"id"`
	Computer  string    `json:"computer"`
	Command   string    `json:"command,omitempty"`
	Argv      []string  `json:"argv,omitempty"`
	State     string    `json:"state"` // running or exited
	ExitCode  *int      `json:"exit_code,omitempty"`
	Error     string    `json:"error,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
}

// ProcessList is the answer of GET /v1/computers/{name}/processes.
type ProcessList struct {
	Processes []Process `json:"processes"`
}

// FileInfo describes a path in a computer.
type FileInfo struct {
	Path       string    `json:"path"`
	Name       string    `json:"name"`
	Type       string    `json:"type"` // file, dir, symlink or other
	Size       int64     `json:"size"`
	Mode       uint32    `json:"mode"` // permission bits, e.g. 0o644
	ModTime    time.Time `json:"mtime"`
	LinkTarget string    `json:"link_target,omitempty"`
}

// FileList is the answer of GET /v1/computers/{name}/files/list.
type FileList struct {
	Entries []FileInfo `json:"entries"`
	// Truncated says the directory has more entries than the limit.
	Truncated bool `json:"truncated"`
}

// FileWritten is the answer of PUT /v1/computers/{name}/files.
type FileWritten struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"` // bytes received
}

// ErrorAnswer is the body of every error answer.
type ErrorAnswer struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the "error" member of an error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// The stable error codes of ErrorBody.Code. Programs match on them; the
// HTTP status of an answer follows from its code (see HTTPStatus).
const (
	CodeInvalid         = "invalid_argument"    // 400: bad input
	CodeUnauthenticated = "unauthenticated"     // 401: missing or wrong token
	CodeNotFound        = "not_found"           // 404
	CodeExists          = "already_exists"      // 409
	CodeState           = "failed_precondition" // 409: wrong state
	CodeTooLarge        = "too_large"           // 413: body over the limit
	CodeInternal        = "internal"            // 500
	CodeUnavailable     = "unavailable"         // 503: the computer does not answer
)

// codeStatus is the HTTP status of each code.
var codeStatus = map[string]int{
	CodeInvalid:         400,
	CodeUnauthenticated: 401,
	CodeNotFound:        404,
	CodeExists:          409,
	CodeState:           409,
	CodeTooLarge:        413,
	CodeInternal:        500,
	CodeUnavailable:     503,
}

// Codes returns every error code, sorted: the list openapi.json and the
// SDKs under sdk/ are held to.
func Codes() []string {
	out := make([]string, 0, len(codeStatus))
	for c := range codeStatus {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// HTTPStatus is the HTTP status of an answer with error code code (500 for
// a code it does not know).
func HTTPStatus(code string) int {
	if s, ok := codeStatus[code]; ok {
		return s
	}
	return 500
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

// Stream bytes of an interactive session's binary messages from the server.
const (
	StreamStdout byte = 1
	StreamStderr byte = 2
)

// Control is a text message from the client in an interactive session.
type Control struct {
	Type string `json:"type"` // resize or eof
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// WindowSize is a terminal's size.
type WindowSize struct{ Rows, Cols uint16 }
