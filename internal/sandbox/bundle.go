package sandbox

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"ohm/internal/agent"
)

// Paths inside the computer.
const (
	agentBinary = "/.ohm/ohm"
	agentRunDir = "/.ohm/run"
	homeDir     = "/home/ohm"
)

// defaultCaps is the capability set of root in a computer: the container
// runtime default (Docker's) without CAP_MKNOD and CAP_NET_RAW. It is
// enough for package managers as root and holds nothing that reaches past
// the computer (no SYS_ADMIN, NET_ADMIN, SYS_MODULE, SYS_PTRACE,
// SYS_RAWIO, SYS_TIME, SYS_RESOURCE, DAC_READ_SEARCH). MKNOD goes too: the
// device cgroup runc sets up lets any node be created (only opening is
// refused), and nothing a computer does needs device nodes of its own.
// NET_RAW goes because a packet socket on the tap device would send
// frames past the egress rules (docs/egress.md); ping works without it
// through ICMP datagram sockets (netSysctls).
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// netSysctls are set in the computer's own network namespace: every group
// may open ICMP echo (datagram) sockets, so ping needs no CAP_NET_RAW.
var netSysctls = map[string]string{"net.ipv4.ping_group_range": "0 2147483647"}

// maskedPaths and readonlyPaths are runc's defaults (`runc spec`), plus
// powercap, whose energy counters leak what other tenants compute, and
// what describes the host rather than the computer: the kernel's command
// line (it can hold secrets and says how the host booted) and the host's
// block devices and partitions.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/sys/firmware", "/proc/scsi",
		"/sys/devices/virtual/powercap",
		"/proc/cmdline", "/proc/partitions",
		"/sys/block", "/sys/class/block", "/sys/dev/block",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
		// On cgroup v1 runc puts the controllers under a tmpfs of no set
		// size, writable: root could fill it with half the host's memory.
		"/sys/fs/cgroup",
	}
)

// cgroupPath names the computer's cgroup after its name and state
// directory, so that two data directories with a computer of the same name
// never share one.
func cgroupPath(spec Spec, p paths) string {
	sum := sha256.Sum256([]byte(p.state))
	return "/ohm/" + spec.Name + "-" + hex.EncodeToString(sum[:4])
}

// ociSpec is the runc configuration of the computer.
func ociSpec(spec Spec, p paths, agentPath string) *specs.Spec {
	lim := spec.Limits()
	period := uint64(100000)
	quota := int64(lim.CPUs * float64(period))
	mem := lim.MemoryBytes
	// Memory+swap equal to memory: swap never extends the limit (where
	// the kernel accounts swap at all; without it there is nothing to cap).
	var swap *int64
	if swapAccounted() {
		swap = &mem
	}

	env := []string{"PATH=" + agent.DefaultPath, "HOSTNAME=" + spec.Name}
	env = append(env, spec.Env...)
	// The agent's listening socket is fd 3 (runcRun makes it on the host):
	// the agent, PID 1, takes it and drops these from what commands get.
	env = append(env, agent.ListenFDs+"=1", agent.ListenPID+"=1")

	// The agent is the computer: the OOM killer must never pick it (with
	// memory no process shows as its own, socket buffers or a storm of
	// small processes, it would be the largest). It scores each command
	// it starts 1000 above itself, so commands are what the OOM killer
	// takes. Lowering a score needs CAP_SYS_RESOURCE, which a daemon in a
	// restricted container may lack; then the agent keeps the daemon's
	// score and commands get 1000 (killed first).
	var oomScoreAdj *int
	if hasCap(unix.CAP_SYS_RESOURCE) {
		v := -1000
		oomScoreAdj = &v
	}

	return &specs.Spec{
		Version:  "1.0.2",
		Hostname: spec.Name,
		Root:     &specs.Root{Path: p.rootfs},
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: []string{agentBinary, "agent", "--socket", agentRunDir + "/agent.sock"},
			Env:  env,
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  defaultCaps,
				Effective: defaultCaps,
				Permitted: defaultCaps,
			},
			Rlimits: []specs.POSIXRlimit{nofileLimit()},
			// no_new_privs stays off: it would disable sudo's setuid bit,
			// and package installs need sudo. What root can do is bounded
			// by the capability set and the seccomp filter instead (as
			// with Docker's defaults); see SECURITY.md.
			NoNewPrivileges: false,
			OOMScoreAdj:     oomScoreAdj,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			homeMount(spec),
			{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(p.etc, "hosts"), Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
			{Destination: "/etc/hostname", Type: "bind", Source: filepath.Join(p.etc, "hostname"), Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(p.etc, "resolv.conf"), Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
			{Destination: agentBinary, Type: "bind", Source: agentPath, Options: []string{"bind", "ro", "nosuid", "nodev"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: cgroupPath(spec, p),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.CgroupNamespace},
			},
			Resources: &specs.LinuxResources{
				// runc adds the standard nodes (null, zero, full, random,
				// urandom, tty, ptmx, pts) on top of this deny-all.
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &mem, Swap: swap},
				CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
				Pids:    &specs.LinuxPids{Limit: lim.PIDs},
			},
			Sysctl:        netSysctls,
			Seccomp:       seccompProfile(),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
}

// hasCap reports whether this process has capability c in its effective
// set.
func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}

