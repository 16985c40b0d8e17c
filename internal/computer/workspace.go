package computer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
	"ohm/internal/ohmfs/volume"
)

// Workspace manages the workspace volumes of computers: one volume per
// computer, mounted on the host while the computer runs.
type Workspace interface {
	// Format creates an empty volume at vol.
	Format(ctx context.Context, vol string) error
	// Mount mounts vol at mountpoint in a process that outlives the caller.
	Mount(ctx context.Context, vol, mountpoint string) error
	// Unmount flushes and unmounts mountpoint: every write made before it
	// is durable once it returns.
	Unmount(ctx context.Context, mountpoint string) error
	// Destroy removes vol and all its data.
	Destroy(ctx context.Context, vol string) error
	// Usage reports the bytes and files vol holds.
	Usage(ctx context.Context, vol string) (WorkspaceUsage, error)
}

// WorkspaceHealth is a Workspace that can tell why a mounted workspace no
// longer works where a statfs of its mountpoint still answers: a kernel
// filesystem whose storage process died goes on answering statfs from
// its caches. The supervisor asks it, and mounts the workspace again
// (Mount) when it answers an error.
type WorkspaceHealth interface {
	Health(ctx context.Context, vol, mountpoint string) error
}

// WorkspaceUsage is what a workspace holds.
type WorkspaceUsage struct {
	UsedBytes   uint64 `json:"used_bytes"`
	StoredBytes uint64 `json:"stored_bytes"`
	Files       uint64 `json:"files"`
	Capacity    uint64 `json:"capacity_bytes"`
	// ReplicaLagSeconds is the age of the oldest metadata change the
	// volume's replica lacks; nil when it has no replica.
	ReplicaLagSeconds *float64 `json:"replica_lag_seconds,omitempty"`
	// Layout is how the workspace keeps its files: "block" (a kernel
	// filesystem on a device image in the volume) or "file" (at the
	// volume's root); empty when the workspace does not say.
	Layout string `json:"layout,omitempty"`
	// Incident says what last went wrong under the running workspace and
	// what was done about it (its storage process died and it was mounted
	// again), if anything did.
	Incident string `json:"incident,omitempty"`
}

// OhmfsWorkspace keeps workspaces as ohmfs file volumes, driven through
// `ohm fs` subcommands of the binary Exe so that each mount is its own
// process and survives a restart of the daemon.
type OhmfsWorkspace struct {
	Exe string // the ohm binary
}

// Format runs `ohm fs format vol`.
func (w OhmfsWorkspace) Format(ctx context.Context, vol string) error {
	return w.run(ctx, "fs", "format", vol)
}

// Mount runs `ohm fs mount vol mountpoint --background`.
func (w OhmfsWorkspace) Mount(ctx context.Context, vol, mountpoint string) error {
	return w.run(ctx, "fs", "mount", vol, mountpoint, "--background")
}

// Unmount runs `ohm fs umount mountpoint`; if the mount's process is gone
// (the mountpoint answers ENOTCONN) it detaches the dead mount instead.
func (w OhmfsWorkspace) Unmount(ctx context.Context, mountpoint string) error {
	if !mountinfo.IsMountpoint(mountpoint) {
		return nil
	}
	if _, err := os.Stat(mountpoint); errors.Is(err, syscall.ENOTCONN) {
		return detach(mountpoint)
	}
	return w.run(ctx, "fs", "umount", mountpoint)
}

// Destroy runs `ohm fs destroy vol`.
func (w OhmfsWorkspace) Destroy(ctx context.Context, vol string) error {
	if _, err := os.Stat(vol); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return w.run(ctx, "fs", "destroy", vol)
}

// Usage reads the volume's committed metadata.
func (w OhmfsWorkspace) Usage(ctx context.Context, vol string) (WorkspaceUsage, error) {
	st, err := volume.Inspect(ctx, vol)
	if err != nil {
		return WorkspaceUsage{}, err
	}
	return usageOfStatus(st), nil
}

func (w OhmfsWorkspace) run(ctx context.Context, args ...string) error {
	// The output goes to a file, not a pipe: a backgrounded mount process
	// inherits it and would keep a pipe open, so Wait would never return.
	out, err := os.CreateTemp("", "ohm-fs-*.log")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, w.Exe, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		msg := strings.TrimSpace(string(b))
		msg = strings.TrimPrefix(msg, "ohm: ")
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("ohm %s: %s", strings.Join(args, " "), msg)
	}
	return nil
}

// DirWorkspace keeps workspaces as plain host directories, bind-mounted. It
// is for development and tests where ohmfs is not at hand.
type DirWorkspace struct{}

// Format creates the directory vol.
func (DirWorkspace) Format(ctx context.Context, vol string) error {
	if err := os.Mkdir(vol, 0o755); err != nil {
		return fmt.Errorf("format %s: %w", vol, err)
	}
	return nil
}

// Mount bind-mounts vol at mountpoint, nosuid and nodev, through a
// descriptor: no link at mountpoint or above it is followed (bindAt).
func (DirWorkspace) Mount(ctx context.Context, vol, mountpoint string) error {
	if err := bindAt(vol, mountpoint); err != nil {
		return fmt.Errorf("mount %s: %w", vol, err)
	}
	return nil
}

// Unmount unmounts mountpoint.
func (DirWorkspace) Unmount(ctx context.Context, mountpoint string) error {
	if !mountinfo.IsMountpoint(mountpoint) {
		return nil
	}
	if err := syscall.Unmount(mountpoint, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", mountpoint, err)
	}
	return nil
}

// Destroy removes vol.
func (DirWorkspace) Destroy(ctx context.Context, vol string) error { return os.RemoveAll(vol) }

// Usage reports nothing: a plain directory is not measured.
func (DirWorkspace) Usage(ctx context.Context, vol string) (WorkspaceUsage, error) {
	return WorkspaceUsage{}, nil
}

// detach lazily unmounts a mount whose process died.
func detach(mountpoint string) error {
	// No link is followed: mountpoint may be in a computer's /home.
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("detach dead mount %s: %w", mountpoint, err)
	}
	return nil
}
