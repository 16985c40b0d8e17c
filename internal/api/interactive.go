package api

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"ohm/internal/api/client"
	"ohm/internal/sandbox"
)

// interactive serves an exec with stdin (and maybe a PTY) over a hijacked
// connection speaking the frame protocol of package client.
func (s *Server) interactive(w http.ResponseWriter, r *http.Request, req client.ExecRequest) {
	// Check the computer exists first, so that a missing one is a plain
	// error answer rather than a session that fails.
	if _, err := s.m.Get(r.Context(), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer conn.Close()
	io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+client.UpgradeProtocol+"\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	// The request's context ends with the hijack; the session's ends when
	// the client goes away, which kills the command.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()

	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return client.WriteFrame(conn, typ, p)
	}
	stdinR, stdinW := io.Pipe()
	resize := make(chan sandbox.WindowSize, 4)
	go func() {
		defer cancel()
		for {
			typ, p, err := client.ReadFrame(brw.Reader)
			if err != nil {
				stdinW.CloseWithError(err)
				return
			}
			switch typ {
			case client.FrameStdin:
				if _, err := stdinW.Write(p); err != nil {
					// The command stopped reading stdin; keep serving resizes.
					continue
				}
			case client.FrameStdinEOF:
				stdinW.Close()
			case client.FrameResize:
				if len(p) == 4 {
					select {
					case resize <- sandbox.WindowSize{Rows: binary.BigEndian.Uint16(p), Cols: binary.BigEndian.Uint16(p[2:])}:
					default: // a newer size will come; never block the reader
					}
				}
			}
		}
	}()
	opts := execOptions(req)
	opts.Resize = resize
	code, err := s.m.Exec(ctx, r.PathValue("name"), opts, stdinR,
		frameWriter{send, client.FrameStdout}, frameWriter{send, client.FrameStderr})
	stdinR.Close()
	if err != nil {
		b, _ := json.Marshal(errorBody(err))
		send(client.FrameError, b)
		return
	}
	p := make([]byte, 4)
	binary.BigEndian.PutUint32(p, uint32(int32(code)))
	send(client.FrameExit, p)
}

// frameWriter turns writes into frames of one type.
type frameWriter struct {
	send func(byte, []byte) error
	typ  byte
}

func (fw frameWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		n := min(len(p), client.MaxFrame)
		if err := fw.send(fw.typ, p[:n]); err != nil {
			return 0, err
		}
		p = p[n:]
	}
	return total, nil
}
