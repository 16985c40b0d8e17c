package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// probeBinary copies the test binary into spec's workspace and returns its
// path inside the computer (the agent may be a real ohm binary, which has
// no probe).
func probeBinary(t *testing.T, spec Spec) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, exe, filepath.Join(spec.Workspace, ".ohm-probe"), 0o755)
	return homeDir + "/.ohm-probe"
}

// probe runs inside a computer (`probe ...` of the test binary, copied
// there by probeBinary, lands here). "probe
// syscalls" makes each system call the seccomp filter must refuse, with
// arguments that would do nothing harmful if it got through, and prints
// "NAME ERRNO" lines; "probe hog MB" allocates and touches MB of memory.
func probe(args []string) int {
	if len(args) == 2 && args[0] == "hog" {
		mb, _ := strconv.Atoi(args[1])
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
		return 0
	}
	if len(args) == 1 && args[0] == "ids" {
		fmt.Println(os.Getuid(), os.Geteuid())
		return 0
	}
	if len(args) == 1 && args[0] == "egress" {
		return probeEgress()
	}
	if len(args) == 1 && args[0] == "hardening" {
		return probeHardening()
	}
	if len(args) != 1 || args[0] != "syscalls" {
		fmt.Fprintln(os.Stderr, "usage: probe syscalls | probe hog MB")
		return 2
	}
	str := func(s string) uintptr {
		p, _ := unix.BytePtrFromString(s)
		return uintptr(unsafe.Pointer(p))
	}
	netns, _ := unix.Open("/proc/self/ns/net", unix.O_RDONLY, 0)
	calls := []struct {
		name string
		nr   uintptr
		args [6]uintptr
	}{
		{"mount", unix.SYS_MOUNT, [6]uintptr{str("none"), str("/tmp"), str("tmpfs")}},
		{"umount2", unix.SYS_UMOUNT2, [6]uintptr{str("/nonexistent"), unix.MNT_DETACH}},
		{"pivot_root", unix.SYS_PIVOT_ROOT, [6]uintptr{str("/nonexistent"), str("/nonexistent")}},
		{"fsopen", unix.SYS_FSOPEN, [6]uintptr{str("tmpfs")}},
		{"open_tree", unix.SYS_OPEN_TREE, [6]uintptr{^uintptr(99), str("/")}},
		// Multi-threaded, so a user namespace would be EINVAL, not EPERM,
		// if the call reached the kernel.
		{"unshare(CLONE_NEWUSER)", unix.SYS_UNSHARE, [6]uintptr{unix.CLONE_NEWUSER}},
		{"unshare(CLONE_NEWNS)", unix.SYS_UNSHARE, [6]uintptr{unix.CLONE_NEWNS}},
		// NEWUSER with FS is EINVAL in the kernel: nothing is created if
		// the filter lets it through.
		{"clone(CLONE_NEWUSER)", unix.SYS_CLONE, [6]uintptr{unix.CLONE_NEWUSER | unix.CLONE_FS}},
		{"setns", unix.SYS_SETNS, [6]uintptr{uintptr(netns), unix.CLONE_NEWNET}},
		{"kexec_load", unix.SYS_KEXEC_LOAD, [6]uintptr{0, 0, 0, ^uintptr(0)}},
		{"kexec_file_load", unix.SYS_KEXEC_FILE_LOAD, [6]uintptr{^uintptr(0), ^uintptr(0), 0, 0, ^uintptr(0)}},
		{"init_module", unix.SYS_INIT_MODULE, [6]uintptr{0, 0, str("")}},
		{"finit_module", unix.SYS_FINIT_MODULE, [6]uintptr{^uintptr(0), str(""), 0}},
		{"delete_module", unix.SYS_DELETE_MODULE, [6]uintptr{str("ohm_nonexistent"), unix.O_NONBLOCK}},
		{"bpf", unix.SYS_BPF, [6]uintptr{^uintptr(0), 0, 0}},
		{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, [6]uintptr{0, 0, ^uintptr(0), ^uintptr(0), 0}},
		// Allowed by the kernel to anyone: only the filter refuses it.
		{"keyctl", unix.SYS_KEYCTL, [6]uintptr{unix.KEYCTL_GET_KEYRING_ID, ^uintptr(2) /* KEY_SPEC_SESSION_KEYRING, -3 */, 0}},
		{"add_key", unix.SYS_ADD_KEY, [6]uintptr{str("user"), str("ohm"), 0, 0, ^uintptr(1) /* KEY_SPEC_PROCESS_KEYRING, -2 */}},
		{"request_key", unix.SYS_REQUEST_KEY, [6]uintptr{str("user"), str("ohm"), 0, 0}},
		{"ptrace", unix.SYS_PTRACE, [6]uintptr{unix.PTRACE_PEEKDATA, 1, 0, 0}},
		{"process_vm_readv", unix.SYS_PROCESS_VM_READV, [6]uintptr{1, 0, 0, 0, 0, 0}},
		{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, [6]uintptr{^uintptr(0), 0, 0}},
		{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT, [6]uintptr{^uintptr(99), str("/"), 0, 0, 0}},
		{"reboot", unix.SYS_REBOOT, [6]uintptr{0, 0, 0, 0}}, // bad magic: EINVAL if it got through
		{"swapon", unix.SYS_SWAPON, [6]uintptr{str("/nonexistent"), 0}},
		{"swapoff", unix.SYS_SWAPOFF, [6]uintptr{str("/nonexistent")}},
		{"acct", unix.SYS_ACCT, [6]uintptr{0}},
		{"lookup_dcookie", unix.SYS_LOOKUP_DCOOKIE, [6]uintptr{0, 0, 0}},
		{"userfaultfd", unix.SYS_USERFAULTFD, [6]uintptr{unix.O_CLOEXEC}},
		{"io_uring_setup", unix.SYS_IO_URING_SETUP, [6]uintptr{0, 0}},
		{"syslog", unix.SYS_SYSLOG, [6]uintptr{10, 0, 0}}, // SYSLOG_ACTION_SIZE_BUFFER
		{"sethostname", unix.SYS_SETHOSTNAME, [6]uintptr{str("x"), 1}},
		{"settimeofday", unix.SYS_SETTIMEOFDAY, [6]uintptr{0, 0}},
		{"clone3", unix.SYS_CLONE3, [6]uintptr{0, 0}},
		{"getpid", unix.SYS_GETPID, [6]uintptr{}},
	}
	for _, c := range calls {
		r, _, errno := unix.Syscall6(c.nr, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4], c.args[5])
		if errno == 0 {
			fmt.Printf("%s ok\n", c.name)
			if c.name == "userfaultfd" || c.name == "io_uring_setup" {
				unix.Close(int(r))
			}
			continue
		}
		fmt.Printf("%s %s\n", c.name, unix.ErrnoName(errno))
	}
	return 0
}

