package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"ohm/internal/agent"
)

// ErrNotListening is what DialPort's error wraps when nothing inside the
// computer accepts connections on the port.
var ErrNotListening = errors.New("nothing listens on the port")

// dialHandshake bounds how long the agent may take to answer a dial.
const dialHandshake = 10 * time.Second

// DialPort connects to TCP port on the computer's loopback, through its
// agent (agent.FrameDial): the connection returned carries that port's
// bytes. It works whether or not the computer has a network, and the host
// only ever connects to the agent socket it made itself.
func (s *Sandbox) DialPort(ctx context.Context, port int) (net.Conn, error) {
	return dialPort(ctx, s.p.socket, port)
}

func dialPort(ctx context.Context, socket string, port int) (net.Conn, error) {
	payload, err := json.Marshal(agent.DialRequest{Port: port})
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("dial port %d: %w: %w", port, ErrUnreachable, err)
	}
	deadline := time.Now().Add(dialHandshake)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	// Cancelling ctx during the handshake ends it at once.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	typ, msg, err := func() (byte, []byte, error) {
		if err := agent.WriteFrame(c, agent.FrameDial, payload); err != nil {
			return 0, nil, err
		}
		return agent.ReadFrame(c)
	}()
	if !stop() {
		// ctx ended: the deadline it set stays on c, which is useless now.
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("dial port %d: %w: %w", port, ErrUnreachable, err)
	}
	switch typ {
	case agent.FrameDial:
		c.SetDeadline(time.Time{})
		return c, nil
	case agent.FrameError:
		c.Close()
		m := string(msg)
		if strings.HasPrefix(m, "unexpected frame type") {
			return nil, fmt.Errorf("dial port %d: the computer's agent is older than this ohm; restart the computer", port)
		}
		if strings.HasPrefix(m, "nothing listens") {
			return nil, fmt.Errorf("%s: %w", m, ErrNotListening)
		}
		return nil, fmt.Errorf("dial port %d: %s", port, m)
	}
	c.Close()
	return nil, fmt.Errorf("dial port %d: agent answered frame %d", port, typ)
}
