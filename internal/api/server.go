// Package api is the HTTP API of `ohm serve`: computers' lifecycle, exec
// with streamed output, interactive sessions and files, over a root-only
// Unix socket. The wire format is documented in package client, whose
// types it speaks.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"ohm/internal/api/client"
	"ohm/internal/computer"
	"ohm/internal/sandbox"
)

// maxBody bounds JSON request bodies.
const maxBody = 1 << 20

// Server answers the API for one Manager.
type Server struct {
	m    *computer.Manager
	logf func(format string, args ...any)
	mux  *http.ServeMux
}

// NewServer returns the API of m.
func NewServer(m *computer.Manager, logf func(format string, args ...any)) *Server {
	s := &Server{m: m, logf: logf, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.health)
	s.mux.HandleFunc("POST /v1/computers", s.create)
	s.mux.HandleFunc("GET /v1/computers", s.list)
	s.mux.HandleFunc("GET /v1/computers/{name}", s.get)
	s.mux.HandleFunc("DELETE /v1/computers/{name}", s.delete)
	s.mux.HandleFunc("POST /v1/computers/{name}/start", s.start)
	s.mux.HandleFunc("POST /v1/computers/{name}/stop", s.stop)
	s.mux.HandleFunc("POST /v1/computers/{name}/exec", s.exec)
	s.mux.HandleFunc("GET /v1/computers/{name}/files", s.getFile)
	s.mux.HandleFunc("PUT /v1/computers/{name}/files", s.putFile)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]client.ErrorBody{"error": {Code: code, Message: msg}})
}

// httpStatus maps a manager error code to an HTTP status.
func httpStatus(code computer.Code) int {
	switch code {
	case computer.CodeInvalid:
		return http.StatusBadRequest
	case computer.CodeNotFound:
		return http.StatusNotFound
	case computer.CodeExists, computer.CodeState:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func errorBody(err error) client.ErrorBody {
	return client.ErrorBody{Code: string(computer.ErrorCode(err)), Message: err.Error()}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := computer.ErrorCode(err)
	if code == computer.CodeInternal {
		s.logf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	writeError(w, httpStatus(code), string(code), err.Error())
}

// decode reads a JSON body into v; an empty body leaves v as is.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return &computer.Error{Code: computer.CodeInvalid, Msg: "bad request body: " + err.Error()}
	}
	return nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	recs, err := s.m.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if recs == nil {
		recs = []computer.Record{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"computers": recs})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	c, err := s.m.Info(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	if err := s.m.Delete(r.Context(), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": r.PathValue("name"), "state": "deleted"})
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, s.m.Start)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, s.m.Stop)
}

func (s *Server) transition(w http.ResponseWriter, r *http.Request, op func(context.Context, string) error) {
	name := r.PathValue("name")
	if err := op(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	rec, err := s.m.Get(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/x-ndjson")
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req client.CreateRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	opts := computer.CreateOptions{
		Name: req.Name, Template: req.Template, DiskSizeMB: req.DiskSizeMB,
		CPUs: req.CPUs, MemoryMB: req.MemoryMB, Env: req.Env,
	}
	if !wantsStream(r) {
		c, err := s.m.Create(r.Context(), opts)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, c)
		return
	}
	em := newEmitter(w)
	pw := &lineWriter{emit: func(line string) { em.send(client.Event{Progress: line}) }}
	opts.Progress = pw
	c, err := s.m.Create(r.Context(), opts)
	pw.flush()
	if err != nil {
		if !em.started() {
			s.fail(w, r, err)
			return
		}
		em.sendError(err)
		return
	}
	em.sendAny(map[string]any{"computer": c})
}

// emitter writes NDJSON events, flushing each, and sends the 200 header
// with the first one (so that an error before any event can still be a
// plain error answer).
type emitter struct {
	mu    sync.Mutex
	w     http.ResponseWriter
	rc    *http.ResponseController
	begun bool
	err   error
}

func newEmitter(w http.ResponseWriter) *emitter {
	return &emitter{w: w, rc: http.NewResponseController(w)}
}

func (e *emitter) started() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.begun
}

func (e *emitter) send(ev client.Event) error { return e.sendAny(ev) }

func (e *emitter) sendError(err error) error {
	b := errorBody(err)
	return e.sendAny(client.Event{Error: &b})
}

func (e *emitter) sendAny(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	if !e.begun {
		e.begun = true
		e.w.Header().Set("Content-Type", "application/x-ndjson")
		e.w.Header().Set("X-Content-Type-Options", "nosniff")
		e.w.WriteHeader(http.StatusOK)
	}
	if _, err := e.w.Write(b); err != nil {
		e.err = err
		return err
	}
	if err := e.rc.Flush(); err != nil {
		e.err = err
		return err
	}
	return nil
}

// streamWriter turns writes into output events of one stream.
type streamWriter struct {
	em     *emitter
	stream string
}

func (sw streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	ev := client.Event{Stream: sw.stream}
	if utf8.Valid(p) {
		ev.Data = string(p)
	} else {
		ev.DataB64 = append([]byte(nil), p...)
	}
	if err := sw.em.send(ev); err != nil {
		return 0, err
	}
	return len(p), nil
}

// lineWriter splits writes into lines (ended by \n or \r, as progress bars
// do) and emits each non-empty one.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for _, c := range p {
		if c == '\n' || c == '\r' {
			lw.flushLocked()
			continue
		}
		lw.buf = append(lw.buf, c)
	}
	return len(p), nil
}

func (lw *lineWriter) flushLocked() {
	if line := strings.TrimSpace(string(lw.buf)); line != "" {
		lw.emit(line)
	}
	lw.buf = lw.buf[:0]
}

func (lw *lineWriter) flush() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.flushLocked()
}

func execOptions(req client.ExecRequest) computer.ExecOptions {
	return computer.ExecOptions{
		Command: req.Command, Argv: req.Argv, User: req.User, Workdir: req.Workdir,
		Env: req.Env, TTY: req.TTY, Size: sandbox.WindowSize{Rows: req.Rows, Cols: req.Cols},
		Timeout: time.Duration(req.TimeoutSeconds * float64(time.Second)),
	}
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	var req client.ExecRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), client.UpgradeProtocol) {
		s.interactive(w, r, req)
		return
	}
	if req.TTY {
		s.fail(w, r, &computer.Error{Code: computer.CodeInvalid, Msg: "a TTY needs an interactive session (Upgrade: " + client.UpgradeProtocol + ")"})
		return
	}
	em := newEmitter(w)
	code, err := s.m.Exec(r.Context(), r.PathValue("name"), execOptions(req), nil,
		streamWriter{em, "stdout"}, streamWriter{em, "stderr"})
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
