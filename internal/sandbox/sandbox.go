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
//
// A computer's state directory holds:
//
//	root.img        the root disk image (the only thing that must persist),
//	                unless Spec.DiskMounted: then the caller keeps the image
//	                (in the computer's volume) and mounts it at disk/
//	disk/           where root.img is loop-mounted: upper/ and work/ of the overlay
//	rootfs/         the overlay, the computer's /
//	bundle/         the OCI bundle (config.json) runc starts
//	runc/           runc's state root, so two data directories never collide
//	agent.sock      the agent's socket: made by the host and handed to the
//	                agent as a descriptor, so it is nowhere in the computer
//	disk/etc/       hosts, hostname and resolv.conf, bind-mounted into /etc
//	disk/agent.log  the agent's own stdout and stderr
//
// The last two are on the root disk, beside the overlay's upper layer
// (so not in the computer's own tree): the computer can write them, the
// /etc files through their binds and the log through /proc/1/fd/1, and
// every byte a computer can write must land on its own bounded disks.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/egress"
	"ohm/internal/mountinfo"
)

// Spec describes a computer to start.
type Spec struct {
	Name         string // computer name; also its hostname
	StateDir     string // host directory owned by this computer (disk image, mounts, runc state, agent socket)
	TemplateRoot string // read-only root filesystem of the template (the overlay's lower layer)
	DiskSizeMB   int    // size of the root disk image
	// DiskMounted says the root disk is not StateDir/root.img but one the
	// caller keeps (an image in the computer's volume) and has mounted at
	// StateDir/disk before Start; Stop and Cleanup leave it mounted.
	DiskMounted bool
	Workspace   string // host path of the mounted workspace, bind-mounted at /home/ohm
	// HomeMount, when set, replaces Workspace: a host directory that is a
	// shared mount, bind-mounted at /home as its slave, with the workspace
	// mounted on the host at HomeMount/ohm. A workspace mounted there again
	// (after its mount process died) then propagates into the running
	// computer; a plain bind of the workspace would keep the dead mount.
	HomeMount string
	CPUs      float64  // cgroup CPU limit (0: DefaultCPUs)
	MemoryMB  int      // cgroup memory limit (0: DefaultMemoryMB)
	PIDs      int      // cgroup pids limit (0: DefaultPIDs)
	Env       []string // KEY=VALUE added to every command's environment

	// Network gives the computer outbound access (through slirp4netns);
	// without it the computer has a loopback interface only. Either way
	// the host's own loopback services are out of reach.
	Network bool
	// Egress limits where a networked computer's traffic may go (the
	// zero Policy: anywhere but the host); SetEgress changes it while
	// the computer runs.
	Egress egress.Policy
	// Resolvers are the DNS servers ("host:port") the computer's DNS
	// proxy forwards allowed names to; empty means the host's
	// (/etc/resolv.conf).
	Resolvers []string

	// AgentBinary is the ohm binary run as the computer's init (`ohm
	// agent`); empty means os.Executable. It must run without the host's
	// shared libraries: the template may have none.
	AgentBinary string
}

// Limits used when a Spec leaves one at zero: never unlimited.
const (
	DefaultMemoryMB = 4096
	DefaultPIDs     = 4096
)

// DefaultCPUs is the CPU limit used when a Spec leaves CPUs at zero: all of
// the host's.
var DefaultCPUs = float64(numCPU())

func (s Spec) paths() paths {
	dir, err := filepath.Abs(s.StateDir)
	if err != nil {
		dir = s.StateDir
	}
	return paths{
		image:  filepath.Join(dir, "root.img"),
		disk:   filepath.Join(dir, "disk"),
		rootfs: filepath.Join(dir, "rootfs"),
		bundle: filepath.Join(dir, "bundle"),
		runc:   filepath.Join(dir, "runc"),
		etc:    filepath.Join(dir, "disk", "etc"),
		log:    filepath.Join(dir, "disk", "agent.log"),
		socket: filepath.Join(dir, "agent.sock"),
		state:  dir,

		slirpPid:  filepath.Join(dir, "slirp.pid"),
		slirpSock: filepath.Join(dir, "slirp.sock"),
		slirpLog:  filepath.Join(dir, "slirp.log"),
	}
}

