// Package api is the HTTP API of `ohm serve`: computers' lifecycle, exec
// with streamed output, interactive sessions over WebSocket, background
// processes, files, metrics and the OpenAPI document. The wire format is
// documented in package ohm/client, whose types it speaks, and in
// openapi.json.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"ohm/client"
	"ohm/internal/computer"
	"ohm/internal/sandbox"
)

// maxBody bounds JSON request bodies.
const maxBody = 1 << 20

// bodyReadTimeout bounds how long a client may take to send a JSON body.
const bodyReadTimeout = 30 * time.Second

// Server answers the API for one Manager.
type Server struct {
	m       *computer.Manager
	log     *slog.Logger
	mux     *http.ServeMux
	routes  []string // "METHOD /pattern", for the OpenAPI sync test
	procs   *processTable
	metrics *metrics
	// previews serves preview URLs of exposed ports (expose.go).
	previews *previews
}

// NewServer returns the API of m, logging to log.
func NewServer(m *computer.Manager, log *slog.Logger) *Server {
	s := &Server{m: m, log: log, mux: http.NewServeMux(), procs: newProcessTable(), metrics: newMetrics()}
	s.previews = newPreviews(m, log)
	s.handle("GET /healthz", s.health)
	s.handle("GET /metrics", s.serveMetrics)
	s.handle("GET /v1/openapi.json", serveOpenAPI)
	s.handle("POST /v1/computers", s.create)
	s.handle("GET /v1/computers", s.list)
	s.handle("GET /v1/computers/{name}", s.get)
	s.handle("DELETE /v1/computers/{name}", s.delete)
	s.handle("PATCH /v1/computers/{name}", s.setComputer)
	s.handle("POST /v1/computers/{name}/start", s.start)
	s.handle("POST /v1/computers/{name}/stop", s.stop)
	s.handle("POST /v1/computers/{name}/resize", s.resize)
	s.handle("POST /v1/computers/{name}/exec", s.exec)
	s.handle("GET /v1/computers/{name}/exec", s.interactive)
	s.handle("GET /v1/computers/{name}/processes", s.listProcesses)
	s.handle("GET /v1/computers/{name}/processes/{id}", s.getProcess)
	s.handle("GET /v1/computers/{name}/processes/{id}/attach", s.attachProcess)
	s.handle("DELETE /v1/computers/{name}/processes/{id}", s.killProcess)
	s.handle("GET /v1/computers/{name}/files", s.getFile)
	s.handle("PUT /v1/computers/{name}/files", s.putFile)
	s.handle("GET /v1/computers/{name}/files/stat", s.statFile)
	s.handle("GET /v1/computers/{name}/files/list", s.listFiles)
	s.routePorts()
	s.handle("GET /v1/computers/{name}/watch", s.watch)
	s.routeCheckpoints()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, client.CodeNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// MCPPath is where the daemon serves its MCP tools over HTTP.
const MCPPath = "/mcp"

// MountMCP serves h (the MCP tools, see package mcpserver) at MCPPath, for
// the three methods of MCP's streamable HTTP transport. openapi.json
// documents them, marked as operations the SDKs leave to MCP clients.
func (s *Server) MountMCP(h http.Handler) {
	for _, method := range []string{"POST", "GET", "DELETE"} {
		pattern := method + " " + MCPPath
		s.routes = append(s.routes, pattern)
		s.mux.Handle(pattern, h)
	}
}

func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.routes = append(s.routes, pattern)
	s.mux.HandleFunc(pattern, h)
}

// Routes returns the "METHOD /pattern" of every endpoint.
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

// ServeHTTP serves the API, logging each request and turning a panic into
// a 500 JSON error.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if !rec.wrote {
				writeError(rec, http.StatusInternalServerError, client.CodeInternal, "internal error")
			}
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", status,
			"bytes", rec.bytes, "duration_ms", time.Since(start).Milliseconds())
	}()
	s.mux.ServeHTTP(rec, r)
}

// recorder notes what a handler answered, for the request log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController and the WebSocket upgrade reach the
// connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, client.ErrorAnswer{Error: client.ErrorBody{Code: code, Message: msg}})
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	b := wireError(err)
	if b.Code == client.CodeInternal {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err.Error())
	}
	writeError(w, client.HTTPStatus(b.Code), b.Code, b.Message)
}

func invalid(format string, args ...any) error {
	return apiErrorf(client.CodeInvalid, format, args...)
}

