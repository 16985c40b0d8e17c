package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"ohm/client"
	"ohm/internal/computer"
)

// newTestServer is the API of a manager over an empty data directory: no
// computer can run (no root needed), but everything before a sandbox can.
func newTestServer(t *testing.T) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	m, err := computer.Open(context.Background(), computer.Options{DataDir: dir, Exe: "/bin/false", Logf: t.Logf, Workspace: computer.DirWorkspace{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return NewServer(m, testLogger(t)), dir
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	s, _ := newTestServer(t)
	s.MountMCP(http.NotFoundHandler()) // as Serve always does
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	var documented []string
	for p, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+p)
		}
	}
	routes := s.Routes()
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is missing from openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("openapi.json documents %s, which the server does not serve", d)
		}
	}
}

// errorCode does a request and returns the status and error code of the
// answer, failing unless it is a JSON error object.
func errorCode(t *testing.T, h http.Handler, req *http.Request) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var eb struct {
		Error client.ErrorBody `json:"error"`
	}
	if rec.Code < 400 {
		return rec.Code, ""
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
		t.Errorf("%s %s: answer %d is not a JSON error: %q", req.Method, req.URL, rec.Code, rec.Body.String())
	}
	if strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("%s %s: answer carries a stack trace", req.Method, req.URL)
	}
	return rec.Code, eb.Error.Code
}

func TestBadInput(t *testing.T) {
	s, _ := newTestServer(t)
	huge := `{"template":"` + strings.Repeat("x", 2<<20) + `","disk_size_mb":1}`
	files := "/v1/computers/box/files?path="
	tests := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/computers", huge, 413, "too_large"},
		{"POST", "/v1/computers", `{"disk_size_mb":`, 400, "invalid_argument"},
		{"POST", "/v1/computers", `{"disk_size_mb":1}{}`, 400, "invalid_argument"},
		{"POST", "/v1/computers", `{"bogus":1}`, 400, "invalid_argument"},
		{"POST", "/v1/computers", `{"disk_size_mb":"ten"}`, 400, "invalid_argument"},
		{"POST", "/v1/computers", `{"disk_size_mb":0,"template":"minimal"}`, 400, "invalid_argument"},
		{"POST", "/v1/computers", `{"name":"../etc","disk_size_mb":8,"template":"minimal"}`, 400, "invalid_argument"},
		{"POST", "/v1/computers/box/exec", huge, 413, "too_large"},
		{"POST", "/v1/computers/box/exec", `not json`, 400, "invalid_argument"},
		{"POST", "/v1/computers/box/exec", `{"command":"x","timeout_seconds":-1}`, 400, "invalid_argument"},
		{"POST", "/v1/computers/box/exec", `{"command":"x","workdir":"relative"}`, 400, "invalid_argument"},
		{"POST", "/v1/computers/box/exec", `{"command":"x","tty":true}`, 400, "invalid_argument"},
		{"POST", "/v1/computers/box/exec", `{"command":"x"}`, 404, "not_found"},
		{"GET", "/v1/computers/box/exec", ``, 400, "invalid_argument"},
		{"GET", "/v1/computers/Bad_Name", ``, 404, "not_found"},
		{"GET", "/v1/computers/box", ``, 404, "not_found"},
		{"POST", "/v1/computers/box/start", ``, 404, "not_found"},
		{"DELETE", "/v1/computers/box", ``, 404, "not_found"},
		{"GET", "/v1/computers/box/processes/abc", ``, 404, "not_found"},
		{"GET", files + url.QueryEscape("/home/ohm/../../etc/passwd"), ``, 400, "invalid_argument"},
		{"GET", files + url.QueryEscape("/home/ohm/.."), ``, 400, "invalid_argument"},
		{"PUT", files + url.QueryEscape("../x"), `data`, 400, "invalid_argument"},
		{"GET", files + url.QueryEscape("relative/path"), ``, 400, "invalid_argument"},
		{"GET", files + url.QueryEscape("/a\x00b"), ``, 400, "invalid_argument"},
		{"GET", files + "/" + strings.Repeat("a", 5000), ``, 400, "invalid_argument"},
		{"GET", files + "/x&user=mallory", ``, 400, "invalid_argument"},
		{"GET", files + "/x&archive=zip", ``, 400, "invalid_argument"},
		{"GET", "/v1/computers/box/files", ``, 400, "invalid_argument"},
		{"GET", "/v1/computers/box/files/list?path=/&limit=0", ``, 400, "invalid_argument"},
		{"GET", "/v1/computers/box/files/stat?path=/", ``, 404, "not_found"},
		{"GET", "/v2/nothing", ``, 404, "not_found"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
		status, code := errorCode(t, s, req)
		if status != tt.status || code != tt.code {
			t.Errorf("%s %.80s: %d %s, want %d %s", tt.method, tt.path, status, code, tt.status, tt.code)
		}
	}
	// Nothing was created by any of it.
	if recs, _ := s.m.List(context.Background()); len(recs) != 0 {
		t.Errorf("bad requests left computers: %+v", recs)
	}
}

