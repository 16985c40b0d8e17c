package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InitWatch tells when a running computer's init (the agent, PID 1 of its
// PID namespace) ends, and why. The init dying ends every process of the
// computer, so the computer is then stopped in all but name: its mounts
// are still up and runc still has its state, which Stop clears.
//
// The watch holds a pidfd of the init's host process. A pidfd refers to
// that one process, never to a later one that reuses its pid, and becomes
// readable when it exits; it works for a process the daemon did not start
// (the init is runc's child, reparented away), so a daemon that attached
// to a computer after a restart watches it as well as the one that started
// it.
type InitWatch struct {
	name  string
	f     *os.File // the pidfd, in the runtime's poller
	oom0  int64    // the cgroup's OOM kill count when the watch began
	oomAt string   // the cgroup file that count is read from ("" if none)

	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	why  string
}

// WatchInit starts watching the computer's init. It fails if the computer
// is not running.
func (s *Sandbox) WatchInit(ctx context.Context) (*InitWatch, error) {
	st, err := runcState(ctx, s.p, s.spec.Name)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", s.spec.Name, err)
	}
	if st.Status != "running" || st.Pid <= 0 {
		return nil, fmt.Errorf("watch %s: computer is %s", s.spec.Name, st.Status)
	}
	fd, err := unix.PidfdOpen(st.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watch %s: pidfd_open %d: %w", s.spec.Name, st.Pid, err)
	}
	w := &InitWatch{name: s.spec.Name, f: os.NewFile(uintptr(fd), "pidfd"), done: make(chan struct{})}
	w.oomAt = oomEventsFile(cgroupPath(s.spec, s.p))
	w.oom0, _ = readOOMKills(w.oomAt)
	// The pid was read before the pidfd was opened: if the init died in
	// between and its pid was reused, the pidfd is another process's. runc
	// checks the pid's start time, so a second look settles it.
	if st2, err := runcState(ctx, s.p, s.spec.Name); err != nil || st2.Status != "running" || st2.Pid != st.Pid {
		w.f.Close()
		w.why = "init ended"
		close(w.done)
		return w, nil
	}
	go w.wait()
	return w, nil
}

// wait blocks in the runtime's poller until the init exits or the watch is
// closed.
func (w *InitWatch) wait() {
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.finish("init ended (watch failed: " + err.Error() + ")")
		return
	}
	exited := false
	// Read returns once the callback says the pidfd is readable (the
	// init exited), or with os.ErrClosed once Close closed the pidfd.
	rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(pfd, 0)
		exited = n > 0
		return exited
	})
	if !exited {
		return // closed: not a death
	}
	var why string
	rc.Control(func(fd uintptr) { why = w.reason(int(fd)) })
	w.f.Close()
	w.finish(why)
}

func (w *InitWatch) finish(why string) {
	w.mu.Lock()
	w.why = why
	w.mu.Unlock()
	w.once.Do(func() { close(w.done) })
}

// reason explains the init's end from its exit status (the pidfd keeps it
// on Linux 6.15 and later) and the cgroup's OOM kill count.
func (w *InitWatch) reason(pidfd int) string {
	oom := false
	if n, err := readOOMKills(w.oomAt); err == nil && n > w.oom0 {
		oom = true
	}
	// The exit status is there once the process is reaped (its parent,
	// not the daemon, does that just after the exit), which the pidfd
	// shows as POLLHUP.
	for deadline := time.Now().Add(reapWait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 0); n > 0 && pfd[0].Revents&unix.POLLHUP != 0 {
			break
		}
	}
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
	if err := unix.IoctlPidfdInfo(pidfd, &info); err != nil || info.Mask&unix.PIDFD_INFO_EXIT == 0 {
		if oom {
			return "init ended after the out-of-memory killer acted in the computer"
		}
		return "init ended"
	}
	return exitReason(syscall.WaitStatus(info.Exit_code), oom)
}

// reapWait bounds the wait for a dead init to be reaped, which its exit
// status needs.
const reapWait = 2 * time.Second

// exitReason words a wait status of the init; oom says the computer's
// cgroup saw an OOM kill meanwhile.
func exitReason(ws syscall.WaitStatus, oom bool) string {
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && oom:
		return "init was killed (out of memory)"
	case ws.Signaled():
		return fmt.Sprintf("init was killed by signal %s", unix.SignalName(ws.Signal()))
	case ws.Exited() && oom:
		return fmt.Sprintf("init exited with status %d after the out-of-memory killer acted", ws.ExitStatus())
	case ws.Exited():
		return fmt.Sprintf("init exited with status %d", ws.ExitStatus())
	}
	return "init ended"
}

// Done is closed when the init has ended (not when the watch is closed).
func (w *InitWatch) Done() <-chan struct{} { return w.done }

// Reason says why the init ended, once Done is closed: "init was killed
// (out of memory)", "init was killed by signal SIGTERM", "init exited
// with status 0".
func (w *InitWatch) Reason() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.why
}

// Close ends the watch; the computer keeps running.
func (w *InitWatch) Close() error {
	err := w.f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// oomEventsFile is the file of cgroup cg that counts OOM kills: cgroup
// v2's memory.events, v1's memory.oom_control (both have an "oom_kill N"
// line). "" when neither can be found.
func oomEventsFile(cg string) string {
	v, err := DetectCgroups()
	if err != nil {
		return ""
	}
	if v == CgroupV2 {
		return filepath.Join("/sys/fs/cgroup", cg, "memory.events")
	}
	m, err := v1Mount("memory")
	if err != nil {
		return ""
	}
	return filepath.Join(m, cg, "memory.oom_control")
}

// readOOMKills reads the "oom_kill N" line of an OOM events file.
func readOOMKills(path string) (int64, error) {
	if path == "" {
		return 0, errors.New("no memory cgroup")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no oom_kill line", path)
}
