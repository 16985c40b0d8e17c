package client

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// SocketPath is where the daemon of dataDir listens.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, "ohm.sock") }

// LogPath is where a daemon started by Connect logs.
func LogPath(dataDir string) string { return filepath.Join(dataDir, "ohm.log") }

// startTimeout bounds how long Connect waits for a daemon it started.
const startTimeout = 30 * time.Second

// Connect returns a client of the daemon of dataDir. If none answers and
// exe is not empty, it starts one (`exe serve --data-dir dataDir`, in its
// own session, logging to <dataDir>/ohm.log) and waits for it to answer.
func Connect(ctx context.Context, dataDir, exe string) (*Client, error) {
	c := New(SocketPath(dataDir))
	if err := c.ping(ctx); err == nil || exe == "" {
		return c, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("start the ohm daemon: %w", err)
	}
	logf, err := os.OpenFile(LogPath(dataDir), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start the ohm daemon: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "serve", "--data-dir", dataDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the ohm daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(startTimeout)
	var exitErr error
	for {
		if err := c.ping(ctx); err == nil {
			return c, nil
		}
		select {
		case err := <-exited:
			// It may have lost a race with another daemon starting on the
			// same data directory: give that one a moment to answer.
			exitErr = err
			exited = nil
			if d := time.Now().Add(3 * time.Second); d.Before(deadline) {
				deadline = d
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			if exitErr != nil {
				return nil, fmt.Errorf("the ohm daemon exited (%v); see %s", exitErr, LogPath(dataDir))
			}
			return nil, fmt.Errorf("the ohm daemon did not answer on %s within %v; see %s", SocketPath(dataDir), startTimeout, LogPath(dataDir))
		}
	}
}

func (c *Client) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.Health(ctx)
}
