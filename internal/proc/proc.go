// Package proc reads the host's process table: whether a process still
// runs, and which processes run a given command line. A mount's storage
// is processes of its own (internal/ohmfs/mount), and what holds a volume
// or a mount is known by pid, so several packages ask these questions.
package proc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Running reports whether pid is a process that has not exited: one of
// its threads still runs. A zombie has exited: until its parent reaps it,
// kill(pid, 0) still finds it, though it holds no descriptor and does
// nothing any more (a mount's server killed after its keeper waits like
// that for its new parent). The reverse case matters as much: when the
// first thread of a process exits before the others, /proc/PID/stat
// already says Z while the other threads still run and still hold the
// process's descriptors (a volume's lock among them) until the last one
// is gone. A pidfd is readable exactly when the whole thread group has
// exited, so that is what Running asks; /proc is the fallback for a
// kernel without pidfd_open.
func Running(pid int) bool {
	if pid <= 0 {
		return false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				return n == 0
			}
			break
		}
	case errors.Is(err, unix.ESRCH):
		return false
	}
	return runningByStat(pid)
}

// runningByStat is Running read from /proc/PID/stat: a process whose
// first thread is a zombie counts as exited.
func runningByStat(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// Find returns the pids of the processes whose command line (argv, as
// /proc/PID/cmdline has it) match accepts.
func Find(match func(argv []string) bool) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue // gone, or a kernel thread
		}
		if match(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}