func TestPanicIsA500(t *testing.T) {
	s, _ := newTestServer(t)
	s.mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	status, code := errorCode(t, s, httptest.NewRequest("GET", "/boom", nil))
	if status != 500 || code != "internal" {
		t.Errorf("panic: %d %s, want 500 internal", status, code)
	}
}

func TestTokenAuth(t *testing.T) {
	s, dir := newTestServer(t)
	tok, err := LoadToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(TokenPath(dir)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token file: %v, mode %v, want 0600", err, st.Mode())
	}
	if again, _ := LoadToken(dir); again != tok {
		t.Fatal("LoadToken made a new token over an existing one")
	}
	ts := httptest.NewServer(&tokenAuth{dataDir: dir, next: s})
	defer ts.Close()
	body := `{"template":"minimal","disk_size_mb":8,"name":"sneaky"}`
	for _, auth := range []string{"", "Bearer", "Bearer " + tok[:len(tok)-1], "Bearer " + tok + "x", "Basic " + tok, "bearer " + tok} {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/computers", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(b), `"unauthenticated"`) {
			t.Errorf("Authorization %q: %d %s, want 401", auth, resp.StatusCode, b)
		}
	}
	if recs, _ := s.m.List(context.Background()); len(recs) != 0 {
		t.Errorf("an unauthenticated request created %+v", recs)
	}
	c, err := client.NewTCP(ts.URL, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(context.Background()); err != nil {
		t.Errorf("right token: %v", err)
	}
	// Rotation takes effect at once.
	newTok, err := RotateToken(dir)
	if err != nil || newTok == tok {
		t.Fatalf("rotate: %v", err)
	}
	if err := c.Health(context.Background()); !isCode(err, "unauthenticated") {
		t.Errorf("old token after rotation: %v, want unauthenticated", err)
	}
	c2, _ := client.NewTCP(ts.URL, newTok, nil)
	if err := c2.Health(context.Background()); err != nil {
		t.Errorf("new token: %v", err)
	}
}

// TestSlowClient checks that a client that never finishes its headers is
// cut off rather than holding a connection forever.
func TestSlowClient(t *testing.T) {
	s, _ := newTestServer(t)
	srv := newHTTPServer(s)
	if srv.ReadHeaderTimeout == 0 || srv.IdleTimeout == 0 || srv.MaxHeaderBytes == 0 {
		t.Fatalf("server limits not set: %+v", srv)
	}
	srv.ReadHeaderTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // never ends
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, _ := io.ReadAll(conn) // returns when the server closes
	if bytes.Contains(b, []byte(`"ok"`)) {
		t.Errorf("incomplete request answered: %q", b)
	}
	// The server still answers others.
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("after a slow client: %v", err)
	}
}

func TestMetricsFormat(t *testing.T) {
	s, _ := newTestServer(t)
	s.metrics.execDone("stream", 30*time.Millisecond, nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`ohm_computers{state="running"} 0`,
		`ohm_exec_total{mode="stream",result="ok"} 1`,
		`ohm_exec_duration_seconds_bucket{mode="stream",le="0.025"} 0`,
		`ohm_exec_duration_seconds_bucket{mode="stream",le="0.05"} 1`,
		`ohm_exec_duration_seconds_bucket{mode="stream",le="+Inf"} 1`,
		`ohm_exec_duration_seconds_count{mode="stream"} 1`,
		"# TYPE ohm_workspace_used_bytes gauge",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
}