type paths struct {
	image, disk, rootfs, bundle, runc, etc, log, socket, state string
	slirpPid, slirpSock, slirpLog                              string
}

// Sandbox is a running computer.
type Sandbox struct {
	spec Spec
	p    paths
	eg   *egressState // with Spec.Network: its firewall and DNS proxy
}

// Start mounts the root disk and overlay and starts the computer's init.
func Start(ctx context.Context, spec Spec) (*Sandbox, error) {
	if spec.Name == "" {
		return nil, errors.New("start: computer has no name")
	}
	p := spec.paths()
	if spec.DiskMounted {
		if !mountinfo.IsMountpoint(p.disk) {
			return nil, fmt.Errorf("start %s: root disk: nothing mounted at %s", spec.Name, p.disk)
		}
	} else if _, err := os.Stat(p.image); err != nil {
		return nil, fmt.Errorf("start %s: root disk: %w", spec.Name, err)
	}
	if st, err := runcState(ctx, p, spec.Name); err == nil && st.Status == "running" {
		return nil, fmt.Errorf("start %s: already running", spec.Name)
	}
	// Whatever a crash left behind would make the mounts below fail.
	if err := Cleanup(ctx, spec); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	s := &Sandbox{spec: spec, p: p}
	if err := s.start(ctx); err != nil {
		s.teardown(context.WithoutCancel(ctx), 0)
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	return s, nil
}

func (s *Sandbox) start(ctx context.Context) error {
	p := s.p
	if _, err := DetectCgroups(); err != nil {
		return err
	}
	if s.spec.DiskMounted {
		if err := prepareDisk(p); err != nil {
			return err
		}
	} else if err := mountDisk(ctx, p); err != nil {
		return err
	}
	if err := mountOverlay(s.spec.TemplateRoot, p); err != nil {
		return err
	}
	if err := writeEtc(s.spec, p); err != nil {
		return err
	}
	if err := writeBundle(s.spec, p); err != nil {
		return err
	}
	// A workspace mounted after the sandbox starts (the manager mounts it
	// alongside) is hardened by whoever mounts it, when it is mounted.
	if ws := filepath.Join(s.spec.HomeMount, "ohm"); s.spec.HomeMount != "" && mountinfo.IsMountpoint(ws) {
		if err := HardenWorkspace(ws); err != nil {
			return err
		}
	}
	if err := runcRun(ctx, p, s.spec.Name); err != nil {
		return err
	}
	// The computer's root is its own copy of the overlay mount, which
	// must allow setuid (sudo). The host's copy need not: from here on,
	// nothing the computer makes is a usable setuid binary on the host.
	if err := unix.Mount("", p.rootfs, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount the overlay nosuid on the host: %w", err)
	}
	st, _ := runcState(ctx, p, s.spec.Name)
	if s.spec.Network {
		if err := startNetwork(p, st.Pid); err != nil {
			return err
		}
		eg, err := startEgress(s.spec, st.Pid, false)
		if err != nil {
			return err
		}
		s.eg = eg
	}
	if err := waitAgent(ctx, p.socket, st.Pid, 10*time.Second); err != nil {
		if tail := logTail(p); tail != "" {
			return fmt.Errorf("%w; agent log: %s", err, tail)
		}
		return err
	}
	return nil
}

// Attach reconnects to a computer started by an earlier daemon (the daemon
// restarted; the computer kept running). It fails if the computer is not
// running.
func Attach(ctx context.Context, spec Spec) (*Sandbox, error) {
	p := spec.paths()
	st, err := runcState(ctx, p, spec.Name)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", spec.Name, err)
	}
	if st.Status != "running" {
		return nil, fmt.Errorf("attach %s: computer is %s", spec.Name, st.Status)
	}
	if err := ping(ctx, p.socket); err != nil {
		return nil, fmt.Errorf("attach %s: agent does not answer: %w", spec.Name, err)
	}
	s := &Sandbox{spec: spec, p: p}
	if spec.Network {
		eg, err := startEgress(spec, st.Pid, true)
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", spec.Name, err)
		}
		s.eg = eg
	}
	return s, nil
}

