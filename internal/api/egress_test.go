package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"ohm/client"
	"ohm/internal/computer"
)

// loopbackDNS is a resolver on the host's loopback answering 192.0.2.1
// (a documentation address, never connected to here) for every name.
func loopbackDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP("192.0.2.1"),
			})
		}
		w.WriteMsg(m)
	})}
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	go srv.ActivateAndServe()
	<-up
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestEgressAPI sets a computer's allow lists through the API, the CLI and
// MCP: create takes them, info shows them, a change reaches the running
// computer's DNS at once, and bad input is one error that changes nothing.
// (internal/sandbox's TestEgress proves the connections.)
func TestEgressAPI(t *testing.T) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Skip("needs slirp4netns")
	}
	resolver := loopbackDNS(t)
	d := startDaemonServer(t, func(o *computer.Options) { o.Resolvers = []string{resolver} })
	c := d.c
	ctx := context.Background()

	comp, err := c.Create(ctx, client.CreateRequest{Name: "fenced", Template: "minimal", DiskSizeMB: 256,
		AllowHosts: []string{"Allowed.TEST"}, AllowCIDRs: []string{"198.51.100.0/24"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !comp.Network || !slices.Equal(comp.AllowHosts, []string{"allowed.test"}) || !slices.Equal(comp.AllowCIDRs, []string{"198.51.100.0/24"}) {
		t.Errorf("created %+v", comp)
	}
	resolves := func(name string) bool {
		var out strings.Builder
		code, err := c.Exec(ctx, "fenced", client.ExecRequest{Command: "nslookup " + name}, &out, &out)
		if err != nil {
			t.Fatal(err)
		}
		return code == 0 && strings.Contains(out.String(), "192.0.2.1")
	}
	if !resolves("allowed.test") || resolves("other.test") {
		t.Errorf("before the change: allowed.test %v, other.test %v", resolves("allowed.test"), resolves("other.test"))
	}

	// Bad input: one clear error, nothing changed.
	for _, req := range []client.SetRequest{
		{AllowHosts: &[]string{"bad host"}},
		{AllowCIDRs: &[]string{"10.0.0.1/40"}},
		{AllowHosts: &[]string{"other.test"}, AllowCIDRs: &[]string{"nope"}},
	} {
		_, err := c.Set(ctx, "fenced", req)
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Code != client.CodeInvalid || !strings.Contains(ae.Message, "invalid allowed") {
			t.Errorf("set %+v: %v, want one invalid error", req, err)
		}
	}
	if got, _ := c.Get(ctx, "fenced"); !slices.Equal(got.AllowHosts, []string{"allowed.test"}) || !slices.Equal(got.AllowCIDRs, []string{"198.51.100.0/24"}) {
		t.Errorf("after bad input: %+v", got)
	}
	if !resolves("allowed.test") || resolves("other.test") {
		t.Error("bad input changed the running computer's policy")
	}

	// The CLI: set, then info --json.
	bin := buildOhm(t)
	out, err := exec.Command(bin, "computer", "set", "fenced", "--data-dir", d.dir, "--allow-host", "other.test", "--allow-cidr", "").CombinedOutput()
	if err != nil {
		t.Fatalf("ohm computer set: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "allowed hosts: other.test") || !strings.Contains(string(out), "allowed cidrs: (none)") {
		t.Errorf("ohm computer set printed:\n%s", out)
	}
	out, err = exec.Command(bin, "computer", "info", "fenced", "--json", "--data-dir", d.dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info client.Computer
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.AllowHosts, []string{"other.test"}) || len(info.AllowCIDRs) != 0 {
		t.Errorf("info --json: %s", out)
	}
	if resolves("allowed.test") || !resolves("other.test") {
		t.Errorf("after the change: allowed.test %v, other.test %v", resolves("allowed.test"), resolves("other.test"))
	}
	out, err = exec.Command(bin, "computer", "set", "fenced", "--data-dir", d.dir, "--allow-host", "*.*.test").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "invalid allowed host") {
		t.Errorf("ohm computer set with a bad pattern: %v: %s", err, out)
	}

	// A computer without a network has nothing to limit.
	if _, err := c.Create(ctx, client.CreateRequest{Name: "offline", Template: "minimal", DiskSizeMB: 256}, nil); err != nil {
		t.Fatal(err)
	}
	var ae *client.Error
	if _, err := c.Set(ctx, "offline", client.SetRequest{AllowHosts: &[]string{"a.test"}}); !errors.As(err, &ae) || ae.Code != client.CodeInvalid {
		t.Errorf("allow list on a computer without network: %v", err)
	}
	if _, err := c.Set(ctx, "nobody", client.SetRequest{AllowHosts: &[]string{}}); !errors.As(err, &ae) || ae.Code != client.CodeNotFound {
		t.Errorf("unknown computer: %v", err)
	}
}
