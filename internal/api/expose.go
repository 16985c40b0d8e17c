package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"ohm/client"
	"ohm/internal/computer"
	"ohm/internal/sandbox"
)

// Preview URLs: an exposed port of a computer answers on the daemon's TCP
// listener under its own host name, <port>-<name>.<domain>, rather than
// under a path prefix, because dev servers (Vite, Next.js) load absolute
// paths such as /@vite/client, and because a host of its own gives each
// preview its own browser origin, apart from the API's and from the other
// computers'. docs/preview.md has the whole story.

// DefaultPreviewDomain is the domain of preview hosts: browsers and curl
// resolve every name under localhost to the loopback address.
const DefaultPreviewDomain = "localhost"

// previewCookie carries a private preview's share token after the first
// request that gave it in the URL (previewQuery).
const (
	previewCookie = "ohm_preview"
	previewQuery  = "ohm_token"
)

// maxRelays bounds the connections open at once to one computer's ports:
// each holds a socket in the daemon and two goroutines in the computer's
// init, and a public URL is open to anyone.
const maxRelays = 256

// portActivity is told about traffic to a computer's ports, so that a
// computer whose preview is in use does not count as idle.
type portActivity interface{ Touch(name string) }

// previews serves the preview hosts and makes their URLs.
type previews struct {
	m   *computer.Manager
	log *slog.Logger

	// activity, if set, hears of every request and, at most once a
	// second, of traffic on each open connection.
	activity portActivity

	mu      sync.Mutex
	scheme  string         // http or https; "" until a TCP listener is up
	domain  string         // DefaultPreviewDomain unless configured
	port    string         // the TCP listener's port
	relays  map[string]int // open connections per computer
	proxyTr *http.Transport
}

func newPreviews(m *computer.Manager, log *slog.Logger) *previews {
	p := &previews{m: m, log: log, domain: DefaultPreviewDomain, relays: map[string]int{}, activity: m}
	p.proxyTr = &http.Transport{
		// No Proxy: the target is inside a computer, never behind the
		// host's HTTP proxy.
		DialContext:         p.dial,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
	}
	return p
}

// listening records the TCP listener previews are served on.
func (p *previews) listening(addr net.Addr, domain string, tls bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scheme = "http"
	if tls {
		p.scheme = "https"
	}
	if domain != "" {
		p.domain = strings.ToLower(domain)
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		p.port = strconv.Itoa(ta.Port)
	}
}

// url is the preview URL of port (with its share token unless public), or
// "" without a TCP listener.
func (p *previews) url(port computer.Port) string {
	p.mu.Lock()
	scheme, domain, lport := p.scheme, p.domain, p.port
	p.mu.Unlock()
	if scheme == "" {
		return ""
	}
	host := strconv.Itoa(port.Port) + "-" + port.Computer + "." + domain
	if lport != "" && !(scheme == "http" && lport == "80") && !(scheme == "https" && lport == "443") {
		host = net.JoinHostPort(host, lport)
	}
	u := url.URL{Scheme: scheme, Host: host, Path: "/"}
	if !port.Public {
		u.RawQuery = url.Values{previewQuery: {port.Token}}.Encode()
	}
	return u.String()
}

// validPreviewDomain checks a --preview-domain: a host name, no port.
func validPreviewDomain(d string) error {
	if d == "" {
		return nil
	}
	for _, label := range strings.Split(strings.ToLower(d), ".") {
		if computer.ValidateName(label) != nil {
			return fmt.Errorf("invalid preview domain %q: it must be a host name such as localhost or preview.example.org", d)
		}
	}
	return nil
}

// target parses a preview host, <port>-<name>.<domain>[:port], into the
// computer's name and port.
func (p *previews) target(host string) (name string, port int, ok bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	p.mu.Lock()
	domain := p.domain
	p.mu.Unlock()
	label, ok := strings.CutSuffix(host, "."+domain)
	if !ok || strings.Contains(label, ".") {
		return "", 0, false
	}
	ps, name, ok := strings.Cut(label, "-")
	if !ok || ps == "" || ps[0] == '0' || len(ps) > 5 {
		return "", 0, false
	}
	port, err := strconv.Atoi(ps)
	if err != nil || computer.ValidatePort(port) != nil || computer.ValidateName(name) != nil {
		return "", 0, false
	}
	return name, port, true
}