func mknodChar(path string, major, minor uint32) error {
	return unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor)))
}

// hardeningCalls are the calls "probe hardening" makes: socket families
// and protocols, modify_ldt and personality values, each printed as
// "NAME ok" or "NAME ERRNO".
var hardeningCalls = []struct {
	name string
	nr   uintptr
	args [3]uintptr
}{
	{"socket(AF_VSOCK)", unix.SYS_SOCKET, [3]uintptr{unix.AF_VSOCK, unix.SOCK_STREAM, 0}},
	{"socket(AF_VSOCK, high bits)", unix.SYS_SOCKET, [3]uintptr{1<<32 | unix.AF_VSOCK, unix.SOCK_STREAM, 0}},
	{"socket(NETLINK_AUDIT)", unix.SYS_SOCKET, [3]uintptr{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT}},
	{"socket(NETLINK_AUDIT, high bits)", unix.SYS_SOCKET, [3]uintptr{unix.AF_NETLINK, unix.SOCK_RAW, 1<<32 | unix.NETLINK_AUDIT}},
	{"socket(NETLINK_KOBJECT_UEVENT)", unix.SYS_SOCKET, [3]uintptr{unix.AF_NETLINK, unix.SOCK_DGRAM, unix.NETLINK_KOBJECT_UEVENT}},
	{"socket(AF_ALG)", unix.SYS_SOCKET, [3]uintptr{unix.AF_ALG, unix.SOCK_SEQPACKET, 0}},
	{"socket(AF_TIPC)", unix.SYS_SOCKET, [3]uintptr{unix.AF_TIPC, unix.SOCK_RDM, 0}},
	{"socket(AF_UNIX)", unix.SYS_SOCKET, [3]uintptr{unix.AF_UNIX, unix.SOCK_STREAM, 0}},
	{"socket(AF_INET)", unix.SYS_SOCKET, [3]uintptr{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, 0}},
	{"socket(AF_INET6)", unix.SYS_SOCKET, [3]uintptr{unix.AF_INET6, unix.SOCK_DGRAM, 0}},
	{"socket(AF_PACKET)", unix.SYS_SOCKET, [3]uintptr{unix.AF_PACKET, unix.SOCK_DGRAM, 0}},
	{"socket(NETLINK_ROUTE)", unix.SYS_SOCKET, [3]uintptr{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE}},
	{"modify_ldt", unix.SYS_MODIFY_LDT, [3]uintptr{0, 0, 0}},
	{"personality(query)", unix.SYS_PERSONALITY, [3]uintptr{0xffffffff}},
	{"personality(PER_LINUX)", unix.SYS_PERSONALITY, [3]uintptr{0}},
	{"personality(ADDR_NO_RANDOMIZE)", unix.SYS_PERSONALITY, [3]uintptr{0x0040000}},
	{"personality(READ_IMPLIES_EXEC)", unix.SYS_PERSONALITY, [3]uintptr{0x0400000}},
	{"personality(PER_BSD)", unix.SYS_PERSONALITY, [3]uintptr{6}},
}

func probeHardening() int {
	for _, c := range hardeningCalls {
		r, _, errno := unix.Syscall(c.nr, c.args[0], c.args[1], c.args[2])
		if errno != 0 {
			fmt.Printf("%s %s\n", c.name, unix.ErrnoName(errno))
			continue
		}
		fmt.Printf("%s ok\n", c.name)
		if c.nr == unix.SYS_SOCKET {
			unix.Close(int(r))
		}
	}
	return 0
}
