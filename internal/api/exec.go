package api

import (
	"net/http"
	"time"

	"ohm/client"
	"ohm/internal/computer"
)

// exec runs a command with its output streamed as NDJSON. The command dies
// with the request unless it runs in the background.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.ExecRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.TTY {
		s.fail(w, r, invalid("a TTY needs an interactive session: a WebSocket on GET /v1/computers/{name}/exec"))
		return
	}
	opts, err := execOptions(req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Background {
		s.execBackground(w, r, name, req, opts)
		return
	}
	em := newEmitter(w)
	start := time.Now()
	code, err := s.m.Exec(r.Context(), name, opts, nil,
		streamWriter{em, "stdout"}, streamWriter{em, "stderr"})
	s.metrics.execDone("stream", time.Since(start), err)
	if err != nil {
		if !em.started() {
			s.fail(w, r, err)
			return
		}
		em.sendError(err)
		return
	}
	em.send(client.Event{ExitCode: &code})
}

func (s *Server) execBackground(w http.ResponseWriter, r *http.Request, name string, req client.ExecRequest, opts computer.ExecOptions) {
	// Fail plainly on a missing computer rather than in the background.
	if _, err := s.m.Get(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.startProcess(name, req, opts, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	em := newEmitter(w)
	info := p.snapshot()
	if em.send(client.Event{Process: &info}) != nil {
		return
	}
	p.attach(r.Context(), ndjsonSink{em})
}

// ndjsonSink sends an attached process's output as NDJSON events.
type ndjsonSink struct{ em *emitter }

func (s ndjsonSink) output(stream byte, data []byte) error {
	name := "stdout"
	if stream == client.StreamStderr {
		name = "stderr"
	}
	return s.em.send(outputEvent(name, data))
}

func (s ndjsonSink) dropped(n int64) error { return s.em.send(client.Event{Dropped: n}) }

func (s ndjsonSink) end(info client.Process) error {
	if info.ExitCode == nil {
		return s.em.send(client.Event{Error: &client.ErrorBody{Code: client.CodeInternal, Message: info.Error}})
	}
	return s.em.send(client.Event{ExitCode: info.ExitCode})
}

func (s *Server) listProcesses(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.m.Get(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"processes": s.procs.list(name)})
}

func (s *Server) process(w http.ResponseWriter, r *http.Request) *process {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return nil
	}
	p, err := s.procs.get(name, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return nil
	}
	return p
}

func (s *Server) getProcess(w http.ResponseWriter, r *http.Request) {
	if p := s.process(w, r); p != nil {
		writeJSON(w, http.StatusOK, p.snapshot())
	}
}

// attachProcess streams a background process's output (what the ring
// still holds, then live) as NDJSON; a WebSocket upgrade also forwards
// stdin and window sizes to a process started from an interactive session.
func (s *Server) attachProcess(w http.ResponseWriter, r *http.Request) {
	p := s.process(w, r)
	if p == nil {
		return
	}
	if isWebSocket(r) {
		s.attachWebSocket(w, r, p)
		return
	}
	p.attach(r.Context(), ndjsonSink{newEmitter(w)})
}

func (s *Server) killProcess(w http.ResponseWriter, r *http.Request) {
	p := s.process(w, r)
	if p == nil {
		return
	}
	p.kill()
	s.procs.remove(p.info.Computer, p.info.ID)
	writeJSON(w, http.StatusOK, p.snapshot())
}
