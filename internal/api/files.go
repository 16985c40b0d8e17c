package api

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"

	"ohm/internal/computer"
)

// filePath validates the path query parameter. Paths are resolved inside
// the computer (by commands running there), so they cannot reach the host.
func filePath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" || !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return "", &computer.Error{Code: computer.CodeInvalid, Msg: fmt.Sprintf("invalid path %q: it must be absolute", p)}
	}
	return p, nil
}

func fileUser(r *http.Request) string { return r.URL.Query().Get("user") }

// getFile streams a file out of a computer: GET .../files?path=/abs/path.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	path, err := filePath(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var stderr bytes.Buffer
	out := &lazyWriter{w: w}
	code, err := s.m.Exec(r.Context(), r.PathValue("name"), computer.ExecOptions{
		Argv: []string{"cat", "--", path}, User: fileUser(r),
	}, nil, out, &limitedBuffer{b: &stderr, n: 4096})
	if err != nil {
		if !out.begun {
			s.fail(w, r, err)
		}
		return
	}
	if code != 0 && !out.begun {
		msg := strings.TrimSpace(strings.TrimPrefix(stderr.String(), "cat: "))
		writeError(w, http.StatusNotFound, string(computer.CodeNotFound), fmt.Sprintf("read %s: %s", path, msg))
		return
	}
	if !out.begun {
		out.begin() // an empty file
	}
}

// putFile writes the request body to a file in a computer: PUT
// .../files?path=/abs/path. The file is created or truncated.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	path, err := filePath(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var stderr bytes.Buffer
	code, err := s.m.Exec(r.Context(), r.PathValue("name"), computer.ExecOptions{
		Argv: []string{"sh", "-c", `cat > "$1"`, "sh", path}, User: fileUser(r),
	}, r.Body, &limitedBuffer{b: &stderr, n: 4096}, &limitedBuffer{b: &stderr, n: 4096})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if code != 0 {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "sh: ") {
			msg = msg[i+2:]
		}
		writeError(w, http.StatusBadRequest, string(computer.CodeInvalid), fmt.Sprintf("write %s: %s", path, msg))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"path": path})
}

// lazyWriter sends the 200 header with the first byte of a download.
type lazyWriter struct {
	w     http.ResponseWriter
	begun bool
}

func (lw *lazyWriter) begin() {
	lw.begun = true
	lw.w.Header().Set("Content-Type", "application/octet-stream")
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
