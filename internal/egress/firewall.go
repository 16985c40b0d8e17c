package egress

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) a Firewall owns in its
// namespace.
const TableName = "ohm_egress"

// Bounds on how long an address a DNS answer let through stays allowed:
// at least minLearned, so that a client that caches an answer a little
// longer than its TTL still connects, and at most maxLearned.
const (
	minLearned = 10 * time.Minute
	maxLearned = 24 * time.Hour
	// maxLearnedAddrs bounds the addresses a computer's lookups can add.
	maxLearnedAddrs = 8192
)

// Config says where a Firewall works and what of the namespace's network
// it must know.
type Config struct {
	// NetNS is an open descriptor of the network namespace (the caller
	// keeps it open while the Firewall is used).
	NetNS int
	// Resolver is the DNS server the computer is configured with (its
	// resolv.conf): with an active policy, DNS sent there (UDP and TCP
	// port 53) goes to Proxy instead.
	Resolver netip.Addr
	// Proxy is where the DNS proxy listens in the namespace (a loopback
	// address).
	Proxy netip.AddrPort
	// Refused are ranges that lead to the host whatever the policy (the
	// user-mode network's own range, whose gateway is the host); they are
	// refused like the host's own addresses (but DNS to Resolver without
	// an active policy, which the user-mode network forwards).
	Refused []netip.Prefix
}

// Firewall enforces a Policy with an nftables table in a network
// namespace. The namespace's processes must lack CAP_NET_ADMIN there (so
// cannot change the table) and CAP_NET_RAW (so cannot send frames past it
// with packet sockets): see docs/egress.md.
type Firewall struct {
	cfg Config

	mu      sync.Mutex
	policy  Policy
	host    []netip.Addr // the host's own addresses, always refused
	learned map[netip.Addr]*learnedAddr
}

// adoptedName stands for the names of addresses learned by an earlier
// process (Adopt), which the kernel's sets do not keep: they stay allowed
// under the policy they were learned under only.
const adoptedName = ""

// learnedAddr is an address a DNS answer for allowed names let through.
type learnedAddr struct {
	names map[string]bool
	until time.Time
}

// NewFirewall returns a firewall for cfg's namespace; Apply installs it.
func NewFirewall(cfg Config) *Firewall {
	return &Firewall{cfg: cfg, learned: map[netip.Addr]*learnedAddr{}}
}

// Policy is the policy in force.
func (f *Firewall) Policy() Policy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy
}

// AllowsName reports whether the policy in force lets name be resolved.
func (f *Firewall) AllowsName(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy.AllowsName(name)
}

// Adopt takes over the table an earlier process (the daemon before a
// restart) installed for p: the addresses it had learned from DNS stay
// allowed, for what is left of their time, as long as the policy stays p.
// Call it before the first Apply; a namespace without the table adopts
// nothing.
func (f *Firewall) Adopt(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := table()
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet); err != nil {
		return nil // none to adopt
	}
	now := time.Now()
	for _, v6 := range []bool{false, true} {
		elems, err := c.GetSetElements(dnsSet(t, v6))
		if err != nil {
			continue // an older table without the set
		}
		for _, e := range elems {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok || e.Expires <= 0 {
				continue
			}
			f.learned[a.Unmap()] = &learnedAddr{names: map[string]bool{adoptedName: true}, until: now.Add(e.Expires)}
		}
	}
	f.policy = p
	return nil
}

// Apply replaces the namespace's table with one enforcing p, refusing
// host (the host's own addresses) whatever p says, in one transaction:
// there is no moment without rules. Connections opened under another
// policy are checked again against p at their next packet; addresses
// learned from DNS stay allowed if a name they answered is still allowed.
func (f *Firewall) Apply(p Policy, host []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	same := generation(p) == generation(f.policy)
	kept := map[netip.Addr]*learnedAddr{}
	for a, l := range f.learned {
		if l.until.Before(now) {
			continue
		}
		names := map[string]bool{}
		for n := range l.names {
			if n == adoptedName && same || n != adoptedName && p.AllowsName(n) {
				names[n] = true
			}
		}
		if len(names) > 0 && p.Active() {
			kept[a] = &learnedAddr{names: names, until: l.until}
		}
	}
	if err := f.install(p, host, generation(p), kept, now); err != nil {
		return fmt.Errorf("egress rules: %w", err)
	}
	f.policy, f.host, f.learned = p, slices.Clone(host), kept
	return nil
}

// generation is the conntrack mark of connections allowed under p: a hash
// of p, so that the same policy installed again (a daemon restart, a
// change that changes nothing) keeps its open connections without
// checking them again, and any other policy checks them. Never 0, the
// mark of connections no rule marked.
func generation(p Policy) uint32 {
	h := fnv.New32a()
	for _, l := range [][]string{p.Hosts, p.CIDRs} {
		for _, e := range l {
			h.Write([]byte(e))
			h.Write([]byte{0})
		}
		h.Write([]byte{1})
	}
	return max(h.Sum32(), 1)
}

