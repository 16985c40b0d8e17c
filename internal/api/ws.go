package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"ohm/client"
	"ohm/internal/sandbox"
)

// maxMessage bounds a WebSocket message in either direction.
const maxMessage = 1 << 20

func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// interactive serves an exec with stdin (and maybe a PTY and window
// resizes) over a WebSocket; see package client for the messages.
func (s *Server) interactive(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !isWebSocket(r) {
		s.fail(w, r, invalid("GET on exec is a WebSocket session; POST runs a command with NDJSON output"))
		return
	}
	// A missing computer is a plain error answer rather than a session that
	// fails.
	if _, err := s.m.Get(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxMessage)
	// The session ends when the client goes away, which kills the command
	// (unless it runs in the background).
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()

	sendEvent := func(ev client.Event) error {
		b, _ := json.Marshal(ev)
		return conn.Write(ctx, websocket.MessageText, b)
	}
	fail := func(err error) {
		b := wireError(err)
		sendEvent(client.Event{Error: &b})
		conn.Close(websocket.StatusNormalClosure, "")
	}
	var req client.ExecRequest
	rctx, rcancel := context.WithTimeout(ctx, bodyReadTimeout)
	typ, msg, err := conn.Read(rctx)
	rcancel()
	if err != nil {
		return
	}
	if typ != websocket.MessageText {
		fail(invalid("the first message must be the exec request as JSON text"))
		return
	}
	dec := json.NewDecoder(strings.NewReader(string(msg)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(invalid("bad exec request: %v", err))
		return
	}
	opts, err := execOptions(req)
	if err != nil {
		fail(err)
		return
	}
	if req.Background {
		p, err := s.startProcess(name, req, opts, true)
		if err != nil {
			fail(err)
			return
		}
		info := p.snapshot()
		if sendEvent(client.Event{Process: &info}) != nil {
			return
		}
		s.serveAttached(ctx, cancel, conn, p)
		return
	}

	stdinR, stdinW := io.Pipe()
	resize := make(chan sandbox.WindowSize, 4)
	go func() {
		defer cancel()
		readInput(ctx, conn, stdinW, resize)
	}()
	opts.Resize = resize
	start := time.Now()
	code, err := s.m.Exec(ctx, name, opts, stdinR,
		wsWriter{ctx, conn, client.StreamStdout}, wsWriter{ctx, conn, client.StreamStderr})
	s.metrics.execDone("interactive", time.Since(start), err)
	stdinR.Close()
	if err != nil {
		fail(err)
		return
	}
	sendEvent(client.Event{ExitCode: &code})
	conn.Close(websocket.StatusNormalClosure, "")
}

// readInput forwards the client's messages: binary ones to stdin, resize
// and eof controls. It returns when the client goes away.
func readInput(ctx context.Context, conn *websocket.Conn, stdin *io.PipeWriter, resize chan<- sandbox.WindowSize) {
	for {
		typ, p, err := conn.Read(ctx)
		if err != nil {
			stdin.CloseWithError(err)
			return
		}
		if typ == websocket.MessageBinary {
			// A command that stopped reading stdin makes this fail; keep
			// serving resizes.
			stdin.Write(p)
			continue
		}
		var ctl client.Control
		if json.Unmarshal(p, &ctl) != nil {
			continue
		}
		switch ctl.Type {
		case "eof":
			stdin.Close()
		case "resize":
			if resize != nil {
				select {
				case resize <- sandbox.WindowSize{Rows: ctl.Rows, Cols: ctl.Cols}:
				default: // a newer size will come; never block the reader
				}
			}
		}
	}
}

// wsWriter turns writes into binary messages of one stream.
type wsWriter struct {
	ctx    context.Context
	conn   *websocket.Conn
	stream byte
}

func (ww wsWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		n := min(len(p), maxMessage-1)
		msg := make([]byte, 1+n)
		msg[0] = ww.stream
		copy(msg[1:], p[:n])
		if err := ww.conn.Write(ww.ctx, websocket.MessageBinary, msg); err != nil {
			return 0, err
		}
		p = p[n:]
	}
	return total, nil
}

// wsSink sends an attached process's output over a WebSocket.
type wsSink struct {
	ctx  context.Context
	conn *websocket.Conn
}

func (s wsSink) output(stream byte, data []byte) error {
	_, err := wsWriter{s.ctx, s.conn, stream}.Write(data)
	return err
}

func (s wsSink) event(ev client.Event) error {
	b, _ := json.Marshal(ev)
	return s.conn.Write(s.ctx, websocket.MessageText, b)
}

func (s wsSink) dropped(n int64) error { return s.event(client.Event{Dropped: n}) }

func (s wsSink) end(info client.Process) error {
	if info.ExitCode == nil {
		return s.event(client.Event{Error: &client.ErrorBody{Code: client.CodeInternal, Message: info.Error}})
	}
	return s.event(client.Event{ExitCode: info.ExitCode})
}

// serveAttached connects a WebSocket to a background process: its output
// out, the client's stdin and resizes in. Leaving detaches; the process
// keeps running.
func (s *Server) serveAttached(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, p *process) {
	go func() {
		defer cancel()
		for {
			typ, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if p.stdin == nil {
				continue
			}
			if typ == websocket.MessageBinary {
				p.stdin.Write(msg)
				continue
			}
			var ctl client.Control
			if json.Unmarshal(msg, &ctl) != nil {
				continue
			}
			switch ctl.Type {
			case "eof":
				p.stdin.Close()
			case "resize":
				select {
				case p.resize <- sandbox.WindowSize{Rows: ctl.Rows, Cols: ctl.Cols}:
				default:
				}
			}
		}
	}()
	if p.attach(ctx, wsSink{ctx, conn}) == nil {
		conn.Close(websocket.StatusNormalClosure, "")
	}
}

// attachWebSocket re-attaches a WebSocket client to a background process.
func (s *Server) attachWebSocket(w http.ResponseWriter, r *http.Request, p *process) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxMessage)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	s.serveAttached(ctx, cancel, conn, p)
}
