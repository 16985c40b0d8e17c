package sandbox

import (
	"runtime"
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// deniedSyscalls are the system calls the seccomp filter refuses (EPERM),
// with why. Most would fail anyway for lack of a capability; the filter
// is the second wall, and it also closes calls that need no capability but
// widen the kernel surface a computer can reach (user namespaces, bpf,
// io_uring, userfaultfd, perf, keyrings). Calls that exist only for 32-bit
// x86 (umount, stime, vm86) need no entry: that architecture is refused
// as a whole.
var deniedSyscalls = map[string]string{
	// Mounts and namespaces: the computer's view of the filesystem and
	// its namespaces are fixed at start.
	"mount": "mounts", "umount2": "mounts", "pivot_root": "mounts",
	"open_tree": "mounts", "move_mount": "mounts", "fsopen": "mounts", "fsconfig": "mounts",
	"fsmount": "mounts", "fspick": "mounts", "mount_setattr": "mounts",
	"unshare": "new namespaces (user namespaces need no capability)",
	"setns":   "joining namespaces",
	// The kernel itself.
	"kexec_load": "kernel replacement", "kexec_file_load": "kernel replacement", "reboot": "reboot",
	"init_module": "kernel modules", "finit_module": "kernel modules", "delete_module": "kernel modules",
	"create_module": "kernel modules", "query_module": "kernel modules", "get_kernel_syms": "kernel modules",
	"bpf": "eBPF", "perf_event_open": "perf (kernel and hardware introspection)",
	"lookup_dcookie": "kernel profiling", "syslog": "kernel log", "_sysctl": "kernel parameters",
	"swapon": "swap", "swapoff": "swap", "acct": "process accounting",
	"quotactl": "quotas", "quotactl_fd": "quotas", "nfsservctl": "NFS server", "uselib": "obsolete loader",
	"iopl": "I/O ports", "ioperm": "I/O ports",
	"modify_ldt":   "segment descriptors (16-bit code, exploit aid)",
	"settimeofday": "host clock", "clock_settime": "host clock", "clock_settime64": "host clock",
	"sethostname": "hostname is the computer's name", "setdomainname": "domain name",
	"vhangup": "terminal hangup", "fanotify_init": "filesystem-wide monitoring",
	// Keyrings are not namespaced.
	"keyctl": "kernel keyrings", "add_key": "kernel keyrings", "request_key": "kernel keyrings",
	// Reading and steering other processes.
	"ptrace": "process tracing", "process_vm_readv": "other processes' memory",
	"process_vm_writev": "other processes' memory", "kcmp": "process comparison",
	"pidfd_getfd":   "other processes' file descriptors",
	"migrate_pages": "other processes' memory placement", "move_pages": "other processes' memory placement",
	// File handles bypass the mount namespace (the "shocker" escape).
	"open_by_handle_at": "file handles", "name_to_handle_at": "file handles",
	// Large, exploit-prone kernel surfaces with fallbacks in every user.
	"userfaultfd":       "userfaultfd (exploit aid)",
	"io_uring_setup":    "io_uring",
	"io_uring_enter":    "io_uring",
	"io_uring_register": "io_uring",
}

// cloneNamespaceFlags are clone(2) flags that create namespaces; clone is
// allowed only without them.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// socketFamilies are the address families a computer may create sockets
// of. Everything else is refused: AF_VSOCK above all (vsock is not
// network-namespaced, and on a virtual machine host it reaches the
// hypervisor and its other guests, with or without --network), and the
// long tail of protocol families nothing in a computer uses and whose
// kernel code has been a steady source of exploits (AF_ALG, AF_TIPC,
// AF_RDS, AF_KEY, Bluetooth, CAN, ...). AF_NETLINK is allowed for
// netlinkProtocols only.
var socketFamilies = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_PACKET}

// netlinkProtocols are the netlink protocols a computer may use: routes
// and addresses (ip, getifaddrs), socket diagnostics (ss), generic netlink
// and netfilter queries. Not NETLINK_AUDIT: the audit subsystem is not
// namespaced (CAP_AUDIT_WRITE lets root in a computer write to the host's
// audit log otherwise), nor the kernel's uevents, which show the host's
// devices.
var netlinkProtocols = []uint64{unix.NETLINK_ROUTE, unix.NETLINK_SOCK_DIAG, unix.NETLINK_NETFILTER, unix.NETLINK_GENERIC}

// personalities are the personality(2) arguments allowed: Linux's own
// (PER_LINUX) and 0xffffffff, which only queries. Other execution domains
// and flags (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO) weaken
// the process's memory protections, and are exploit aids.
var personalities = []uint64{0, 0xffffffff}

// low32 compares the low 32 bits of an argument: the kernel reads these
// as ints, and a filter comparing all 64 bits would let a caller through
// with garbage in the high half.
func low32(index uint, value uint64) specs.LinuxSeccompArg {
	return specs.LinuxSeccompArg{Index: index, Value: 0xffffffff, ValueTwo: value, Op: specs.OpMaskedEqual}
}

// seccompProfile is the computer's system call filter: refuse by default,
// allow every known call but deniedSyscalls, clone only without namespace
// flags, and clone3 answered ENOSYS (its flags sit in memory a filter
// cannot read; libc then falls back to clone); socket and personality
// only with the arguments above. Only the native architecture is
// allowed: 32-bit compat calls are refused, which removes the compat
// layer from what a computer can reach.
func seccompProfile() *specs.LinuxSeccomp {
	eperm := uint(unix.EPERM)
	enosys := uint(unix.ENOSYS)
	conditional := map[string]bool{"clone": true, "clone3": true, "socket": true, "personality": true}
	var allowed []string
	for _, name := range linuxSyscalls {
		if _, denied := deniedSyscalls[name]; denied || conditional[name] {
			continue
		}
		allowed = append(allowed, name)
	}
	sort.Strings(allowed)
	var argRules []specs.LinuxSyscall
	for _, f := range socketFamilies {
		argRules = append(argRules, specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{low32(0, f)}})
	}
	for _, proto := range netlinkProtocols {
		argRules = append(argRules, specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{low32(0, unix.AF_NETLINK), low32(2, proto)}})
	}
	// Refusals callers take for "not supported here": sudo, built with
	// audit support, treats EPROTONOSUPPORT from the audit socket as
	// auditing not configured, where EPERM would have it warn on every
	// call; EAFNOSUPPORT is what a kernel without vsock answers.
	eprotonosupport := uint(unix.EPROTONOSUPPORT)
	eafnosupport := uint(unix.EAFNOSUPPORT)
	for _, proto := range []uint64{unix.NETLINK_AUDIT, unix.NETLINK_KOBJECT_UEVENT} {
		argRules = append(argRules, specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: &eprotonosupport,
			Args: []specs.LinuxSeccompArg{low32(0, unix.AF_NETLINK), low32(2, proto)}})
	}
	argRules = append(argRules, specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: &eafnosupport,
		Args: []specs.LinuxSeccompArg{low32(0, unix.AF_VSOCK)}})
	for _, p := range personalities {
		argRules = append(argRules, specs.LinuxSyscall{Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{low32(0, p)}})
	}
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   seccompArchs(),
		Syscalls: []specs.LinuxSyscall{
			{Names: allowed, Action: specs.ActAllow},
			{
				Names:  []string{"clone"},
				Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{
					Index: 0, Value: cloneNamespaceFlags, ValueTwo: 0, Op: specs.OpMaskedEqual,
				}},
			},
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
		},
	}
	p.Syscalls = append(p.Syscalls, argRules...)
	return p
}

func seccompArchs() []specs.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64}
	}
	return nil // the native architecture
}
