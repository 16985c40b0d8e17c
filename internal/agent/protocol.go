// Package agent is the init of a computer: `ohm agent` runs as PID 1 inside
// the computer's namespaces, reaps orphaned processes, and runs commands on
// request from the host, streaming their output back over a Unix socket.
//
// # Protocol
//
// One connection carries one request. Both directions are a sequence of
// frames:
//
//	type    1 byte
//	length  4 bytes, big endian (at most MaxFrame)
//	payload length bytes
//
// The client opens with FramePing (the agent answers FramePing and
// closes: a readiness check), FrameShutdown (the agent answers
// FrameShutdown, then ends every process in the computer and exits: how
// the host stops a computer, since the agent ignores signals from inside
// it), FrameDial (a relay to a TCP port on the computer's loopback, see
// relay.go) or FrameStart, whose payload is a JSON Request. After FrameStart the client may send FrameStdin (data),
// FrameStdinEOF (empty) and FrameResize (rows and columns, 2 bytes each,
// big endian). The agent sends FrameStdout and FrameStderr (data) while
// the command runs, then exactly one FrameExit (the exit code, 4 bytes big
// endian; 128+signal if the command was killed) or FrameError (a message:
// the command could not be started) and closes the connection.
//
// Closing the connection before FrameExit kills the command's process
// group: a client that goes away takes its command with it.
package agent

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Frame types. Client to agent: FramePing, FrameShutdown, FrameStart,
// FrameStdin, FrameStdinEOF, FrameResize. Agent to client: FramePing,
// FrameShutdown, FrameStdout, FrameStderr, FrameExit, FrameError.
const (
	FramePing     byte = 1
	FrameStart    byte = 2
	FrameStdin    byte = 3
	FrameStdinEOF byte = 4
	FrameResize   byte = 5
	FrameStdout   byte = 6
	FrameStderr   byte = 7
	FrameExit     byte = 8
	FrameError    byte = 9
	FrameShutdown byte = 10
)

// MaxFrame bounds a frame's payload so a corrupt length cannot make either
// side allocate without limit.
const MaxFrame = 1 << 20

// Request is the payload of FrameStart.
type Request struct {
	Argv      []string `json:"argv"`
	User      string   `json:"user,omitempty"`    // "ohm" (default), "root", or a numeric uid
	Workdir   string   `json:"workdir,omitempty"` // default: the user's home
	Env       []string `json:"env,omitempty"`     // KEY=VALUE, over the computer's environment
	TTY       bool     `json:"tty,omitempty"`
	Rows      uint16   `json:"rows,omitempty"` // initial window size when TTY
	Cols      uint16   `json:"cols,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"` // 0: none
}

// WriteFrame writes one frame. Callers sharing w between goroutines must
// serialize calls.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(payload), MaxFrame)
	}
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if len(payload) == 0 {
		_, err := w.Write(hdr[:])
		return err
	}
	// One write per frame keeps frames whole on a socket shared by
	// goroutines that hold the caller's lock only around this call.
	buf := make([]byte, 0, len(hdr)+len(payload))
	buf = append(buf, hdr[:]...)
	buf = append(buf, payload...)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (typ byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds %d", n, MaxFrame)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// ExitPayload encodes an exit code for FrameExit.
func ExitPayload(code int) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(int32(code)))
}

// ResizePayload encodes a window size for FrameResize.
func ResizePayload(rows, cols uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, rows)
	return binary.BigEndian.AppendUint16(b, cols)
}