// wirePort is the wire form of an exposed port.
func (p *previews) wirePort(port computer.Port) client.Port {
	return client.Port{Port: port.Port, Public: port.Public, URL: p.url(port), CreatedAt: port.CreatedAt}
}

// router serves preview hosts itself and hands every other request to
// next (the API behind its token check, whose token auth also checks the
// bearer header of a private preview).
func (p *previews) router(auth *tokenAuth, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, port, ok := p.target(r.Host)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		p.serve(w, r, auth, name, port)
	})
}

func (p *previews) serve(w http.ResponseWriter, r *http.Request, auth *tokenAuth, name string, port int) {
	exposed, err := p.m.ExposedPort(r.Context(), name, port)
	if err != nil {
		if computer.ErrorCode(err) == computer.CodeNotFound {
			previewPage(w, http.StatusNotFound, "No preview here",
				fmt.Sprintf("Port %d of computer %s is not exposed (ohm computer expose %s %d).", port, name, name, port))
			return
		}
		p.log.Error("preview", "computer", name, "port", port, "error", err.Error())
		previewPage(w, http.StatusInternalServerError, "Preview failed", err.Error())
		return
	}
	if !p.authorize(w, r, auth, exposed) {
		return
	}
	// Idle stop: port traffic is activity.
	if p.activity != nil {
		p.activity.Touch(name)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = net.JoinHostPort(name, strconv.Itoa(port))
			pr.Out.Host = pr.In.Host // dev servers check it (Vite's allowedHosts takes *.localhost)
			pr.SetXForwarded()
		},
		Transport: p.proxyTr,
		// Every write goes out at once: server-sent events, streamed
		// pages and hot-reload pings must not wait in a buffer.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.proxyError(w, r, name, port, err)
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	rp.ServeHTTP(w, r)
}

// authorize lets r through to exposed, or answers it: a private preview
// takes the API token as a bearer header, or the share token in the URL
// (answered with a cookie and a redirect to the URL without it) or in
// that cookie. Neither token goes on to the computer: the API token
// would give it the daemon, and the share token is no business of the
// server inside.
func (p *previews) authorize(w http.ResponseWriter, r *http.Request, auth *tokenAuth, exposed computer.Port) bool {
	apiToken := false
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if want := auth.current(); len(want) > 0 && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) == 1 {
			apiToken = true
			r.Header.Del("Authorization")
		}
	}
	share := func(tok string) bool {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(exposed.Token)) == 1
	}
	cookieOK := false
	if c, err := r.Cookie(previewCookie); err == nil {
		cookieOK = share(c.Value)
		dropCookie(r, previewCookie)
	}
	q := r.URL.Query()
	inURL, hasQuery := q[previewQuery]
	if hasQuery {
		q.Del(previewQuery)
		r.URL.RawQuery = q.Encode()
		r.RequestURI = r.URL.RequestURI()
	}
	if exposed.Public || apiToken || cookieOK {
		return true
	}
	if !hasQuery || len(inURL) != 1 || !share(inURL[0]) {
		previewPage(w, http.StatusUnauthorized, "This preview needs a token",
			fmt.Sprintf("Port %d of computer %s is private: open the URL that `ohm computer expose` printed, or send the API token as a bearer header.", exposed.Port, exposed.Computer))
		return false
	}
	http.SetCookie(w, &http.Cookie{
		Name: previewCookie, Value: exposed.Token, Path: "/",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.Header.Get("Upgrade") == "" {
		// The token leaves the address bar (and the page's history and
		// Referer) at once.
		loc := r.URL.RequestURI()
		if strings.HasPrefix(loc, "//") {
			loc = "/" // never a scheme-relative URL to another host
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, loc, http.StatusFound)
		return false
	}
	return true
}

// dropCookie removes the cookie named name from r's Cookie header.
func dropCookie(r *http.Request, name string) {
	var keep []string
	for _, c := range r.Cookies() {
		if c.Name != name {
			keep = append(keep, c.Name+"="+c.Value)
		}
	}
	r.Header.Del("Cookie")
	if len(keep) > 0 {
		r.Header.Set("Cookie", strings.Join(keep, "; "))
	}
}

// proxyError answers a request the computer's port could not serve.
func (p *previews) proxyError(w http.ResponseWriter, r *http.Request, name string, port int, err error) {
	switch {
	case r.Context().Err() != nil:
		return // the client went away
	case errors.Is(err, sandbox.ErrNotListening):
		previewPage(w, http.StatusBadGateway, "Nothing listens here",
			fmt.Sprintf("Nothing listens on port %d inside %s. Start a server there bound to 0.0.0.0 or 127.0.0.1 and reload.", port, name))
	case errors.Is(err, errTooManyRelays):
		previewPage(w, http.StatusServiceUnavailable, "Too many connections", err.Error())
	case computer.ErrorCode(err) == computer.CodeState:
		previewPage(w, http.StatusServiceUnavailable, "Computer not available", err.Error())
	default:
		p.log.Warn("preview", "computer", name, "port", port, "error", err.Error())
		previewPage(w, http.StatusBadGateway, "Preview failed", fmt.Sprintf("Could not reach port %d inside %s: %v", port, name, err))
	}
}

// previewPage answers with a small HTML page, since a browser shows it.
func previewPage(w http.ResponseWriter, status int, title, detail string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n<body style=\"font-family:sans-serif;margin:3em\"><h1>%s</h1>\n<p>%s</p>\n<p><small>ohm: %d %s</small></p></body></html>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(detail), status, http.StatusText(status))
}

var errTooManyRelays = errors.New("too many connections open to this computer's ports")

// dial is the proxy transport's: addr is <name>:<port> (see serve).
func (p *previews) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	name, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.relays[name] >= maxRelays {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w (%d)", errTooManyRelays, maxRelays)
	}
	p.relays[name]++
	p.mu.Unlock()
	c, err := p.m.DialPort(ctx, name, port)
	if err != nil {
		p.release(name)
		return nil, err
	}
	return &relayConn{Conn: c, p: p, name: name}, nil
}

