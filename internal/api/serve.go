package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"ohm/client"
	"ohm/internal/api/mcpserver"
	"ohm/internal/computer"
)

// Config configures the daemon.
type Config struct {
	computer.Options // DataDir is required

	// Listen, if set, is a TCP address (e.g. 127.0.0.1:7070) to serve the
	// API on as well, every request needing the data directory's bearer
	// token. Off by default: the Unix socket is root-only.
	Listen string
	// TLSCert and TLSKey, if set, make the TCP listener speak TLS.
	TLSCert, TLSKey string
	// PreviewDomain is the domain of preview URLs on the TCP listener,
	// <port>-<name>.<PreviewDomain> (default DefaultPreviewDomain; see
	// expose.go).
	PreviewDomain string
	// Log receives the daemon's structured logs (default: JSON on stderr).
	Log *slog.Logger
}

// Serve runs the daemon of dataDir until ctx ends: it takes the data
// directory's lock (one daemon per data directory), opens the computer
// manager (which reconciles the registry with what runs), and answers the
// API on the root-only socket <dataDir>/ohm.sock, with the MCP tools at
// /mcp.
func Serve(ctx context.Context, dataDir string, log *slog.Logger) error {
	return ServeConfig(ctx, Config{Options: computer.Options{DataDir: dataDir}, Log: log})
}

// newHTTPServer returns an http.Server with the timeouts that keep slow
// or idle clients from holding connections forever. There is no overall
// read or write timeout: exec output and file transfers stream for as
// long as they take.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// ServeConfig is Serve with everything configurable.
func ServeConfig(ctx context.Context, cfg Config) error {
	dataDir := cfg.DataDir
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if cfg.Logf == nil {
		cfg.Logf = func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) }
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("TLS needs both a certificate and a key")
	}
	if err := validPreviewDomain(cfg.PreviewDomain); err != nil {
		return err
	}
	if cfg.TLSCert != "" && cfg.Listen == "" {
		return errors.New("TLS applies to the TCP listener: give --listen too")
	}
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
	// The token exists from the first start, so `ohm token` can show it
	// before TCP is ever turned on.
	if _, err := LoadToken(dataDir); err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	m, err := computer.Open(ctx, cfg.Options)
	if err != nil {
		return err
	}
	defer m.Close()
	api := NewServer(m, log)
	sock := client.SocketPath(dataDir)
	// The MCP tools call this daemon back through its own socket: the
	// request that reached them has passed the token check already.
	api.MountMCP(mcpserver.HTTPHandler(client.New(sock), "dev"))

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
	servers := []*http.Server{newHTTPServer(api)}
	errc := make(chan error, 2)
	go func() { errc <- servers[0].Serve(ln) }()
	log.Info("ohm daemon serving", "socket", sock, "pid", os.Getpid())
	if cfg.Listen != "" {
		tln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			servers[0].Close()
			return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		auth := &tokenAuth{dataDir: dataDir, next: api}
		api.previews.listening(tln.Addr(), cfg.PreviewDomain, tlsCfg != nil)
		tcp := newHTTPServer(api.previews.router(auth, auth))
		tcp.TLSConfig = tlsCfg
		servers = append(servers, tcp)
		go func() {
			if tlsCfg != nil {
				errc <- tcp.ServeTLS(tln, "", "")
			} else {
				errc <- tcp.Serve(tln)
			}
		}()
		log.Info("ohm daemon serving TCP", "addr", tln.Addr().String(), "tls", tlsCfg != nil)
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			s.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(shutCtx)
	}
	os.Remove(sock)
	log.Info("ohm daemon stopped")
	return nil
}