// SetHost replaces the host's own addresses (they change: DHCP, a new
// bridge) if they differ from those in force.
func (f *Firewall) SetHost(host []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sameAddrs(host, f.host) {
		return nil
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := table()
	for _, s := range []*nftables.Set{hostSet(t, false), hostSet(t, true)} {
		c.FlushSet(s)
		if elems := addrElems(host, s.KeyType == nftables.TypeIP6Addr, 0); len(elems) > 0 {
			if err := c.SetAddElements(s, elems); err != nil {
				return fmt.Errorf("egress rules: host addresses: %w", err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress rules: host addresses: %w", err)
	}
	f.host = slices.Clone(host)
	return nil
}

// Allow lets the computer connect to addrs, which a DNS answer for name
// gave, for ttl (within minLearned and maxLearned). It fails if the
// policy in force does not allow name (it changed since the query came
// in); without an active policy everything is allowed already.
func (f *Firewall) Allow(name string, addrs []netip.Addr, ttl time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.policy.Active() {
		return nil
	}
	if !f.policy.AllowsName(name) {
		return fmt.Errorf("%s is no longer allowed", name)
	}
	ttl = min(max(ttl, minLearned), maxLearned)
	now := time.Now()
	until := now.Add(ttl)
	f.prune(now, len(addrs))
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := table()
	var refresh []netip.Addr
	var fresh []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if l, ok := f.learned[a]; ok && l.until.After(now) {
			refresh = append(refresh, a)
		} else {
			fresh = append(fresh, a)
		}
	}
	add := func(list []netip.Addr, del bool) error {
		for _, v6 := range []bool{false, true} {
			s := dnsSet(t, v6)
			if del {
				if e := addrElems(list, v6, 0); len(e) > 0 {
					if err := c.SetDeleteElements(s, e); err != nil {
						return err
					}
				}
			}
			if e := addrElems(list, v6, ttl); len(e) > 0 {
				if err := c.SetAddElements(s, e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	// Elements already there are deleted and added again, in one
	// transaction, to move their expiry; if one expired meanwhile the
	// delete fails the transaction, and they are added only.
	err = add(refresh, true)
	if err == nil {
		err = add(fresh, false)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		if err := add(append(refresh, fresh...), false); err != nil {
			return fmt.Errorf("egress rules: allow %s: %w", name, err)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("egress rules: allow %s: %w", name, err)
		}
	}
	for _, a := range addrs {
		a = a.Unmap()
		l, ok := f.learned[a]
		if !ok || l.until.Before(now) {
			l = &learnedAddr{names: map[string]bool{}}
			f.learned[a] = l
		}
		l.names[normalizeName(name)] = true
		if until.After(l.until) {
			l.until = until
		}
	}
	return nil
}

// prune forgets expired addresses and, past maxLearnedAddrs, those that
// expire first, to make room for n more.
func (f *Firewall) prune(now time.Time, n int) {
	for a, l := range f.learned {
		if l.until.Before(now) {
			delete(f.learned, a)
		}
	}
	for len(f.learned)+n > maxLearnedAddrs && len(f.learned) > 0 {
		var first netip.Addr
		var at time.Time
		for a, l := range f.learned {
			if at.IsZero() || l.until.Before(at) {
				first, at = a, l.until
			}
		}
		delete(f.learned, first)
	}
}

func (f *Firewall) conn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(f.cfg.NetNS))
	if err != nil {
		return nil, fmt.Errorf("egress rules: netlink: %w", err)
	}
	return c, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Sets get fixed IDs (unique within a transaction) rather than the
// library's process-wide counter, which is not safe across connections.
func hostSet(t *nftables.Table, v6 bool) *nftables.Set {
	if v6 {
		return &nftables.Set{Table: t, ID: 2, Name: "host6", KeyType: nftables.TypeIP6Addr}
	}
	return &nftables.Set{Table: t, ID: 1, Name: "host4", KeyType: nftables.TypeIPAddr}
}

func dnsSet(t *nftables.Table, v6 bool) *nftables.Set {
	if v6 {
		return &nftables.Set{Table: t, ID: 4, Name: "dns6", KeyType: nftables.TypeIP6Addr, HasTimeout: true}
	}
	return &nftables.Set{Table: t, ID: 3, Name: "dns4", KeyType: nftables.TypeIPAddr, HasTimeout: true}
}

func addrElems(addrs []netip.Addr, v6 bool, timeout time.Duration) []nftables.SetElement {
	var out []nftables.SetElement
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() != v6 || seen[a] || !a.IsValid() {
			continue
		}
		seen[a] = true
		out = append(out, nftables.SetElement{Key: a.AsSlice(), Timeout: timeout})
	}
	return out
}

// install replaces the table (see docs/egress.md for the rules):
//
//	chain dns (nat output):  with an active policy, DNS to Resolver → Proxy
//	chain output (filter):   lo and 127/8 (the proxy) pass; the host's
//	                         addresses and Refused are refused; without
//	                         an active policy the rest passes; with one,
//	                         connections allowed under this generation, the
//	                         CIDRs and the learned addresses pass (marked
//	                         with the generation), the rest is refused
//	chain refuse:            TCP reset, ICMP port unreachable otherwise
func (f *Firewall) install(p Policy, host []netip.Addr, gen uint32, learned map[netip.Addr]*learnedAddr, now time.Time) error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	t := table()
	// Adding, deleting and adding again in one transaction replaces the
	// table whether or not it exists.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	for _, v6 := range []bool{false, true} {
		if err := c.AddSet(hostSet(t, v6), addrElems(host, v6, 0)); err != nil {
			return err
		}
		var elems []nftables.SetElement
		for a, l := range learned {
			if a.Is6() == v6 {
				elems = append(elems, addrElems([]netip.Addr{a}, v6, l.until.Sub(now))...)
			}
		}
		if err := c.AddSet(dnsSet(t, v6), elems); err != nil {
			return err
		}
	}

	refuse := c.AddChain(&nftables.Chain{Name: "refuse", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: refuse, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}})
	c.AddRule(&nftables.Rule{Table: t, Chain: refuse, Exprs: []expr.Any{
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
	}})
	allow := c.AddChain(&nftables.Chain{Name: "allow", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: allow, Exprs: []expr.Any{
		&expr.Immediate{Register: 1, Data: native32(gen)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})

	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	toRefuse := &expr.Verdict{Kind: expr.VerdictGoto, Chain: "refuse"}
	toAllow := &expr.Verdict{Kind: expr.VerdictGoto, Chain: "allow"}

	pass := nftables.ChainPolicyAccept
	out := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &pass,
	})
	rule := func(ch *nftables.Chain, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
	}
	rule(out, append(oifname("lo"), accept)...)
	// DNS the dns chain sent to the proxy has its destination rewritten
	// by now (the output interface is still the original one).
	rule(out, append(daddrIn(netip.MustParsePrefix("127.0.0.0/8")), accept)...)
	if !p.Active() && f.cfg.Resolver.IsValid() {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rule(out, append(dnsTo(f.cfg.Resolver, proto), accept)...)
		}
	}
	for _, v6 := range []bool{false, true} {
		s := hostSet(t, v6)
		rule(out, append(daddrLookup(s, v6), toRefuse)...)
	}
	for _, pfx := range append(slices.Clone(f.cfg.Refused), alwaysRefused...) {
		rule(out, append(daddrIn(pfx), toRefuse)...)
	}
	if p.Active() {
		rule(out,
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: native32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(gen)},
			accept,
		)
		for _, pfx := range p.Prefixes() {
			rule(out, append(daddrIn(pfx), toAllow)...)
		}
		for _, v6 := range []bool{false, true} {
			rule(out, append(daddrLookup(dnsSet(t, v6), v6), toAllow)...)
		}
		rule(out, toRefuse)

		// Priority -100: before the filter chain, so that it sees the
		// proxy's address.
		nat := c.AddChain(&nftables.Chain{
			Name: "dns", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
		})
		if f.cfg.Resolver.Is4() && f.cfg.Proxy.Addr().Is4() {
			for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
				port := binary.BigEndian.AppendUint16(nil, f.cfg.Proxy.Port())
				rule(nat, append(dnsTo(f.cfg.Resolver, proto),
					&expr.Immediate{Register: 1, Data: f.cfg.Proxy.Addr().AsSlice()},
					&expr.Immediate{Register: 2, Data: port},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
				)...)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return err
	}
	return nil
}

// alwaysRefused are destinations that mean this machine or no single
// remote host: "this network" (0.0.0.0/8, which Linux connects to
// locally), multicast and the reserved range with broadcast, and IPv6's
// unspecified, IPv4-mapped and multicast ranges.
var alwaysRefused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("224.0.0.0/3"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("ff00::/8"),
}

func native32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// oifname matches the output interface's name.
func oifname(name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// family matches IPv4 or IPv6 packets (an inet table sees both).
func family(v6 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if v6 {
		proto = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// daddr loads the destination address into register 1.
func daddr(v6 bool) expr.Any {
	if v6 {
		return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

// daddrIn matches destinations in pfx.
func daddrIn(pfx netip.Prefix) []expr.Any {
	v6 := pfx.Addr().Is6()
	n := uint32(pfx.Addr().BitLen() / 8)
	mask := make([]byte, n)
	for i := 0; i < pfx.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(family(v6),
		daddr(v6),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: pfx.Addr().AsSlice()},
	)
}

// daddrLookup matches destinations in set s.
func daddrLookup(s *nftables.Set, v6 bool) []expr.Any {
	return append(family(v6), daddr(v6), &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
}

// dnsTo matches DNS (port 53 over proto) to the IPv4 address a.
func dnsTo(a netip.Addr, proto byte) []expr.Any {
	return append(daddrIn(netip.PrefixFrom(a, a.BitLen())),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}},
	)
}

func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