// ExecRequest is a command to run in a computer.
type ExecRequest struct {
	Argv    []string // e.g. {"bash", "-lc", "make test"}
	User    string   // "ohm" (default) or "root"
	Workdir string   // default: the user's home
	Env     []string // KEY=VALUE, added to the computer's Env
	TTY     bool     // run on a pseudo-terminal (stdout carries both streams)
	Timeout time.Duration

	// Size is the terminal's initial size when TTY (zero: the kernel's
	// default); Resize delivers later changes until Exec returns.
	Size   WindowSize
	Resize <-chan WindowSize
}

// WindowSize is a terminal's size in characters.
type WindowSize struct {
	Rows, Cols uint16
}

// Exec runs req in the computer, streaming its output to stdout and stderr
// while it runs, and returns its exit code (128+signal if killed).
// Cancelling ctx kills the command.
func (s *Sandbox) Exec(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return execAgent(ctx, s.p.socket, req, stdin, stdout, stderr)
}

// Stop has the agent send SIGTERM to every process, waits up to grace,
// kills what is left, and unmounts the overlay and the root disk. The workspace mount is
// the caller's.
func (s *Sandbox) Stop(ctx context.Context, grace time.Duration) error {
	if err := s.teardown(ctx, grace); err != nil {
		return fmt.Errorf("stop %s: %w", s.spec.Name, err)
	}
	return nil
}

// teardown ends the container (gracefully when grace > 0) and unmounts.
func (s *Sandbox) teardown(ctx context.Context, grace time.Duration) error {
	p := s.p
	if st, err := runcState(ctx, p, s.spec.Name); err == nil {
		if st.Status == "running" && grace > 0 {
			if err := shutdownAgent(ctx, p.socket); err != nil {
				runc(ctx, p, "kill", s.spec.Name, "TERM")
			}
			waitExit(st.Pid, grace)
		}
		runc(ctx, p, "kill", "--all", s.spec.Name, "KILL")
		if out, err := runc(ctx, p, "delete", "--force", s.spec.Name); err != nil {
			if _, serr := runcState(ctx, p, s.spec.Name); serr == nil {
				return fmt.Errorf("runc delete: %v: %s", err, out)
			}
		}
	}
	if s.eg != nil {
		s.eg.close()
	}
	stopNetwork(p)
	return unmountAll(p, !s.spec.DiskMounted)
}

// DiskUsage is the root disk's size and use in bytes.
type DiskUsage struct {
	Size uint64
	Used uint64
}

// Usage reports the root disk's use (it mounts nothing; a stopped computer
// reports its size only).
func Usage(ctx context.Context, spec Spec) (DiskUsage, error) {
	p := spec.paths()
	if spec.DiskMounted {
		u := DiskUsage{Size: uint64(spec.DiskSizeMB) << 20}
		var st unix.Statfs_t
		if mountinfo.IsMountpoint(p.disk) && unix.Statfs(p.disk, &st) == nil {
			u.Size = st.Blocks * uint64(st.Bsize)
			u.Used = (st.Blocks - st.Bfree) * uint64(st.Bsize)
		}
		return u, nil
	}
	fi, err := os.Stat(p.image)
	if err != nil {
		return DiskUsage{}, fmt.Errorf("usage of %s: %w", spec.Name, err)
	}
	u := DiskUsage{Size: uint64(fi.Size())}
	if mountinfo.IsMountpoint(p.disk) {
		if used, err := usedBytes(p.disk); err == nil {
			u.Used = used
		}
	}
	return u, nil
}

// Cleanup tears down whatever a crashed daemon or host left of spec's
// sandbox (runc state, overlay, loop mount) so that Start can run again.
func Cleanup(ctx context.Context, spec Spec) error {
	s := &Sandbox{spec: spec, p: spec.paths()}
	if err := s.teardown(ctx, 0); err != nil {
		return fmt.Errorf("cleanup %s: %w", spec.Name, err)
	}
	return nil
}
