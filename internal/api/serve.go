package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"ohm/internal/api/client"
	"ohm/internal/computer"
)

// Serve runs the daemon of dataDir until ctx ends: it takes the data
// directory's lock (one daemon per data directory), opens the computer
// manager (which reconciles the registry with what runs), and answers the
// API on the root-only socket <dataDir>/ohm.sock.
func Serve(ctx context.Context, dataDir string, logf func(format string, args ...any)) error {
	return ServeOptions(ctx, computer.Options{DataDir: dataDir, Logf: logf})
}

// ServeOptions is Serve with a manager configured by opts.
func ServeOptions(ctx context.Context, opts computer.Options) error {
	dataDir, logf := opts.DataDir, opts.Logf
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return fmt.Errorf("secure data directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dataDir, "ohm.lock"), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("lock data directory: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("another ohm daemon is already serving %s", dataDir)
		}
		return fmt.Errorf("lock data directory: %w", err)
	}
	// The lock file names the daemon, for operators.
	lock.Truncate(0)
	fmt.Fprintf(lock, "%d\n", os.Getpid())
	m, err := computer.Open(ctx, opts)
	if err != nil {
		return err
	}
	defer m.Close()

	sock := client.SocketPath(dataDir)
	// We hold the lock, so a socket file left here belongs to a dead daemon.
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("secure %s: %w", sock, err)
	}
	srv := &http.Server{
		Handler:           NewServer(m, logf),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logf("ohm daemon serving %s", sock)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", sock, err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutCtx)
	os.Remove(sock)
	logf("ohm daemon stopped")
	return nil
}
