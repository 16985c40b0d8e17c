//go:build linux

// Package ohmtest holds what the end-to-end suites share: finding (or
// building) the ohm binary, skipping where root or FUSE is missing, and
// formatting, mounting and unmounting ohmfs volumes through the binary.
package ohmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ohm/internal/mountinfo"
	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/proc"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the ohm binary under test: $OHM_BIN if set (as
// `make test` sets it), otherwise one built once per test process from this
// module's source into a temporary directory.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("OHM_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("OHM_BIN %q: %v", p, err)
		}
		return abs
	}
	buildOnce.Do(func() { buildPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("build ohm: %v", buildErr)
	}
	return buildPath
}

// CleanupBuild removes the binary Binary built, if any; call it from TestMain.
func CleanupBuild() {
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
}

func build() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "ohm-bin-")
	if err != nil {
		return "", err
	}
	// Others (uid 1000 in the POSIX suite) may need to run it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "ohm")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/ohm")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ohm: %v\n%s", err, b)
	}
	return out, nil
}

// ModuleRoot finds the directory holding go.mod, walking up from the
// working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts, other users' credentials)")
	}
}

// RequireFUSE skips t unless it runs as root with /dev/fuse present.
func RequireFUSE(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse: ", err)
	}
}

// Run runs the ohm binary with args and returns its stdout, stderr and
// error (an *exec.ExitError for a non-zero exit).
func Run(ctx context.Context, bin string, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// Ohm runs the ohm binary and fails t if it exits non-zero.
func Ohm(t testing.TB, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut, err := Run(ctx, bin, args...)
	if err != nil {
		t.Fatalf("ohm %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// Volume is a formatted ohmfs volume and where it is mounted.
type Volume struct {
	Bin  string
	Path string // the volume (a directory)
	Dir  string // the mountpoint
}

// NewVolume formats a fresh volume in a temporary directory and makes an
// empty mountpoint beside it. Nothing is mounted yet.
func NewVolume(t testing.TB, bin string) *Volume {
	t.Helper()
	base, err := os.MkdirTemp("", "ohmfs-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &Volume{Bin: bin, Path: filepath.Join(base, "vol"), Dir: filepath.Join(base, "mnt")}
	if err := os.Mkdir(v.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if Mounted(v.Dir) {
			ForceUnmount(v.Dir)
		}
		os.RemoveAll(base)
	})
	Ohm(t, bin, "fs", "format", v.Path)
	return v
}

// Mount mounts the volume with --background and waits for it.
func (v *Volume) Mount(t testing.TB) {
	t.Helper()
	Ohm(t, v.Bin, "fs", "mount", "--background", v.Path, v.Dir)
	if !Mounted(v.Dir) {
		t.Fatalf("ohm fs mount --background %s %s returned but nothing is mounted there", v.Path, v.Dir)
	}
}

// Umount unmounts the volume with `ohm fs umount`.
func (v *Volume) Umount(t testing.TB) {
	t.Helper()
	Ohm(t, v.Bin, "fs", "umount", v.Dir)
	deadline := time.Now().Add(30 * time.Second)
	for Mounted(v.Dir) {
		if time.Now().After(deadline) {
			t.Fatalf("ohm fs umount %s returned but it is still mounted", v.Dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Remount unmounts and mounts the volume again, so that what is read next
// comes from the volume's durable store, not from any cache.
func (v *Volume) Remount(t testing.TB) {
	t.Helper()
	v.Umount(t)
	v.Mount(t)
}

// Foreground is an `ohm fs mount` process running in the foreground.
type Foreground struct {
	Cmd  *exec.Cmd
	mp   string // its mountpoint
	done chan struct{}
	log  *os.File // its stdout and stderr; a file, not a pipe, so that no reader can hang on it
}

// Exited is closed when the mount process has exited.
func (f *Foreground) Exited() <-chan struct{} { return f.done }

// Output returns what the mount process printed so far.
func (f *Foreground) Output() string {
	b, _ := os.ReadFile(f.log.Name())
	return string(b)
}

// Kill sends SIGKILL to the mount process and waits for it to exit.
func (f *Foreground) Kill(t testing.TB) {
	t.Helper()
	// The mount process is the keeper of the FUSE connection; the server
	// answering it is a process of its own, which the keeper would
	// replace. A crash takes both: the keeper first, then the server.
	defer KillServer(t, f.mp)
	if err := f.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		select {
		case <-f.done:
			t.Errorf("the mount process had already exited before the kill: %v\n%s", f.Cmd.ProcessState, f.Output())
			return
		default:
		}
		t.Fatalf("kill -9 of the mount process: %v", err)
	}
	select {
	case <-f.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the mount process (pid %d) did not exit 30 s after SIGKILL", f.Cmd.Process.Pid)
	}
}

// KillServer kills (-9) the server process of the mount at mountpoint
// (`ohmfs-server MOUNTPOINT`, started by the mount's keeper) and waits
// until it is gone, as a crash of the host would take it with its keeper.
// It finds the server by its command line, not by the mount's record: a
// foreground mount is up before its keeper has written the record.
func KillServer(t testing.TB, mountpoint string) {
	t.Helper()
	// The server, and the writeback helper it starts: a crash takes
	// every process of the mount. A server killed while it starts its
	// helper may leave one the first look missed, so look again until
	// none is left.
	match := func(argv []string) bool {
		return len(argv) >= 2 && (argv[0] == "ohmfs-server" || argv[0] == "ohmfs-writeback") && argv[1] == mountpoint
	}
	deadline := time.Now().Add(30 * time.Second)
	for pids := proc.Find(match); len(pids) > 0; pids = proc.Find(match) {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL) // an error: already gone
		}
		for _, pid := range pids {
			for proc.Running(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("a process of the mount at %s (pid %d) did not exit 30 s after SIGKILL", mountpoint, pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// MountForeground starts `ohm fs mount` in the foreground (so that the
// caller knows the mount process's pid) and waits until the mount is up.
func (v *Volume) MountForeground(t testing.TB) *Foreground {
	t.Helper()
	log, err := os.CreateTemp("", "ohm-mount-log-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(); os.Remove(log.Name()) })
	cmd := exec.Command(v.Bin, "fs", "mount", v.Path, v.Dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ohm fs mount: %v", err)
	}
	f := &Foreground{Cmd: cmd, mp: v.Dir, done: make(chan struct{}), log: log}
	go func() { cmd.Wait(); close(f.done) }()
	t.Cleanup(func() {
		select {
		case <-f.done:
		default:
			cmd.Process.Kill()
			<-f.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !Mounted(v.Dir) {
		select {
		case <-f.done:
			t.Fatalf("ohm fs mount %s %s exited before mounting: %v\n%s", v.Path, v.Dir, cmd.ProcessState, f.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ohm fs mount %s %s: not mounted after 30s\n%s", v.Path, v.Dir, f.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

// Mounted reports whether a filesystem is mounted at dir.
func Mounted(dir string) bool { return mountinfo.IsMountpoint(dir) }

// MountType returns the type the mount table gives for the filesystem
// mounted at dir (the top one, if several are stacked).
func MountType(dir string) (string, bool) {
	m, ok, err := mountinfo.At(dir)
	return m.FSType, err == nil && ok
}

// MountSource returns the source the mount table gives for dir (the top
// mount's, if several are stacked).
func MountSource(dir string) string {
	m, _, _ := mountinfo.At(dir)
	return m.Source
}

// ForceUnmount detaches whatever is mounted at dir, dead or alive: what a
// test does after killing a mount process. It aborts the FUSE connection
// first (as `umount -l` alone does not: a process blocked in writeback on a
// dead connection stays blocked until it is aborted), then detaches it.
func ForceUnmount(dir string) {
	if minor, ok := fuseConnection(dir); ok {
		fusefs.AbortConnection(minor) // mounting fusectl first on a fresh boot
	}
	for i := 0; i < 5 && Mounted(dir); i++ {
		if exec.Command("umount", "-l", dir).Run() != nil {
			exec.Command("fusermount3", "-u", "-z", dir).Run()
		}
	}
}

// fuseConnection returns the number of the FUSE connection mounted at dir
// (its device minor, the name of its directory in /sys/fs/fuse/connections):
// that of the top FUSE mount there.
func fuseConnection(dir string) (int, bool) {
	stack, err := mountinfo.Stack(dir)
	if err != nil {
		return 0, false
	}
	for i := len(stack) - 1; i >= 0; i-- {
		if strings.HasPrefix(stack[i].FSType, "fuse") {
			return int(stack[i].Minor), true
		}
	}
	return 0, false
}
