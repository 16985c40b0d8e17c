package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"ohm/client"
	"ohm/internal/computer"
)

// helperBinary is the ohm binary inside every computer (the sandbox
// bind-mounts it there as the agent). File operations run it as
// `/.ohm/ohm files OP PATH` (package fileops), so that all file I/O
// happens inside the computer, as the requesting user: paths and symlinks
// resolve in the computer's own filesystem and cannot reach the host.
const helperBinary = "/.ohm/ohm"

// maxPath bounds the path parameter (Linux's PATH_MAX).
const maxPath = 4096

// Bounds on listings: entries per answer and bytes of the answer.
const (
	defaultListLimit = 10000
	maxListLimit     = 100000
	maxListBytes     = 64 << 20
)

// filePath validates the path query parameter: absolute, no "..", no NUL.
func filePath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	switch {
	case p == "" || !strings.HasPrefix(p, "/"):
		return "", invalid("invalid path %q: it must be absolute", p)
	case len(p) > maxPath:
		return "", invalid("invalid path: longer than %d bytes", maxPath)
	case strings.ContainsRune(p, 0):
		return "", invalid("invalid path: it contains a NUL byte")
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", invalid("invalid path %q: it must not contain ..", p)
		}
	}
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
		for strings.Contains(p, "//") {
			p = strings.ReplaceAll(p, "//", "/")
		}
	}
	return p, nil
}

// fileUser validates the user query parameter.
func fileUser(r *http.Request) (string, error) {
	switch u := r.URL.Query().Get("user"); u {
	case "", "ohm", "root":
		return u, nil
	default:
		return "", invalid("invalid user %q: use ohm or root", u)
	}
}

func wantsTar(r *http.Request) (bool, error) {
	switch a := r.URL.Query().Get("archive"); a {
	case "":
		return false, nil
	case "tar":
		return true, nil
	default:
		return false, invalid("invalid archive %q: the only archive format is tar", a)
	}
}

// fileRequest is what every files endpoint starts with.
type fileRequest struct {
	name, path, user string
	tar              bool
}

func (s *Server) fileRequest(w http.ResponseWriter, r *http.Request) (fileRequest, bool) {
	var fr fileRequest
	var err error
	if fr.name, err = validName(r); err == nil {
		if fr.path, err = filePath(r); err == nil {
			if fr.user, err = fileUser(r); err == nil {
				fr.tar, err = wantsTar(r)
			}
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return fr, false
	}
	return fr, true
}

// helper runs `ohm files args...` in the computer; its failure comes back
// as the error it reported.
func (s *Server) helper(ctx context.Context, fr fileRequest, stdin io.Reader, stdout io.Writer, args ...string) error {
	var stderr bytes.Buffer
	argv := append([]string{helperBinary, "files"}, args...)
	code, err := s.m.Exec(ctx, fr.name, computer.ExecOptions{Argv: argv, User: fr.user, Workdir: "/"},
		stdin, stdout, &limitedBuffer{b: &stderr, n: 4096})
	if err != nil {
		return err
	}
	if code == 0 {
		return nil
	}
	var fe client.ErrorBody
	// The helper's answer comes from inside the computer: only a code the
	// wire knows is taken as it is.
	if json.Unmarshal(stderr.Bytes(), &fe) == nil && fe.Code != "" && slices.Contains(client.Codes(), fe.Code) {
		return &apiError{code: fe.Code, msg: fe.Message}
	}
	return fmt.Errorf("file operation %s in %s: exit status %d: %s", args[0], fr.name, code, strings.TrimSpace(stderr.String()))
}

// getFile streams a file (or, with archive=tar, a directory's contents as
// tar) out of a computer.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	fr, ok := s.fileRequest(w, r)
	if !ok {
		return
	}
	if fr.tar {
		w.Header().Set("Trailer", "Ohm-Error")
		out := &lazyWriter{w: w, contentType: "application/x-tar"}
		err := s.helper(r.Context(), fr, nil, out, "tar", fr.path)
		if err != nil && !out.begun {
			s.fail(w, r, err)
			return
		}
		if err != nil {
			w.Header().Set("Ohm-Error", err.Error())
			return
		}
		if !out.begun {
			out.begin()
		}
		return
	}
	// Stat first: a missing file or a directory is a plain error answer,
	// and a file's size becomes the Content-Length.
	var st bytes.Buffer
	if err := s.helper(r.Context(), fr, nil, &limitedBuffer{b: &st, n: 64 << 10}, "stat", fr.path); err != nil {
		s.fail(w, r, err)
		return
	}
	var fi client.FileInfo
	if err := json.Unmarshal(st.Bytes(), &fi); err != nil {
		s.fail(w, r, fmt.Errorf("stat %s: %w", fr.path, err))
		return
	}
	if fi.Type == "dir" {
		s.fail(w, r, invalid("read %s: is a directory (use archive=tar)", fr.path))
		return
	}
	out := &lazyWriter{w: w, contentType: "application/octet-stream"}
	if fi.Type == "file" {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	}
	err := s.helper(r.Context(), fr, nil, out, "cat", fr.path)
	if err != nil && !out.begun {
		w.Header().Del("Content-Length")
		s.fail(w, r, err)
		return
	}
	if err != nil {
		// The client sees a short body: the connection is cut.
		s.log.Warn("download failed midway", "computer", fr.name, "path", fr.path, "error", err.Error())
		panic(http.ErrAbortHandler)
	}
	if !out.begun {
		out.begin()
	}
}

// putFile writes the request body to a file in a computer (created or
// replaced once complete), or with archive=tar extracts it into a
// directory. The body is streamed: its size is not limited.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	fr, ok := s.fileRequest(w, r)
	if !ok {
		return
	}
	body := &countingReader{r: r.Body}
	var err error
	if fr.tar {
		err = s.helper(r.Context(), fr, body, io.Discard, "untar", fr.path)
	} else {
		err = s.helper(r.Context(), fr, body, io.Discard, "write", "--size", strconv.FormatInt(r.ContentLength, 10), fr.path)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.FileWritten{Path: fr.path, Bytes: body.n})
}

func (s *Server) statFile(w http.ResponseWriter, r *http.Request) {
	fr, ok := s.fileRequest(w, r)
	if !ok {
		return
	}
	var out bytes.Buffer
	if err := s.helper(r.Context(), fr, nil, &limitedBuffer{b: &out, n: 64 << 10}, "stat", fr.path); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out.Bytes())
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	fr, ok := s.fileRequest(w, r)
	if !ok {
		return
	}
	limit := defaultListLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			s.fail(w, r, invalid("invalid limit %q: between 1 and %d", v, maxListLimit))
			return
		}
		limit = n
	}
	var out bytes.Buffer
	if err := s.helper(r.Context(), fr, nil, &limitedBuffer{b: &out, n: maxListBytes}, "list", "--limit", strconv.Itoa(limit), fr.path); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out.Bytes())
}

// lazyWriter sends the 200 header with the first byte of a download.
type lazyWriter struct {
	w           http.ResponseWriter
	contentType string
	begun       bool
}

func (lw *lazyWriter) begin() {
	lw.begun = true
	lw.w.Header().Set("Content-Type", lw.contentType)
	lw.w.WriteHeader(http.StatusOK)
}

func (lw *lazyWriter) Write(p []byte) (int, error) {
	if !lw.begun {
		lw.begin()
	}
	return lw.w.Write(p)
}

// limitedBuffer keeps the first n bytes written to it and drops the rest.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (lb *limitedBuffer) Write(p []byte) (int, error) {
	if room := lb.n - lb.b.Len(); room > 0 {
		lb.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
