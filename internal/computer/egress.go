package computer

import (
	"context"
	"fmt"

	"ohm/internal/egress"
)

// egressOf is rec's allow list as a policy.
func egressOf(rec Record) egress.Policy {
	return egress.Policy{Hosts: rec.AllowHosts, CIDRs: rec.AllowCIDRs}
}

// checkEgress normalizes the allow lists of opts; a list gives the
// computer a network (one it could not use otherwise).
func checkEgress(opts *CreateOptions) error {
	pol, err := egress.ParsePolicy(opts.AllowHosts, opts.AllowCIDRs)
	if err != nil {
		return invalidf("%v", err)
	}
	opts.AllowHosts, opts.AllowCIDRs = pol.Hosts, pol.CIDRs
	if pol.Active() {
		opts.Network = true
	}
	return nil
}

// EgressChange changes a computer's allow lists: a nil list stays as it
// is, an empty one is cleared. With both lists empty the computer reaches
// anywhere but the host.
type EgressChange struct {
	AllowHosts *[]string
	AllowCIDRs *[]string
}

// egressSetter is what SetEgress needs of a running sandbox.
type egressSetter interface {
	SetEgress(p egress.Policy) error
}

// SetEgress changes computer name's allow lists, at once if it runs (new
// connections and lookups follow the new lists; open connections they no
// longer allow are cut). Bad input changes nothing. It is Set with only
// the egress fields.
func (m *Manager) SetEgress(ctx context.Context, name string, ch EgressChange) (Record, error) {
	return m.Set(ctx, name, SetOptions{Egress: &ch})
}

// egressPolicy is the policy rec gets from ch, checked.
func egressPolicy(rec Record, ch EgressChange) (egress.Policy, error) {
	hosts, cidrs := rec.AllowHosts, rec.AllowCIDRs
	if ch.AllowHosts != nil {
		hosts = *ch.AllowHosts
	}
	if ch.AllowCIDRs != nil {
		cidrs = *ch.AllowCIDRs
	}
	pol, err := egress.ParsePolicy(hosts, cidrs)
	if err != nil {
		return egress.Policy{}, invalidf("%v", err)
	}
	if pol.Active() && !rec.Network {
		return egress.Policy{}, invalidf("computer %q has no network to limit (create it with --network)", rec.Name)
	}
	return pol, nil
}

// applyEgress gives computer rec its policy pol: in the registry, and in
// its sandbox if it runs. The caller holds rec's name lock.
func (m *Manager) applyEgress(ctx context.Context, rec Record, pol egress.Policy) (Record, error) {
	name := rec.Name
	if rec.State == StateRunning && rec.Network {
		l := m.live(name)
		if l == nil {
			return Record{}, fmt.Errorf("computer %q is recorded running but has no sandbox", name)
		}
		es, ok := l.inst.(egressSetter)
		if !ok {
			return Record{}, fmt.Errorf("set egress of %s: its sandbox cannot change its policy", name)
		}
		if err := es.SetEgress(pol); err != nil {
			return Record{}, fmt.Errorf("set egress of %s: %w", name, err)
		}
		if err := m.reg.setEgress(ctx, name, pol); err != nil {
			// The record is what the next start applies: put the
			// running computer back in line with it.
			if rerr := es.SetEgress(egressOf(rec)); rerr != nil {
				m.logf("set egress of %s: restore the previous policy: %v", name, rerr)
			}
			return Record{}, err
		}
	} else if err := m.reg.setEgress(ctx, name, pol); err != nil {
		return Record{}, err
	}
	rec.AllowHosts, rec.AllowCIDRs = pol.Hosts, pol.CIDRs
	return rec, nil
}