// homeMount is the mount that puts the workspace at /home/ohm: a bind of
// the workspace itself, or with Spec.HomeMount a recursive bind of its
// parent at /home as a slave, so that mounts and unmounts of the
// workspace on the host reach the computer (and nothing propagates back).
// That /home is a host directory: read-only, so that nothing written there
// lands on the host's disk and no link replaces /home/ohm (which the host
// mounts on), and nosuid, nodev, noexec, as nothing runs from it. Only
// the top mount gets these flags; the workspace below keeps its own.
func homeMount(spec Spec) specs.Mount {
	if spec.HomeMount != "" {
		return specs.Mount{Destination: "/home", Type: "bind", Source: spec.HomeMount, Options: []string{"rbind", "rslave", "ro", "nosuid", "nodev", "noexec"}}
	}
	return specs.Mount{Destination: homeDir, Type: "bind", Source: spec.Workspace, Options: []string{"rbind", "rw", "nosuid", "nodev"}}
}

// nofileLimit raises the computer's open-file limit to the hard limit the
// daemon has (raising past it would need CAP_SYS_RESOURCE on the host).
func nofileLimit() specs.POSIXRlimit {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Max == 0 {
		rl.Max = 1024
	}
	return specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: rl.Max, Soft: rl.Max}
}

// writeBundle writes the OCI bundle runc starts the computer from.
func writeBundle(spec Spec, p paths) error {
	agentPath := spec.AgentBinary
	if agentPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the ohm binary: %w", err)
		}
		agentPath = exe
	}
	if err := checkAgentRuns(agentPath, spec.TemplateRoot); err != nil {
		return err
	}
	ws := spec.Workspace
	if spec.HomeMount != "" {
		ws = filepath.Join(spec.HomeMount, "ohm")
	}
	if ws == "" {
		return fmt.Errorf("no workspace")
	}
	if fi, err := os.Lstat(ws); err != nil || !fi.IsDir() {
		return fmt.Errorf("workspace %s is not a directory", ws)
	}
	data, err := json.MarshalIndent(ociSpec(spec, p, agentPath), "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.bundle, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(p.bundle, "config.json"), data, 0o600)
}

// checkAgentRuns fails clearly when the agent binary is dynamically linked
// and the template lacks its loader (a busybox template has no libc): the
// ohm binary is meant to be built with CGO_ENABLED=0.
func checkAgentRuns(bin, templateRoot string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("agent binary %s: %w", bin, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return fmt.Errorf("agent binary %s: %w", bin, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if _, err := os.Lstat(filepath.Join(templateRoot, interp)); err != nil {
			return fmt.Errorf("agent binary %s is dynamically linked (build ohm with CGO_ENABLED=0) and the template has no %s", bin, interp)
		}
	}
	return nil
}

// writeEtc writes the files bind-mounted over the computer's /etc/hosts,
// /etc/hostname and /etc/resolv.conf. They are on the root disk (p.etc),
// whose top the computer cannot see: what it writes to them is bounded by
// its disk, and it cannot put links in the directory.
func writeEtc(spec Spec, p paths) error {
	if err := os.MkdirAll(p.etc, 0o755); err != nil {
		return err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", spec.Name)
	files := map[string]string{
		"hosts":       hosts,
		"hostname":    spec.Name + "\n",
		"resolv.conf": resolvConf(spec.Network),
	}
	for name, content := range files {
		if err := writeFileAtomic(filepath.Join(p.etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// resolvConf is the host's resolver configuration without loopback
// nameservers, which mean nothing in the computer's network namespace;
// with a network, slirp4netns's forwarder stands in for the host's
// nameservers.
func resolvConf(network bool) string {
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !network {
		return ""
	}
	if network {
		var b strings.Builder
		b.WriteString("nameserver " + slirpResolver + "\n")
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && (f[0] == "search" || f[0] == "options") {
				b.WriteString(line + "\n")
			}
		}
		return b.String()
	}
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" &&
			(strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
