package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// FrameDial asks the agent for a connection to a TCP port on the
// computer's own loopback; its payload is a JSON DialRequest. The agent
// answers FrameDial (empty) once connected, after which the connection
// carries the TCP stream's bytes as they are, both ways, no longer framed;
// or FrameError (why: nothing listens, typically) and closes.
//
// Preview URLs reach a computer's ports this way: the agent is inside the
// computer's network namespace, so it reaches a server bound to 127.0.0.1
// or 0.0.0.0 there whether or not the computer has a network, and the
// host talks only to the socket it made itself (see docs/preview.md).
const FrameDial byte = 11

// DialRequest is the payload of FrameDial.
type DialRequest struct {
	Port int `json:"port"`
}

// dialTimeout bounds the agent's connect to a local port; on loopback a
// connect either succeeds or is refused at once, so this only catches a
// listener whose backlog is full.
const dialTimeout = 5 * time.Second

// relay serves a FrameDial: it connects to the port on loopback (IPv4,
// then IPv6 for a server bound to ::1 only) and copies bytes both ways
// until both directions have ended.
func relay(c *conn, payload []byte) {
	var req DialRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		c.send(FrameError, []byte("bad dial request: "+err.Error()))
		return
	}
	if req.Port < 1 || req.Port > 65535 {
		c.send(FrameError, []byte(fmt.Sprintf("invalid port %d: it must be between 1 and 65535", req.Port)))
		return
	}
	tc, err := dialLoopback(req.Port)
	if err != nil {
		c.send(FrameError, []byte(err.Error()))
		return
	}
	defer tc.Close()
	if err := c.send(FrameDial, nil); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(tc, c.c)
		tc.CloseWrite()
	}()
	io.Copy(c.c, tc)
	c.c.CloseWrite()
	wg.Wait()
}

// dialLoopback connects to port on 127.0.0.1, or on ::1 when nothing
// listens on the former.
func dialLoopback(port int) (*net.TCPConn, error) {
	p := strconv.Itoa(port)
	var first error
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, p), dialTimeout)
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if first == nil {
			first = err
		}
	}
	if errors.Is(first, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("nothing listens on port %d (connection refused)", port)
	}
	return nil, fmt.Errorf("connect to port %d: %w", port, first)
}
