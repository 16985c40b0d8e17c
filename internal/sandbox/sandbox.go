// Package sandbox runs a computer: its root disk (a sparse ext4 image,
// loop-mounted, holding the upper layer of an overlay over the template's
// read-only root), its workspace bind-mounted at /home/ohm, and its
// processes isolated in namespaces and cgroups by runc.
//
// Commands run through an agent: the ohm binary itself, bind-mounted into
// the computer and running as its init, which spawns each command inside
// the computer's namespaces and streams its output back over a Unix socket
// in the computer's state directory. That keeps a run round trip at a fork,
// not a container-runtime exec.
package sandbox

import (
	"context"
	"errors"
	"io"
	"time"
)

var errTODO = errors.New("sandbox: not implemented yet")

// Spec describes a computer to start.
type Spec struct {
	Name         string   // computer name; also its hostname
	StateDir     string   // host directory owned by this computer (disk image, mounts, runc state, agent socket)
	TemplateRoot string   // read-only root filesystem of the template (the overlay's lower layer)
	DiskSizeMB   int      // size of the root disk image
	Workspace    string   // host path of the mounted workspace, bind-mounted at /home/ohm
	CPUs         float64  // cgroup CPU limit
	MemoryMB     int      // cgroup memory limit
	PIDs         int      // cgroup pids limit
	Env          []string // KEY=VALUE added to every command's environment
}

// CreateDisk makes the root disk of spec: a sparse ext4 image of exactly
// DiskSizeMB under StateDir. It fails if there is not enough free space on
// the host for the image to be filled.
func CreateDisk(ctx context.Context, spec Spec) error { return errTODO }

// Sandbox is a running computer.
type Sandbox struct{}

// Start mounts the root disk and overlay and starts the computer's init.
func Start(ctx context.Context, spec Spec) (*Sandbox, error) { return nil, errTODO }

// Attach reconnects to a computer started by an earlier daemon (the daemon
// restarted; the computer kept running). It fails if the computer is not
// running.
func Attach(ctx context.Context, spec Spec) (*Sandbox, error) { return nil, errTODO }

// ExecRequest is a command to run in a computer.
type ExecRequest struct {
	Argv    []string // e.g. {"bash", "-lc", "make test"}
	User    string   // "ohm" (default) or "root"
	Workdir string   // default: the user's home
	Env     []string // KEY=VALUE, added to the computer's Env
	TTY     bool     // run on a pseudo-terminal (stdout carries both streams)
	Timeout time.Duration
}

// Exec runs req in the computer, streaming its output to stdout and stderr
// while it runs, and returns its exit code (128+signal if killed).
func (s *Sandbox) Exec(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return 0, errTODO
}

// Stop sends SIGTERM to every process, waits up to grace, kills what is
// left, and unmounts the overlay and the root disk. The workspace mount is
// the caller's.
func (s *Sandbox) Stop(ctx context.Context, grace time.Duration) error { return errTODO }

// DiskUsage is the root disk's size and use in bytes.
type DiskUsage struct {
	Size uint64
	Used uint64
}

// Usage reports the root disk's use (it mounts nothing; a stopped computer
// reports its size only).
func Usage(ctx context.Context, spec Spec) (DiskUsage, error) { return DiskUsage{}, errTODO }

// Cleanup tears down whatever a crashed daemon or host left of spec's
// sandbox (runc state, overlay, loop mount) so that Start can run again.
func Cleanup(ctx context.Context, spec Spec) error { return errTODO }
