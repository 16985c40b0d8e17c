package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/egress"
)

// A networked computer's egress policy (Spec.Egress) is enforced inside
// its network namespace by an nftables table the daemon installs there
// (egress.Firewall), and its DNS by a proxy the daemon runs
// (egress.Proxy), whose sockets are made in that namespace: see
// docs/egress.md. Root in the computer lacks CAP_NET_ADMIN (so cannot
// change the table) and CAP_NET_RAW (so cannot write frames to the tap
// device past it). The table outlives a daemon restart with the
// namespace; the proxy is started again on attach.
var (
	// dnsProxyAddr is where the DNS proxy listens in the computer's
	// namespace; with an active policy the table sends DNS for
	// slirpResolver there.
	dnsProxyAddr = netip.MustParseAddrPort("127.0.0.53:53")
	// slirpNet is slirp4netns's network: its gateway is the host.
	slirpNet = netip.MustParsePrefix("10.0.2.0/24")
)

// hostAddrRefresh is how often the host's own addresses are read again
// (they change: DHCP, a new bridge) to keep them refused.
const hostAddrRefresh = 5 * time.Second

// egressState is a running computer's firewall and DNS proxy.
type egressState struct {
	nsfd  int
	fw    *egress.Firewall
	proxy *egress.Proxy
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once
}

// startEgress installs spec's policy in the network namespace of the
// computer whose init is pid and starts its DNS proxy. With adopt (an
// attach) the table an earlier daemon installed is taken over: what it
// learned from DNS stays allowed.
func startEgress(spec Spec, pid int, adopt bool) (*egressState, error) {
	nsfd, err := openNetns(pid)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	e := &egressState{nsfd: nsfd, stop: make(chan struct{})}
	e.fw = egress.NewFirewall(egress.Config{
		NetNS:    nsfd,
		Resolver: netip.MustParseAddr(slirpResolver),
		Proxy:    dnsProxyAddr,
		Refused:  []netip.Prefix{slirpNet},
	})
	host, err := hostAddrs()
	if err != nil {
		unix.Close(nsfd)
		return nil, fmt.Errorf("egress: %w", err)
	}
	if adopt {
		if err := e.fw.Adopt(spec.Egress); err != nil {
			unix.Close(nsfd)
			return nil, fmt.Errorf("egress: %w", err)
		}
	}
	if err := e.fw.Apply(spec.Egress, host); err != nil {
		unix.Close(nsfd)
		return nil, fmt.Errorf("egress: %w", err)
	}
	upstreams := spec.Resolvers
	if len(upstreams) == 0 {
		// No resolver is no DNS through the proxy, not no computer.
		upstreams, _ = egress.HostResolvers()
	}
	var pc net.PacketConn
	var ln net.Listener
	err = inNetns(nsfd, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", dnsProxyAddr.String()); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp4", dnsProxyAddr.String()); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		unix.Close(nsfd)
		return nil, fmt.Errorf("egress: dns proxy: %w", err)
	}
	e.proxy = egress.NewProxy(e.fw, upstreams)
	if err := e.proxy.Serve(pc, ln); err != nil {
		e.proxy.Close()
		unix.Close(nsfd)
		return nil, fmt.Errorf("egress: %w", err)
	}
	e.done.Add(1)
	go e.refreshHost()
	return e, nil
}

// refreshHost keeps the host's addresses in the table current.
func (e *egressState) refreshHost() {
	defer e.done.Done()
	t := time.NewTicker(hostAddrRefresh)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if host, err := hostAddrs(); err == nil {
				e.fw.SetHost(host) // the namespace may be going away: next tick
			}
		}
	}
}

// set applies p to the running computer.
func (e *egressState) set(p egress.Policy) error {
	host, err := hostAddrs()
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	return e.fw.Apply(p, host)
}

// close stops the proxy and the refresh; the table stays (it goes with
// the namespace).
func (e *egressState) close() {
	e.once.Do(func() {
		close(e.stop)
		e.done.Wait()
		e.proxy.Close()
		unix.Close(e.nsfd)
	})
}

// SetEgress changes the egress policy of the running computer at once:
// new connections and lookups follow p, and open connections p no longer
// allows are refused at their next packet.
func (s *Sandbox) SetEgress(p egress.Policy) error {
	if !s.spec.Network {
		return errors.New("set egress: the computer has no network")
	}
	if s.eg == nil {
		return errors.New("set egress: the computer's egress rules are not managed by this process")
	}
	if err := s.eg.set(p); err != nil {
		return fmt.Errorf("set egress of %s: %w", s.spec.Name, err)
	}
	s.spec.Egress = p
	return nil
}

// Egress is the egress policy in force.
func (s *Sandbox) Egress() egress.Policy {
	if s.eg == nil {
		return s.spec.Egress
	}
	return s.eg.fw.Policy()
}

// Release lets the computer go without stopping it (the daemon closes):
// its DNS proxy stops; its firewall rules stay in force.
func (s *Sandbox) Release() {
	if s.eg != nil {
		s.eg.close()
	}
}

// openNetns opens the network namespace of process pid, making sure pid
// still names the process it named (a pidfd taken first is still live
// after the namespace is open).
func openNetns(pid int) (int, error) {
	if pid <= 0 {
		return -1, fmt.Errorf("no init process")
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open network namespace of %d: %w", pid, err)
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("init %d ended: %w", pid, err)
	}
	return fd, nil
}

// inNetns runs fn on an OS thread of its own moved into the network
// namespace nsfd: sockets fn makes belong to that namespace. The thread
// goes back to the daemon's namespace after, or is thrown away (the
// goroutine ends locked) if it cannot.
func inNetns(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return // locked: the thread ends with the goroutine
		}
		defer unix.Close(self)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		err = fn()
		if unix.Setns(self, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// hostAddrs are the addresses of the host's interfaces (this process's
// network namespace): what slirp4netns would connect to on the host
// itself.
func hostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
