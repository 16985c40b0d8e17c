package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"ohm/client"
	"ohm/internal/computer"
)

// previewDaemon is a daemon serving previews on a real TCP listener.
type previewDaemon struct {
	daemon
	token string
	addr  string // the listener's host:port
	// hc reaches any preview host at the listener, as a browser resolving
	// *.localhost to loopback does (Go's resolver may not).
	hc *http.Client
}

func startPreviewDaemon(t *testing.T) previewDaemon {
	t.Helper()
	// Idle timeouts as short as the idle tests' (see idleOptions).
	d := startDaemonServer(t, func(o *computer.Options) { o.MinIdleTimeout = 100 * time.Millisecond })
	tok, err := LoadToken(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.api.previews.listening(ln.Addr(), "", false)
	auth := &tokenAuth{dataDir: d.dir, next: d.api}
	srv := newHTTPServer(d.api.previews.router(auth, auth))
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		d.api.previews.proxyTr.CloseIdleConnections()
	})
	addr := ln.Addr().String()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       60 * time.Second,
	}
	return previewDaemon{daemon: d, token: tok, addr: addr, hc: hc}
}

// get fetches u with the given extra headers and returns status and body.
func (d previewDaemon) get(t *testing.T, hc *http.Client, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// waitServing polls u (with the API token) until it answers 200.
func (d previewDaemon) waitServing(t *testing.T, u string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body := d.get(t, d.hc, u, "Authorization", "Bearer "+d.token)
		if resp.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200: %d %s", u, resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond) // polling a server coming up, with a deadline
	}
}

// ohmCLI runs `ohm computer ARGS --data-dir dir` with the binary exe and
// returns its combined output.
func ohmCLI(exe, dir string, args ...string) (string, error) {
	cmd := exec.Command(exe, append(append([]string{"computer"}, args...), "--data-dir", dir)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// buildDevserver builds testdata/devserver, static, to copy into a computer.
func buildDevserver(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "devserver")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/devserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build devserver: %v\n%s", err, out)
	}
	return bin
}

