package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Gate is what the proxy needs of the policy in force (a *Firewall): it
// asks before forwarding a query and, before answering, has the addresses
// of the answer let through.
type Gate interface {
	AllowsName(name string) bool
	Allow(name string, addrs []netip.Addr, ttl time.Duration) error
}

// Proxy is a DNS server for one computer: it answers queries for names
// the gate allows by forwarding them to the upstream resolvers, lets the
// answered addresses through the gate first (so that a connection made
// right after the answer passes), and answers NXDOMAIN for other names.
type Proxy struct {
	gate      Gate
	upstreams []string
	sem       chan struct{}

	mu      sync.Mutex
	servers []*dns.Server
	done    sync.WaitGroup
}

// maxInFlight bounds the queries a computer has forwarded at once; past
// it the proxy answers SERVFAIL at once rather than queue.
const maxInFlight = 64

// upstreamTimeout bounds one exchange with an upstream resolver.
const upstreamTimeout = 4 * time.Second

// NewProxy returns a proxy forwarding to upstreams ("host:port"), in
// order until one answers.
func NewProxy(gate Gate, upstreams []string) *Proxy {
	return &Proxy{gate: gate, upstreams: upstreams, sem: make(chan struct{}, maxInFlight)}
}

// Serve answers queries on pc (UDP) and l (TCP) until Close; either may be
// nil. It returns once both serve.
func (p *Proxy) Serve(pc net.PacketConn, l net.Listener) error {
	var started []chan struct{}
	p.mu.Lock()
	for _, srv := range []*dns.Server{{PacketConn: pc}, {Listener: l}} {
		if srv.PacketConn == nil && srv.Listener == nil {
			continue
		}
		srv.Handler = p
		srv.UDPSize = dns.DefaultMsgSize
		up := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(up) }
		started = append(started, up)
		p.servers = append(p.servers, srv)
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			srv.ActivateAndServe()
		}()
	}
	p.mu.Unlock()
	for _, up := range started {
		select {
		case <-up:
		case <-time.After(5 * time.Second):
			return errors.New("dns proxy did not start")
		}
	}
	return nil
}

// Close stops serving and closes the sockets Serve was given.
func (p *Proxy) Close() error {
	p.mu.Lock()
	servers := p.servers
	p.servers = nil
	p.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
	p.done.Wait()
	return nil
}

// ServeDNS answers one query.
// A TCP connection stays open for the client's next query (glibc sends A
// and AAAA on one).
func (p *Proxy) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	reply := func(code int) {
		m := new(dns.Msg)
		m.SetRcode(r, code)
		m.RecursionAvailable = true
		w.WriteMsg(m)
	}
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		reply(dns.RcodeNotImplemented)
		return
	}
	name := r.Question[0].Name
	if !p.gate.AllowsName(name) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		m.RecursionAvailable = true
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(opt.UDPSize(), false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{
				InfoCode: dns.ExtendedErrorCodeProhibited, ExtraText: "not in this computer's allowed hosts",
			})
		}
		w.WriteMsg(m)
		return
	}
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	default:
		reply(dns.RcodeServerFailure)
		return
	}
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	resp, err := p.forward(r, network)
	if err != nil {
		reply(dns.RcodeServerFailure)
		return
	}
	addrs, ttl := answerAddrs(resp)
	if len(addrs) > 0 {
		if err := p.gate.Allow(name, addrs, ttl); err != nil {
			reply(dns.RcodeServerFailure)
			return
		}
	}
	resp.Id = r.Id
	w.WriteMsg(resp)
}

// forward asks the upstreams in turn over network ("udp" or "tcp", as
// the computer asked: a truncated UDP answer goes back as is and the
// computer asks again over TCP).
func (p *Proxy) forward(r *dns.Msg, network string) (*dns.Msg, error) {
	if len(p.upstreams) == 0 {
		return nil, errors.New("no upstream resolver")
	}
	c := &dns.Client{Net: network, Timeout: upstreamTimeout, UDPSize: dns.DefaultMsgSize}
	var errs []error
	for _, up := range p.upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), upstreamTimeout)
		resp, _, err := c.ExchangeContext(ctx, r, up)
		cancel()
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// answerAddrs are the addresses an answer gives (A and AAAA records,
// those at the end of a CNAME chain included, and the address hints of
// SVCB and HTTPS records, which browsers connect to), and the shortest
// TTL among them.
func answerAddrs(m *dns.Msg) ([]netip.Addr, time.Duration) {
	var addrs []netip.Addr
	var ttl uint32
	first := true
	add := func(ip net.IP, t uint32) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		addrs = append(addrs, a.Unmap())
		if first || t < ttl {
			ttl, first = t, false
		}
	}
	hints := func(kv []dns.SVCBKeyValue, t uint32) {
		for _, v := range kv {
			switch h := v.(type) {
			case *dns.SVCBIPv4Hint:
				for _, ip := range h.Hint {
					add(ip, t)
				}
			case *dns.SVCBIPv6Hint:
				for _, ip := range h.Hint {
					add(ip, t)
				}
			}
		}
	}
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			add(v.A, v.Hdr.Ttl)
		case *dns.AAAA:
			add(v.AAAA, v.Hdr.Ttl)
		case *dns.SVCB:
			hints(v.Value, v.Hdr.Ttl)
		case *dns.HTTPS:
			hints(v.Value, v.Hdr.Ttl)
		}
	}
	return addrs, time.Duration(ttl) * time.Second
}

// HostResolvers are the nameservers of the host's /etc/resolv.conf as
// "host:port", loopback ones included (the proxy runs on the host).
func HostResolvers() ([]string, error) {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("host resolvers: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	if len(out) == 0 {
		return nil, errors.New("host resolvers: /etc/resolv.conf names no nameserver")
	}
	return out, sc.Err()
}