// decode reads a JSON body into v; an empty body leaves v as is. The body
// is bounded in size and in the time the client may take to send it.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	defer rc.SetReadDeadline(time.Time{})
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		if dec.More() {
			return invalid("bad request body: more than one JSON value")
		}
		return nil
	case errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &tooBig):
		return apiErrorf(client.CodeTooLarge, "request body is larger than %d bytes", maxBody)
	}
	return invalid("bad request body: %v", err)
}

// validName checks the {name} of a path before anything is done with it.
func validName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := computer.ValidateName(name); err != nil {
		return "", apiErrorf(client.CodeNotFound, "computer %q does not exist", name)
	}
	return name, nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, client.Health{Status: "ok"})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	recs, err := s.m.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.ComputerList{Computers: make([]client.Computer, 0, len(recs))}
	for _, rec := range recs {
		out.Computers = append(out.Computers, wireRecord(rec))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.m.Info(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wireComputer(c)
	if out.Ports, err = s.wirePorts(r.Context(), name); err != nil || len(out.Ports) == 0 {
		out.Ports = nil // exposed ports are extra: the rest still answers
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.procs.killAll(name)
	if err := s.m.Delete(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.Deleted{Name: name, State: "deleted"})
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, s.m.Start)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, s.m.Stop)
}

func (s *Server) transition(w http.ResponseWriter, r *http.Request, op func(context.Context, string) error) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := op(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	rec, err := s.m.Get(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireRecord(rec))
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
		CPUs: req.CPUs, MemoryMB: req.MemoryMB, Env: req.Env, Network: req.Network,
		AllowHosts: req.AllowHosts, AllowCIDRs: req.AllowCIDRs,
	}
	var err error
	if opts.IdleTimeout, err = idleTimeout(req.IdleTimeoutSeconds); err != nil {
		s.fail(w, r, err)
		return
	}
	if !wantsStream(r) {
		c, err := s.m.Create(r.Context(), opts)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, wireComputer(c))
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
	wc := wireComputer(c)
	em.send(client.Event{Computer: &wc})
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

func (e *emitter) sendError(err error) error {
	b := wireError(err)
	return e.send(client.Event{Error: &b})
}

func (e *emitter) send(ev client.Event) error {
	b, err := json.Marshal(ev)
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

// outputEvent is the event of output p on stream.
func outputEvent(stream string, p []byte) client.Event {
	ev := client.Event{Stream: stream}
	if utf8.Valid(p) {
		ev.Data = string(p)
	} else {
		ev.DataB64 = append([]byte(nil), p...)
	}
	return ev
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
	if err := sw.em.send(outputEvent(sw.stream, p)); err != nil {
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
		if len(lw.buf) < 64<<10 {
			lw.buf = append(lw.buf, c)
		}
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

// maxTimeout bounds a command's timeout (a week); longer is a typo.
const maxTimeout = 7 * 24 * time.Hour

func execOptions(req client.ExecRequest) (computer.ExecOptions, error) {
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxTimeout.Seconds() || req.TimeoutSeconds != req.TimeoutSeconds {
		return computer.ExecOptions{}, invalid("invalid timeout_seconds %v: between 0 (none) and %v", req.TimeoutSeconds, maxTimeout.Seconds())
	}
	if len(req.Command) > maxBody || len(req.Argv) > 4096 {
		return computer.ExecOptions{}, invalid("command too long")
	}
	if strings.ContainsRune(req.Command, 0) || strings.ContainsRune(req.Workdir, 0) {
		return computer.ExecOptions{}, invalid("command and workdir must not contain NUL bytes")
	}
	for _, a := range req.Argv {
		if strings.ContainsRune(a, 0) {
			return computer.ExecOptions{}, invalid("argv must not contain NUL bytes")
		}
	}
	if req.Workdir != "" && !strings.HasPrefix(req.Workdir, "/") {
		return computer.ExecOptions{}, invalid("invalid workdir %q: it must be absolute", req.Workdir)
	}
	return computer.ExecOptions{
		Command: req.Command, Argv: req.Argv, User: req.User, Workdir: req.Workdir,
		Env: req.Env, TTY: req.TTY, Size: sandbox.WindowSize{Rows: req.Rows, Cols: req.Cols},
		Timeout: time.Duration(req.TimeoutSeconds * float64(time.Second)),
	}, nil
}