// TestPreview exposes ports of a computer without a network and drives
// them through their preview URLs: tokens, headers, a WebSocket echo, a
// stream, a port where nothing listens, a public port served by busybox
// httpd on 0.0.0.0, unexpose, auto-start, and bad input.
func TestPreview(t *testing.T) {
	d := startPreviewDaemon(t)
	ctx := context.Background()
	c := d.c
	newComputer(t, c, "web")

	// Bad input: one clear error each, nothing changed.
	for _, tt := range []struct {
		name string
		port int
		code string
	}{
		{"nosuch", 3000, "not_found"},
		{"web", 0, "invalid_argument"},
		{"web", 65536, "invalid_argument"},
		{"web", -1, "invalid_argument"},
		{"Bad_Name", 3000, "not_found"},
	} {
		if _, err := c.Expose(ctx, tt.name, tt.port, false); !isCode(err, tt.code) {
			t.Errorf("expose %s %d: %v, want %s", tt.name, tt.port, err, tt.code)
		}
	}
	if _, err := c.Unexpose(ctx, "web", 3000); !isCode(err, "not_found") || !strings.Contains(err.Error(), "not exposed") {
		t.Errorf("unexpose of a port not exposed: %v", err)
	}
	if _, err := c.Ports(ctx, "nosuch"); !isCode(err, "not_found") {
		t.Errorf("ports of an unknown computer: %v", err)
	}
	if ports, err := c.Ports(ctx, "web"); err != nil || len(ports) != 0 {
		t.Fatalf("ports after bad input: %v %v", ports, err)
	}

	// The dev server, on 127.0.0.1 only.
	f, err := os.Open(buildDevserver(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PutFile(ctx, "web", "/home/ohm/devserver", "", f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, code := run(t, c, "web", "chmod +x /home/ohm/devserver"); code != 0 {
		t.Fatalf("chmod: %s", out)
	}
	if _, err := c.StartBackground(ctx, "web", client.ExecRequest{Command: "exec /home/ohm/devserver 127.0.0.1:3000"}); err != nil {
		t.Fatal(err)
	}

	p, err := c.Expose(ctx, "web", 3000, false)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://3000-web.localhost:" + strings.Split(d.addr, ":")[1]
	if !strings.HasPrefix(p.URL, base+"/?ohm_token=") || p.Public || p.Port != 3000 {
		t.Fatalf("expose answered %+v, want a URL under %s with a token", p, base)
	}
	share := strings.TrimPrefix(p.URL, base+"/?ohm_token=")
	d.waitServing(t, base+"/")

	// Again: same token, now public, then private again.
	if p2, err := c.Expose(ctx, "web", 3000, true); err != nil || !p2.Public || strings.Contains(p2.URL, "ohm_token") {
		t.Errorf("expose again as public: %+v %v", p2, err)
	}
	if p3, err := c.Expose(ctx, "web", 3000, false); err != nil || p3.URL != p.URL {
		t.Errorf("expose again as private: %+v %v, want the first URL %s", p3, err, p.URL)
	}

	t.Run("tokens", func(t *testing.T) {
		if resp, body := d.get(t, d.hc, base+"/"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "needs a token") {
			t.Errorf("no token: %d %s", resp.StatusCode, body)
		}
		if resp, _ := d.get(t, d.hc, base+"/?ohm_token=wrong"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("wrong share token: %d", resp.StatusCode)
		}
		if resp, _ := d.get(t, d.hc, base+"/", "Authorization", "Bearer "+share); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("share token as a bearer header: %d", resp.StatusCode)
		}
		if resp, body := d.get(t, d.hc, base+"/", "Authorization", "Bearer "+d.token); resp.StatusCode != http.StatusOK || !strings.Contains(body, "devserver inside") {
			t.Errorf("API token: %d %s", resp.StatusCode, body)
		}
		resp, _ := d.get(t, d.hc, base+"/x/y?a=1&ohm_token="+share)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/x/y?a=1" {
			t.Errorf("share token in the URL: %d to %q, want a redirect to /x/y?a=1", resp.StatusCode, resp.Header.Get("Location"))
		}
		var cookie *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == previewCookie {
				cookie = ck
			}
		}
		if cookie == nil || !cookie.HttpOnly || cookie.Value != share {
			t.Fatalf("no HttpOnly share cookie: %v", resp.Cookies())
		}
		// A browser: the jar keeps the cookie, the redirect is followed.
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Transport: d.hc.Transport, Jar: jar}
		if resp, body := d.get(t, browser, p.URL); resp.StatusCode != http.StatusOK || !strings.Contains(body, "devserver inside") {
			t.Errorf("share URL in a client with cookies: %d %s", resp.StatusCode, body)
		}
		u, _ := url.Parse(base)
		jar.SetCookies(u, []*http.Cookie{{Name: "app", Value: "kept"}})
		_, body := d.get(t, browser, base+"/headers?q=1")
		var seen struct {
			Host   string
			URI    string
			Header http.Header
		}
		if err := json.Unmarshal([]byte(body), &seen); err != nil {
			t.Fatalf("headers: %v: %s", err, body)
		}
		if seen.Host != u.Host || seen.URI != "/headers?q=1" {
			t.Errorf("the server saw host %q uri %q, want %q /headers?q=1", seen.Host, seen.URI, u.Host)
		}
		if ck := seen.Header.Get("Cookie"); ck != "app=kept" {
			t.Errorf("the server saw cookies %q, want only app=kept (never the share token)", ck)
		}
		if seen.Header.Get("X-Forwarded-For") == "" {
			t.Errorf("no X-Forwarded-For: %v", seen.Header)
		}
		_, body = d.get(t, d.hc, base+"/headers", "Authorization", "Bearer "+d.token)
		if strings.Contains(body, d.token) || strings.Contains(body, "Authorization") {
			t.Errorf("the API token reached the computer: %s", body)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		wsURL := "ws" + strings.TrimPrefix(base, "http") + "/ws"
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: d.hc}); err == nil {
			t.Errorf("websocket without a token was let in")
		}
		conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{
			HTTPClient: d.hc,
			HTTPHeader: http.Header{"Cookie": {previewCookie + "=" + share}},
		})
		if err != nil {
			t.Fatalf("websocket through the preview: %v", err)
		}
		defer conn.CloseNow()
		conn.SetReadLimit(1 << 20)
		for _, msg := range []string{"hello", strings.Repeat("x", 100<<10)} {
			if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, b, err := conn.Read(ctx)
			if err != nil || string(b) != "echo: "+msg {
				t.Fatalf("echo of %d bytes: %v, got %d bytes", len(msg), err, len(b))
			}
		}
		conn.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("stream", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/stream", nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		resp, err := d.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		// The first event arrives while the server still holds the
		// response open: nothing buffers it on the way.
		if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
		d.get(t, d.hc, base+"/release", "Authorization", "Bearer "+d.token)
		rest, _ := io.ReadAll(br)
		if !strings.Contains(string(rest), "data: second") {
			t.Errorf("rest of the stream: %q", rest)
		}
	})

	t.Run("browser", func(t *testing.T) {
		shot := screenshot(t, p.URL)
		if len(shot) < 1000 || !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("screenshot is not a PNG of a page: %d bytes", len(shot))
		}
		_, body := d.get(t, d.hc, base+"/seen", "Authorization", "Bearer "+d.token)
		var seen []string
		json.Unmarshal([]byte(body), &seen)
		// The page loaded its script by an absolute path, as dev servers'
		// pages do: host routing keeps that working.
		if !slices.Contains(seen, "GET /") || !slices.Contains(seen, "GET /app.js") {
			t.Errorf("the server did not see the browser's requests: %v", seen)
		}
		t.Logf("screenshot: %d bytes; the server saw %v", len(shot), seen)
	})

	t.Run("nothing listens", func(t *testing.T) {
		if _, err := c.Expose(ctx, "web", 9999, true); err != nil {
			t.Fatal(err)
		}
		resp, body := d.get(t, d.hc, "http://9999-web.localhost/")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "Nothing listens on port 9999 inside web") {
			t.Errorf("port where nothing listens: %d %s", resp.StatusCode, body)
		}
		if resp, body := d.get(t, d.hc, "http://4000-web.localhost/"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "not exposed") {
			t.Errorf("port not exposed: %d %s", resp.StatusCode, body)
		}
		if resp, _ := d.get(t, d.hc, "http://4000-nosuch.localhost/"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown computer: %d", resp.StatusCode)
		}
	})

	t.Run("public busybox httpd", func(t *testing.T) {
		run(t, c, "web", "mkdir -p /home/ohm/www && echo '<h1>busybox here</h1>' > /home/ohm/www/index.html")
		if _, err := c.StartBackground(ctx, "web", client.ExecRequest{Command: "exec httpd -f -p 8080 -h /home/ohm/www"}); err != nil {
			t.Fatal(err)
		}
		pub, err := c.Expose(ctx, "web", 8080, true)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(pub.URL, "ohm_token") {
			t.Errorf("public URL has a token: %s", pub.URL)
		}
		d.waitServing(t, pub.URL)
		if resp, body := d.get(t, d.hc, pub.URL); resp.StatusCode != http.StatusOK || !strings.Contains(body, "busybox here") {
			t.Errorf("public port without a token: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("cli", func(t *testing.T) {
		exe := buildOhm(t)
		ohm := func(args ...string) (string, error) { return ohmCLI(exe, d.dir, args...) }
		out, err := ohm("expose", "web", "4000", "--json")
		var exp client.Port
		if err != nil || json.Unmarshal([]byte(out), &exp) != nil {
			t.Fatalf("expose --json: %v\n%s", err, out)
		}
		if base4 := "http://4000-web.localhost:" + strings.Split(d.addr, ":")[1] + "/?ohm_token="; exp.Port != 4000 || exp.Public || !strings.HasPrefix(exp.URL, base4) || len(exp.URL) == len(base4) {
			t.Errorf("expose --json: %+v, want port 4000 at a URL under %s with a token", exp, base4)
		}
		before, _ := c.Ports(ctx, "web")
		out, err = ohm("expose", "web", "70000")
		if err == nil || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, `invalid port "70000": it must be a number between 1 and 65535`) {
			t.Errorf("expose of port 70000: %v, want one line saying the range:\n%s", err, out)
		}
		if after, _ := c.Ports(ctx, "web"); !reflect.DeepEqual(after, before) {
			t.Errorf("a bad expose changed the ports from %+v to %+v", before, after)
		}
		if out, err := ohm("info", "web"); err != nil || !strings.Contains(out, "port 4000: "+exp.URL+" (token)\n") || !strings.Contains(out, "port 8080: ") {
			t.Errorf("info lacks the port lines: %v\n%s", err, out)
		}
		out, err = ohm("unexpose", "web", "4000", "--json")
		var unexp client.Port
		if err != nil || json.Unmarshal([]byte(out), &unexp) != nil || unexp.Port != 4000 || unexp.Public {
			t.Errorf("unexpose --json: %v %+v\n%s", err, unexp, out)
		}
		if out, err := ohm("unexpose", "web", "4000"); err == nil || !strings.Contains(out, "not exposed") {
			t.Errorf("unexpose of a port no longer exposed: %v\n%s", err, out)
		}
		if out, err := ohm("info", "web"); err != nil || strings.Contains(out, "port 4000:") {
			t.Errorf("info after unexpose: %v\n%s", err, out)
		}
	})

	t.Run("info and unexpose", func(t *testing.T) {
		comp, err := c.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range comp.Ports {
			got = append(got, fmt.Sprintf("%d:%v", p.Port, p.Public))
		}
		if want := []string{"3000:false", "8080:true", "9999:true"}; !slices.Equal(got, want) {
			t.Errorf("info lists ports %v, want %v", got, want)
		}
		if _, err := c.Unexpose(ctx, "web", 3000); err != nil {
			t.Fatal(err)
		}
		if resp, _ := d.get(t, d.hc, base+"/", "Authorization", "Bearer "+d.token); resp.StatusCode != http.StatusNotFound {
			t.Errorf("unexposed port still answers: %d", resp.StatusCode)
		}
		if ports, _ := c.Ports(ctx, "web"); len(ports) != 2 {
			t.Errorf("ports after unexpose: %+v", ports)
		}
	})

	t.Run("starts a stopped computer", func(t *testing.T) {
		if err := c.Stop(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		// The request waits for the start; httpd did not come back with it.
		resp, body := d.get(t, d.hc, "http://8080-web.localhost/")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "Nothing listens on port 8080") {
			t.Errorf("request to a stopped computer: %d %s", resp.StatusCode, body)
		}
		if comp, err := c.Get(ctx, "web"); err != nil || comp.State != "running" || len(comp.Ports) != 2 {
			t.Errorf("after a preview request: %+v %v", comp, err)
		}
	})

	// Traffic through a preview URL is activity: a computer whose port is
	// used for many idle timeouts stays up, and stops once the use ends.
	// The dev server answers with keep-alive, so the proxy reuses one
	// connection: the requests (previews.serve) and the bytes read from
	// the computer (relayConn.Read) are the activity, not new dials. Then
	// one WebSocket, dialled once, carries only relayed bytes.
	t.Run("port traffic keeps it awake", func(t *testing.T) {
		// A stop ends the background processes, which would hold the
		// computer busy; the dev server is started detached instead, so
		// that the exec starting it ends.
		if err := c.Stop(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		if out, code := run(t, c, "web", "setsid /home/ohm/devserver 127.0.0.1:3000 </dev/null >/dev/null 2>&1 &"); code != 0 {
			t.Fatalf("devserver: %d %s", code, out)
		}
		p, err := c.Expose(ctx, "web", 3000, false)
		if err != nil {
			t.Fatal(err)
		}
		base := "http://3000-web.localhost:" + strings.Split(d.addr, ":")[1]
		share := strings.TrimPrefix(p.URL, base+"/?ohm_token=")
		d.waitServing(t, base+"/")
		if comp, err := c.Set(ctx, "web", client.SetRequest{IdleTimeoutSeconds: client.Seconds(testIdleTimeout)}); err != nil || comp.IdleTimeoutSeconds != testIdleTimeout.Seconds() {
			t.Fatalf("set the idle timeout: %+v %v", comp, err)
		}
		awake := func(what string) {
			t.Helper()
			if comp := getComputer(t, c, "web"); comp.State != "running" || comp.ActiveSessions != 0 {
				t.Fatalf("%s: %s (%s), %d sessions; want running with no session holding it", what, comp.State, comp.StopReason, comp.ActiveSessions)
			}
		}
		pace := testIdleTimeout / 10 // well inside the timeout
		polls := 0
		for end := time.Now().Add(4 * testIdleTimeout); time.Now().Before(end); polls++ {
			if resp, body := d.get(t, d.hc, base+"/", "Authorization", "Bearer "+d.token); resp.StatusCode != http.StatusOK || !strings.Contains(body, "devserver inside") {
				t.Fatalf("poll %d: %d %s", polls, resp.StatusCode, body)
			}
			awake(fmt.Sprintf("while its port was polled (poll %d)", polls))
			time.Sleep(pace)
		}

		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		conn, _, err := websocket.Dial(wctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{
			HTTPClient: d.hc,
			HTTPHeader: http.Header{"Cookie": {previewCookie + "=" + share}},
		})
		if err != nil {
			t.Fatalf("websocket: %v", err)
		}
		defer conn.CloseNow()
		echoes := 0
		for end := time.Now().Add(4 * testIdleTimeout); time.Now().Before(end); echoes++ {
			if err := conn.Write(wctx, websocket.MessageText, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, b, err := conn.Read(wctx); err != nil || string(b) != "echo: ping" {
				t.Fatalf("echo %d: %q %v", echoes, b, err)
			}
			awake(fmt.Sprintf("while a WebSocket to its port was used (echo %d)", echoes))
			time.Sleep(pace)
		}
		conn.Close(websocket.StatusNormalClosure, "")
		t.Logf("%d polls, then %d echoes on one WebSocket, each over %v, kept it running", polls, echoes, 4*testIdleTimeout)

		poll(t, "the computer to stop once its port is no longer used", func() bool { return getComputer(t, c, "web").State == "stopped" })
		if comp := getComputer(t, c, "web"); !strings.Contains(comp.StopReason, "idle") {
			t.Errorf("stopped with reason %q, want an idle stop", comp.StopReason)
		}
	})
}

// screenshot loads u in headless Chromium and returns the PNG it took.
func screenshot(t *testing.T, u string) []byte {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("needs headless Chromium (Debian package chromium; `make deps` installs it)")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=800,600",
		"--virtual-time-budget=5000", "--screenshot="+out, u)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("chromium took no screenshot: %v", err)
	}
	return b
}