func (p *previews) release(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.relays[name]--; p.relays[name] <= 0 {
		delete(p.relays, name)
	}
}

// relayConn is a connection to a computer's port: it counts against
// maxRelays until closed and tells p.activity of the traffic on it.
type relayConn struct {
	net.Conn
	p    *previews
	name string

	once    sync.Once
	mu      sync.Mutex
	touched time.Time
}

func (c *relayConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.p.activity != nil {
		c.mu.Lock()
		now := time.Now()
		touch := now.Sub(c.touched) >= time.Second
		if touch {
			c.touched = now
		}
		c.mu.Unlock()
		if touch {
			c.p.activity.Touch(c.name)
		}
	}
	return n, err
}

func (c *relayConn) Close() error {
	c.once.Do(func() { c.p.release(c.name) })
	return c.Conn.Close()
}

// The API of exposed ports.

func portOf(r *http.Request) (int, error) {
	s := r.PathValue("port")
	port, err := strconv.Atoi(s)
	if err != nil {
		return 0, invalid("invalid port %q: it must be a number between 1 and 65535", s)
	}
	if err := computer.ValidatePort(port); err != nil {
		return 0, err
	}
	return port, nil
}

func (s *Server) routePorts() {
	s.handle("GET /v1/computers/{name}/ports", s.listPorts)
	s.handle("POST /v1/computers/{name}/ports/{port}", s.exposePort)
	s.handle("DELETE /v1/computers/{name}/ports/{port}", s.unexposePort)
}

func (s *Server) exposePort(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	port, err := portOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req client.ExposeRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.m.Expose(r.Context(), name, port, req.Public)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.previews.wirePort(p))
}

func (s *Server) unexposePort(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	port, err := portOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.m.Unexpose(r.Context(), name, port)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.previews.wirePort(p))
}

func (s *Server) listPorts(w http.ResponseWriter, r *http.Request) {
	name, err := validName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ports, err := s.wirePorts(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.PortList{Ports: ports})
}

// wirePorts lists the exposed ports of computer name, never nil.
func (s *Server) wirePorts(ctx context.Context, name string) ([]client.Port, error) {
	ports, err := s.m.Ports(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]client.Port, 0, len(ports))
	for _, p := range ports {
		out = append(out, s.previews.wirePort(p))
	}
	return out, nil
}
