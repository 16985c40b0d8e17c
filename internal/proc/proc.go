// Package proc reads the host's process table: whether a process still
// runs, and which processes run a given command line. A mount's storage
// is processes of its own (internal/ohmfs/mount), and what holds a volume
// or a mount is known by pid, so several packages ask these questions.
package proc

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Running reports whether pid is a process that has not exited. A zombie
// has: until its parent reaps it, kill(pid, 0) still finds it, though it
// holds no descriptor and does nothing any more (a mount's server killed
// after its keeper waits like that for its new parent).
func Running(pid int) bool {
	if pid <= 0 {
		return false
	}
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
