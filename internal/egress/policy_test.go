package egress

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		hosts, cidrs       []string
		wantHosts, wantNet []string
		err                string
	}{
		{hosts: []string{"PyPI.org.", "pypi.org", "*.Example.ORG", "_srv.x-y.io"},
			wantHosts: []string{"pypi.org", "*.example.org", "_srv.x-y.io"}},
		{cidrs: []string{"198.51.100.0/24", "2001:db8::/32", "192.0.2.7", "2001:db8::1"},
			wantNet: []string{"198.51.100.0/24", "2001:db8::/32", "192.0.2.7/32", "2001:db8::1/128"}},
		{hosts: []string{""}, err: "empty"},
		{hosts: []string{"*"}, err: "invalid allowed host"},
		{hosts: []string{"*."}, err: "wildcard needs a domain"},
		{hosts: []string{"a.*.org"}, err: "'*' only as the whole first label"},
		{hosts: []string{"*foo.org"}, err: "'*' only"},
		{hosts: []string{"exa mple.org"}, err: "not allowed in a host name"},
		{hosts: []string{"a..org"}, err: "empty label"},
		{hosts: []string{"-a.org"}, err: "starts or ends with '-'"},
		{hosts: []string{strings.Repeat("a", 64) + ".org"}, err: "longer than 63"},
		{hosts: []string{"10.0.0.1"}, err: "--allow-cidr"},
		{hosts: []string{"[::1]"}, err: "--allow-cidr"},
		{cidrs: []string{"10.0.0.0/33"}, err: "invalid allowed CIDR"},
		{cidrs: []string{"example.org"}, err: "invalid allowed CIDR"},
		{cidrs: []string{"10.1.2.3/8"}, err: "did you mean 10.0.0.0/8"},
		{cidrs: []string{"::ffff:10.0.0.0/104"}, err: "IPv4-mapped"},
		{hosts: make([]string, MaxHosts+1), err: "too many allowed hosts"},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.hosts, tt.cidrs)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q %q: error %v, want one saying %q", tt.hosts, tt.cidrs, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %q: %v", tt.hosts, tt.cidrs, err)
			continue
		}
		if !slices.Equal(p.Hosts, tt.wantHosts) || !slices.Equal(p.CIDRs, tt.wantNet) {
			t.Errorf("%q %q: got %+v", tt.hosts, tt.cidrs, p)
		}
	}
}

func TestAllowsName(t *testing.T) {
	p, err := ParsePolicy([]string{"pypi.org", "*.example.org"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"pypi.org": true, "PYPI.ORG.": true, "www.pypi.org": false, "pypi.org.evil": false,
		"a.example.org": true, "a.b.example.org.": true, "example.org": false, "badexample.org": false,
	} {
		if got := p.AllowsName(name); got != want {
			t.Errorf("AllowsName(%q) = %v, want %v", name, got, want)
		}
	}
	if !(Policy{}).AllowsName("anything.test") {
		t.Error("an empty policy refuses a name")
	}
}

// gate is a Gate over a policy, recording what it let through.
type gate struct {
	p       Policy
	mu      sync.Mutex
	allowed map[string][]netip.Addr
}

func (g *gate) AllowsName(n string) bool { return g.p.AllowsName(n) }
func (g *gate) Allow(n string, a []netip.Addr, ttl time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.allowed[normalizeName(n)] = append(g.allowed[normalizeName(n)], a...)
	return nil
}

// TestProxy asks the proxy, over UDP and TCP, in front of a resolver on
// the loopback: allowed names are answered with what the resolver says
// (addresses let through first, CNAME targets' included), others get
// NXDOMAIN without reaching it.
func TestProxy(t *testing.T) {
	var asked sync.Map
	upstream := func(network string) string {
		h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			q := r.Question[0]
			asked.Store(normalizeName(q.Name), true)
			m := new(dns.Msg)
			m.SetReply(r)
			hdr := func(typ uint16) dns.RR_Header {
				return dns.RR_Header{Name: q.Name, Rrtype: typ, Class: dns.ClassINET, Ttl: 60}
			}
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: "cdn.elsewhere.test."})
			a := &dns.A{Hdr: hdr(dns.TypeA), A: net.ParseIP("198.51.100.9")}
			a.Hdr.Name = "cdn.elsewhere.test."
			m.Answer = append(m.Answer, a)
			w.WriteMsg(m)
		})
		srv := &dns.Server{Net: network, Addr: "127.0.0.1:0", Handler: h}
		up := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(up) }
		go srv.ListenAndServe()
		<-up
		t.Cleanup(func() { srv.Shutdown() })
		if network == "tcp" {
			return srv.Listener.Addr().String()
		}
		return srv.PacketConn.LocalAddr().String()
	}
	pol, _ := ParsePolicy([]string{"*.allowed.test"}, nil)
	g := &gate{p: pol, allowed: map[string][]netip.Addr{}}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			p := NewProxy(g, []string{upstream(network)})
			var pc net.PacketConn
			var ln net.Listener
			var addr string
			var err error
			if network == "udp" {
				pc, err = net.ListenPacket("udp", "127.0.0.1:0")
				addr = pc.LocalAddr().String()
			} else {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
				addr = ln.Addr().String()
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Serve(pc, ln); err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c := &dns.Client{Net: network, Timeout: 5 * time.Second}
			q := new(dns.Msg)
			q.SetQuestion("www.allowed.test.", dns.TypeA)
			r, _, err := c.Exchange(q, addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
				t.Errorf("allowed: %v", r)
			}
			if got := g.allowed["www.allowed.test"]; len(got) == 0 || got[0] != netip.MustParseAddr("198.51.100.9") {
				t.Errorf("let through %v", got)
			}
			q.SetQuestion("evil.test.", dns.TypeA)
			q.SetEdns0(1232, false)
			r, _, err = c.Exchange(q, addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
				t.Errorf("refused name: %v", r)
			}
			if _, ok := asked.Load("evil.test"); ok {
				t.Error("a refused name reached the upstream")
			}
			if network == "tcp" {
				// Two queries on one connection, as glibc asks A and AAAA.
				conn, err := c.Dial(addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				for i := 0; i < 2; i++ {
					q.SetQuestion("www.allowed.test.", dns.TypeA)
					if r, _, err := c.ExchangeWithConn(q, conn); err != nil || r.Rcode != dns.RcodeSuccess {
						t.Errorf("query %d on one connection: %v %v", i, r, err)
					}
				}
			}
		})
	}
}
