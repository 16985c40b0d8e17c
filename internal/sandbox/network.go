package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/hostbin"
)

// A computer with Spec.Network gets outbound access through slirp4netns: a
// user-mode TCP/IP stack on the host that owns a tap device in the
// computer's network namespace. The computer's packets never reach the
// host's network stack as packets: slirp4netns opens ordinary sockets for
// them, so the computer needs no bridge, no NAT rules and no capability
// on the host. --disable-host-loopback keeps the host's own loopback
// services (the ohm daemon's TCP API, databases bound to 127.0.0.1) out
// of reach through the gateway address.
const (
	tapName       = "tap0"
	slirpGateway  = "10.0.2.2" // the host, as the computer sees it (loopback refused)
	slirpResolver = "10.0.2.3" // slirp's DNS forwarder to the host's resolvers
)

// startNetwork starts slirp4netns for the computer whose init is pid and
// waits until the tap device is configured. slirp4netns runs in its own
// session, so that it outlives a daemon restart like the computer does;
// stopNetwork ends it with the computer.
func startNetwork(p paths, pid int) error {
	bin, err := hostbin.Path("slirp4netns")
	if err != nil {
		return fmt.Errorf("network: slirp4netns is not installed (apt-get install slirp4netns): %w", err)
	}
	logf, err := os.OpenFile(p.slirpLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer logf.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer rd.Close()
	os.Remove(p.slirpSock)
	cmd := exec.Command(bin,
		"--configure", "--mtu=65520", "--disable-host-loopback",
		// Confine slirp4netns itself: it parses the computer's packets.
		"--enable-sandbox", "--enable-seccomp",
		"--ready-fd=3", "--api-socket", p.slirpSock,
		"--netns-type=path", fmt.Sprintf("/proc/%d/ns/net", pid), tapName)
	cmd.ExtraFiles = []*os.File{wr}
	cmd.Stdout, cmd.Stderr = logf, logf
	// A mount namespace of its own, every mount in it private (Go's
	// fork does that with CLONE_NEWNS): --enable-sandbox pivots
	// slirp4netns into an empty root and detaches the old one, and in a
	// plain copy of the host's namespace that unmount would propagate
	// through the shared peer groups to the host, unmounting the
	// workspace of every running computer.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return fmt.Errorf("network: start slirp4netns: %w", err)
	}
	go cmd.Wait() // reap it if it ends while this process lives
	if err := writeFileAtomic(p.slirpPid, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("network: %w", err)
	}
	rd.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1)
	if _, err := rd.Read(buf); err != nil || buf[0] != '1' {
		stopNetwork(p)
		msg, _ := os.ReadFile(p.slirpLog)
		return fmt.Errorf("network: slirp4netns did not come up: %s", strings.TrimSpace(string(msg)))
	}
	return nil
}

// stopNetwork ends the computer's slirp4netns, if one runs. The pid file
// alone could name a recycled pid: the process must also carry this
// computer's API socket on its command line.
func stopNetwork(p paths) {
	data, err := os.ReadFile(p.slirpPid)
	if err != nil {
		return
	}
	defer os.Remove(p.slirpPid)
	defer os.Remove(p.slirpSock)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone
	}
	defer unix.Close(fd)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("\x00"+p.slirpSock+"\x00")) {
		return
	}
	unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	waitExit(pid, 2*time.Second)
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	waitExit(pid, 2*time.Second)
}
