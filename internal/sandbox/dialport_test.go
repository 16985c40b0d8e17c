package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ohm/internal/agent"
)

// startAgent runs the agent in this process, as TestServe of package agent
// does, and returns its socket once it answers.
func startAgent(t *testing.T) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, socket) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := waitAgent(ctx, socket, 0, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return socket
}

// echoServer answers each connection with "pong: " and what it read until
// EOF, then closes.
func echoServer(t *testing.T, network, addr string) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("pong: "), b...))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// freePort is a port nothing listens on (it did a moment ago).
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// TestDialPort relays through a real agent to servers on loopback: bytes
// both ways with half-close, IPv6-only servers, and the errors.
func TestDialPort(t *testing.T) {
	socket := startAgent(t)
	v4 := echoServer(t, "tcp4", "127.0.0.1:0")
	free := freePort(t)
	tests := []struct {
		name    string
		port    func(t *testing.T) int
		wantErr string
		listens bool // false: the error must wrap ErrNotListening
	}{
		{name: "ipv4", port: func(*testing.T) int { return v4 }},
		{name: "ipv6 only", port: func(t *testing.T) int { return echoServer(t, "tcp6", "[::1]:0") }},
		{name: "nothing listens", port: func(*testing.T) int { return free }, wantErr: "nothing listens on port " + strconv.Itoa(free)},
		{name: "port 0", port: func(*testing.T) int { return 0 }, wantErr: "invalid port 0", listens: true},
		{name: "port 65536", port: func(*testing.T) int { return 65536 }, wantErr: "invalid port 65536", listens: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := tt.port(t)
			c, err := dialPort(context.Background(), socket, port)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("dial %d: %v, want %q", port, err, tt.wantErr)
				}
				if errors.Is(err, ErrNotListening) == tt.listens {
					t.Errorf("dial %d: %v: wraps ErrNotListening: %v", port, err, !tt.listens)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := strings.Repeat("0123456789", 100000) // more than a frame, more than a socket buffer
			go func() {
				io.WriteString(c, msg)
				c.(*net.UnixConn).CloseWrite()
			}()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "pong: "+msg {
				t.Errorf("relay: %v, %d bytes back, want %d", err, len(b), len("pong: "+msg))
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dialPort(ctx, socket, v4); err == nil {
		t.Error("dial with a cancelled context succeeded")
	}
}
