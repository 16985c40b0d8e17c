// Package egress limits where a computer's network traffic may go: an
// allow list of host names (exact, or "*.example.org" for the names under
// a domain) and of address ranges (CIDRs). It provides the policy itself,
// the nftables rules that enforce it inside the computer's network
// namespace (Firewall) and the DNS proxy that answers the computer's
// queries for allowed names only, letting the addresses it answered
// through the firewall (Proxy).
//
// docs/egress.md describes the mechanism and why it was chosen.
package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// Bounds of a policy: every host pattern and CIDR is a rule or a match
// evaluated for each new connection or DNS query.
const (
	MaxHosts = 256
	MaxCIDRs = 256
)

// Policy is a computer's allow list. The zero Policy (both lists empty)
// allows every destination except the host itself; a Policy with any entry
// allows only what it lists.
type Policy struct {
	// Hosts are host names ("pypi.org") and wildcards ("*.pythonhosted.org",
	// which matches the names under the domain but not the domain itself),
	// lower case, without a trailing dot.
	Hosts []string `json:"allow_hosts,omitempty"`
	// CIDRs are address ranges ("198.51.100.0/24", "2001:db8::/32"), in
	// their canonical form.
	CIDRs []string `json:"allow_cidrs,omitempty"`
}

// ParsePolicy checks and normalizes host patterns and CIDRs: names are
// lowered, a trailing dot goes, a bare address is a one-address CIDR, and
// duplicates go. The first malformed entry is the error.
func ParsePolicy(hosts, cidrs []string) (Policy, error) {
	var p Policy
	if len(hosts) > MaxHosts {
		return Policy{}, fmt.Errorf("too many allowed hosts (%d): at most %d", len(hosts), MaxHosts)
	}
	if len(cidrs) > MaxCIDRs {
		return Policy{}, fmt.Errorf("too many allowed CIDRs (%d): at most %d", len(cidrs), MaxCIDRs)
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		n, err := normalizeHost(h)
		if err != nil {
			return Policy{}, err
		}
		if !seen[n] {
			seen[n] = true
			p.Hosts = append(p.Hosts, n)
		}
	}
	for _, c := range cidrs {
		pfx, err := parseCIDR(c)
		if err != nil {
			return Policy{}, err
		}
		if s := pfx.String(); !seen[s] {
			seen[s] = true
			p.CIDRs = append(p.CIDRs, s)
		}
	}
	return p, nil
}

// Active reports whether p limits anything (it lists a host or a CIDR).
func (p Policy) Active() bool { return len(p.Hosts) > 0 || len(p.CIDRs) > 0 }

// AllowsName reports whether DNS name (any case, trailing dot or not) is
// one p lets the computer resolve. An inactive policy allows every name.
func (p Policy) AllowsName(name string) bool {
	if !p.Active() {
		return true
	}
	name = normalizeName(name)
	for _, h := range p.Hosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			// suffix is ".example.org": one label or more before it.
			if len(name) > len(suffix) && strings.HasSuffix(name, suffix) {
				return true
			}
			continue
		}
		if name == h {
			return true
		}
	}
	return false
}

// Prefixes are p's CIDRs, parsed (ParsePolicy made them valid).
func (p Policy) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range p.CIDRs {
		if pfx, err := netip.ParsePrefix(c); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// normalizeHost checks a host pattern: a DNS name of letters, digits,
// hyphens and underscores (labels of 1 to 63 characters, at most 253 in
// all), optionally "*." followed by such a name.
func normalizeHost(h string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid allowed host %q: %s", h, why)
	}
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	if n == "" {
		return "", bad("empty")
	}
	if _, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil {
		return "", bad("an address, not a name (allow it with --allow-cidr)")
	}
	rest, wild := strings.CutPrefix(n, "*.")
	if rest == "" || n == "*" {
		return "", bad("a wildcard needs a domain after \"*.\"")
	}
	if len(rest) > 253 {
		return "", bad("longer than 253 characters")
	}
	for _, label := range strings.Split(rest, ".") {
		switch {
		case label == "":
			return "", bad("empty label")
		case len(label) > 63:
			return "", bad("a label is longer than 63 characters")
		case label[0] == '-' || label[len(label)-1] == '-':
			return "", bad("a label starts or ends with '-'")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				if r == '*' {
					return "", bad("'*' only as the whole first label (\"*.example.org\")")
				}
				return "", bad(fmt.Sprintf("character %q is not allowed in a host name", r))
			}
		}
	}
	if wild {
		return "*." + rest, nil
	}
	return rest, nil
}

// parseCIDR parses an address range in canonical form, or a bare address
// (a range of one).
func parseCIDR(c string) (netip.Prefix, error) {
	s := strings.TrimSpace(c)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid allowed CIDR %q: want an address range like 198.51.100.0/24 or 2001:db8::/32", c)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid allowed CIDR %q: want an address range like 198.51.100.0/24 or 2001:db8::/32", c)
	}
	if pfx.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid allowed CIDR %q: an IPv4-mapped range; write it as IPv4", c)
	}
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, fmt.Errorf("invalid allowed CIDR %q: bits set past the prefix length (did you mean %s?)", c, m)
	}
	return pfx, nil
}

// normalizeName is a DNS name as policies compare it: lower case, no
// trailing dot.
func normalizeName(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }
