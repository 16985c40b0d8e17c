package mount

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The lines a serving process reports on its ready descriptor.
const (
	readyOK    = "ready"
	readyError = "error: "
)

// Args returns the arguments of the ohm binary that serve c in the
// foreground (`ohm fs mount`, which cmd/ohm parses back into c and hands
// to Serve), reporting readiness on descriptor 3: how Start runs its
// detached process.
func (c Config) Args() []string {
	args := []string{"fs", "mount", c.Volume, c.Mountpoint,
		"--cache-size", strconv.FormatInt(c.CacheBytes, 10),
		"--reserve", strconv.FormatUint(c.Reserve, 10),
		"--ready-fd", "3"}
	if c.CacheDir != "" {
		args = append(args, "--cache-dir", c.CacheDir)
	}
	if c.Fsync != "" {
		args = append(args, "--fsync", c.Fsync)
	}
	if c.CPUProfile != "" {
		args = append(args, "--cpuprofile", c.CPUProfile)
	}
	if c.Debug {
		args = append(args, "--debug")
	}
	if c.NoWritebackCache {
		args = append(args, "--no-writeback-cache")
	}
	return args
}

// Start serves c from a detached process (a session of its own, its
// output appended to LogPath(c.Volume)) and returns once the mount
// answers, or with the error that kept it from mounting. The process
// serves until the mount is unmounted (Unmount) or it gets SIGTERM.
func Start(ctx context.Context, c Config) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("mount %s: %w", c.Mountpoint, err)
	}
	return StartExe(ctx, exe, c)
}

// StartExe is Start with the mount process running exe, an ohm binary:
// for a long-lived process that is not one itself (the daemon's tests),
// or that starts mounts without an `ohm fs mount --background` in
// between (one exec less on the path of `ohm computer create`). The
// caller stays the mount process's parent and reaps it when it exits; a
// mount outlives its caller all the same.
func StartExe(ctx context.Context, exe string, c Config) error {
	if err := c.check(); err != nil {
		return err
	}
	logPath := LogPath(c.Volume)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("mount log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()

	cmd := exec.Command(exe, c.Args()...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start mount process: %w", err)
	}
	w.Close()
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		lines <- strings.TrimSpace(line)
	}()
	var line string
	select {
	case line = <-lines:
	case <-ctx.Done():
		// The process goes on and may still mount; it is not ours to
		// stop half way.
		cmd.Process.Release()
		return fmt.Errorf("mount %s: %w (the mount process %d goes on; see %s)", c.Mountpoint, ctx.Err(), cmd.Process.Pid, logPath)
	}
	switch {
	case line == readyOK:
		// Reaped when it exits, not left a zombie of a caller that lives
		// on; a caller that exits first leaves it to init.
		go cmd.Wait()
		return nil
	case strings.HasPrefix(line, readyError):
		cmd.Wait()
		return errors.New(strings.TrimPrefix(line, readyError))
	default:
		cmd.Wait()
		return fmt.Errorf("mount process exited without mounting %s (see %s)", c.Mountpoint, logPath)
	}
}

// LogPath is where a detached mount of volume url logs: beside a file
// volume, or under /var/log/ohm for others.
func LogPath(url string) string {
	dir := strings.TrimPrefix(url, "file://")
	if !strings.Contains(dir, "://") {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return filepath.Join(dir, "mount.log")
		}
	}
	logDir := "/var/log/ohm"
	os.MkdirAll(logDir, 0o755)
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(logDir, "mount-"+hex.EncodeToString(sum[:6])+".log")
}
