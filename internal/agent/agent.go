package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPath is the PATH of commands whose environment sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// drainAfterExit bounds how long output is still forwarded after a command
// exits: a background process it left behind may hold its stdout open
// forever, and the exec must end when the command does.
const drainAfterExit = 200 * time.Millisecond

// Run serves requests until a client sends FrameShutdown or, outside a
// computer, until ctx is done or the process receives SIGTERM or SIGINT; then it
// sends SIGTERM to every other process it can see and returns once they
// are all gone. As PID 1 of a PID namespace that is every process in the
// computer.
//
// It serves on the listening socket it was handed (ListenFDs says how),
// which is how a computer's agent is started: the host made that socket
// where the computer cannot reach it, so no one in the computer can put
// another socket in its place. Handed none, it listens at socket.
//
// As a computer's init it takes no signal: the kernel delivers to the
// init of a PID namespace only the signals it handles, so the agent
// handles every one and does nothing with it. Root in the computer then
// cannot end the computer from inside (kill -TERM 1, or -SEGV, which the
// Go runtime would turn into a crash); the host, which alone can reach
// the socket, stops it with FrameShutdown, or SIGKILL.
func Run(ctx context.Context, socket string) error {
	r := newReaper()
	go r.run()
	defer r.stop()

	bringLoopbackUp() // best effort: the runtime usually has done it already

	ln, handed, err := listener(socket)
	if err != nil {
		return err
	}
	defer ln.Close()

	stop := make(chan struct{})
	var stopOnce sync.Once
	requestStop := func() { stopOnce.Do(func() { close(stop) }) }
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(conn.(*net.UnixConn), r, requestStop)
		}
	}()

	sigc := make(chan os.Signal, 1)
	if handed && os.Getpid() == 1 {
		// Nor does a cancelled ctx end it: callers tie ctx to SIGTERM
		// (cmd/ohm does), and that signal may come from inside.
		ctx = context.WithoutCancel(ctx)
		ignored := make(chan os.Signal, 16)
		signal.Notify(ignored) // every signal, handled and dropped
		go func() {
			for range ignored {
			}
		}()
	} else {
		signal.Notify(sigc, unix.SIGTERM, unix.SIGINT)
	}
	select {
	case <-ctx.Done():
	case <-sigc:
	case <-stop:
	}
	ln.Close()
	return shutdown(r)
}

// ListenFDs and ListenPID are the environment variables (systemd's socket
// activation protocol) by which the agent is handed its listening socket
// as file descriptor 3: LISTEN_FDS=1, and LISTEN_PID its own pid (1, in
// the computer's PID namespace), so that a process that merely inherited
// the variables does not take fd 3 for a socket.
const (
	ListenFDs = "LISTEN_FDS"
	ListenPID = "LISTEN_PID"
)

// listenFD is the first descriptor of the socket activation protocol.
const listenFD = 3

// listener returns the socket handed over as fd 3 (and removes the
// variables that said so, which commands must not inherit), or else a new
// one at socket, which only root can connect to: a command running as a
// user must not be able to ask the agent for a root shell.
func listener(socket string) (ln net.Listener, handed bool, err error) {
	handed = os.Getenv(ListenFDs) == "1" && os.Getenv(ListenPID) == strconv.Itoa(os.Getpid())
	os.Unsetenv(ListenFDs)
	os.Unsetenv(ListenPID)
	if handed {
		f := os.NewFile(listenFD, "agent.sock")
		// FileListener works on a close-on-exec copy: commands never
		// inherit the socket.
		ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, false, fmt.Errorf("listen on the socket handed over: %w", err)
		}
		return ln, true, nil
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("remove stale socket: %w", err)
	}
	old := unix.Umask(0o077)
	ln, err = net.Listen("unix", socket)
	unix.Umask(old)
	if err != nil {
		return nil, false, fmt.Errorf("listen: %w", err)
	}
	return ln, false, nil
}

// shutdown sends SIGTERM to every process but this one and waits until
// none is left (the reaper collects them). Outside a PID namespace of its
// own (a test, or someone running `ohm agent` by hand) "every process"
// would be the host's, so then it signals only the commands it started.
func shutdown(r *reaper) error {
	if os.Getpid() != 1 {
		for _, pid := range r.children() {
			unix.Kill(-pid, unix.SIGTERM)
		}
		for len(r.children()) > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	unix.Kill(-1, unix.SIGTERM)
	for othersAlive() {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// othersAlive reports whether /proc lists a process other than this one.
func othersAlive() bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && pid != self {
			return true
		}
	}
	return false
}

// reaper waits for every child of this process, so that orphans reparented
// to PID 1 do not linger as zombies, and hands the status of the children
// it started to whoever waits for them. An agent that is not PID 1 (one
// run inside a test process) waits for its own children only: the
// others are someone else's to wait for.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
	sigc    chan os.Signal
	init    bool // PID 1: reap every child
	// commandOOM is the oom_score_adj of the commands it starts: 1000
	// above its own (at most 1000), when it runs as a computer's init.
	commandOOM string
}

func newReaper() *reaper {
	r := &reaper{waiting: make(map[int]chan unix.WaitStatus), sigc: make(chan os.Signal, 1), init: os.Getpid() == 1}
	if r.init {
		if b, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				r.commandOOM = strconv.Itoa(min(n+1000, 1000))
			}
		}
	}
	signal.Notify(r.sigc, unix.SIGCHLD)
	return r
}

func (r *reaper) run() {
	r.reap() // children that exited before Notify
	for range r.sigc {
		r.reap()
	}
}

// stop ends run; the process's SIGCHLD is no longer the reaper's.
func (r *reaper) stop() {
	signal.Stop(r.sigc)
	close(r.sigc)
}

func (r *reaper) reap() {
	if !r.init {
		r.reapOwn()
		return
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 {
			return
		}
		r.deliver(pid, ws)
	}
}

// reapOwn waits, without blocking, for each child start started.
func (r *reaper) reapOwn() {
	for _, pid := range r.children() {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for err == unix.EINTR {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if got == pid {
			r.deliver(pid, ws)
		}
	}
}

// deliver hands the status of reaped child pid to whoever waits for it,
// if start started it. start holds mu from fork to registration, so a
// child reaped before it was registered is found here all the same.
func (r *reaper) deliver(pid int, ws unix.WaitStatus) {
	r.mu.Lock()
	ch := r.waiting[pid]
	delete(r.waiting, pid)
	r.mu.Unlock()
	if ch != nil {
		ch <- ws
	}
}

// children lists the processes started by start that have not exited.
func (r *reaper) children() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	pids := make([]int, 0, len(r.waiting))
	for pid := range r.waiting {
		pids = append(pids, pid)
	}
	return pids
}

// start starts a process and returns a channel that receives its status.
func (r *reaper) start(path string, argv []string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	p.Release() // the reaper waits, not os.Process
	if r.commandOOM != "" {
		// The command inherited the agent's score; it gets 1000 more, so
		// that it is what the OOM killer takes. (It may have forked in the
		// microseconds since its exec; those children keep the agent's
		// score. Any process may also lower its score back to the floor
		// it inherited. Either way it can only hang its own computer.)
		os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(r.commandOOM), 0)
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiting[pid] = ch
	return pid, ch, nil
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// conn serializes frame writes to the client.
type conn struct {
	c  *net.UnixConn
	mu sync.Mutex
}

func (c *conn) send(typ byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return WriteFrame(c.c, typ, payload)
}

// serve answers one connection; requestStop ends the agent (FrameShutdown).
func serve(uc *net.UnixConn, r *reaper, requestStop func()) {
	defer uc.Close()
	c := &conn{c: uc}
	typ, payload, err := ReadFrame(uc)
	if err != nil {
		return
	}
	switch typ {
	case FramePing:
		c.send(FramePing, nil)
	case FrameShutdown:
		c.send(FrameShutdown, nil)
		requestStop()
	case FrameDial:
		relay(c, payload)
	case FrameStart:
		var req Request
		if err := json.Unmarshal(payload, &req); err != nil {
			c.send(FrameError, []byte("bad request: "+err.Error()))
			return
		}
		code, err := execute(c, r, req)
		if err != nil {
			c.send(FrameError, []byte(err.Error()))
			return
		}
		c.send(FrameExit, ExitPayload(code))
	default:
		c.send(FrameError, []byte(fmt.Sprintf("unexpected frame type %d", typ)))
	}
}

// execute runs req, streaming its output to c, and returns its exit code.
func execute(c *conn, r *reaper, req Request) (int, error) {
	if len(req.Argv) == 0 {
		return 0, errors.New("empty command")
	}
	u, err := lookupUser(req.User)
	if err != nil {
		return 0, err
	}
	env := buildEnv(u, req)
	dir := req.Workdir
	if dir == "" {
		dir = u.home
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			dir = "/"
		}
	}
	path, err := lookPath(req.Argv[0], envGet(env, "PATH"))
	if err != nil {
		c.send(FrameStderr, []byte(fmt.Sprintf("ohm: %s: %v\n", req.Argv[0], err)))
		if errors.Is(err, os.ErrNotExist) {
			return 127, nil
		}
		return 126, nil
	}

	sys := &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups},
	}
	attr := &os.ProcAttr{Dir: dir, Env: env, Sys: sys}

	var (
		stdin   io.WriteCloser
		outputs []*os.File // read ends, one pump each
		kinds   []byte     // frame type of each output
		child   []*os.File // our copies of the child's ends, closed after start
		master  *os.File   // the PTY, for resizes
	)
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	if req.TTY {
		m, s, err := openPTY()
		if err != nil {
			return 0, fmt.Errorf("open pty: %w", err)
		}
		defer m.Close()
		master = m
		if req.Rows > 0 && req.Cols > 0 {
			setWinsize(m, req.Rows, req.Cols)
		}
		child = append(child, s)
		attr.Files = []*os.File{s, s, s}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
		stdin = m
		outputs, kinds = []*os.File{m}, []byte{FrameStdout}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		defer inW.Close()
		defer outR.Close()
		defer errR.Close()
		child = append(child, inR, outW, errW)
		attr.Files = []*os.File{inR, outW, errW}
		sys.Setpgid = true
		stdin = inW
		outputs, kinds = []*os.File{outR, errR}, []byte{FrameStdout, FrameStderr}
	}

	pid, status, err := r.start(path, req.Argv, attr)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", req.Argv[0], err)
	}
	for _, f := range child {
		f.Close()
	}
	child = nil

	var once sync.Once
	done := make(chan struct{})
	killGroup := func() {
		select {
		case <-done: // the group may be gone and its id reused
		default:
			unix.Kill(-pid, unix.SIGKILL)
		}
	}
	if req.TimeoutMS > 0 {
		t := time.AfterFunc(time.Duration(req.TimeoutMS)*time.Millisecond, killGroup)
		defer t.Stop()
	}

	// Client to command: stdin, resizes; a lost client kills the command.
	go func() {
		closeStdin := func() { once.Do(func() { stdin.Close() }) }
		for {
			typ, payload, err := ReadFrame(c.c)
			if err != nil {
				if !req.TTY {
					closeStdin()
				}
				killGroup()
				return
			}
			switch typ {
			case FrameStdin:
				if _, err := stdin.Write(payload); err != nil && !req.TTY {
					closeStdin()
				}
			case FrameStdinEOF:
				if req.TTY {
					stdin.Write([]byte{4}) // ^D: EOF to the line discipline
				} else {
					closeStdin()
				}
			case FrameResize:
				if master != nil && len(payload) == 4 {
					setWinsize(master, binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]))
				}
			}
		}
	}()

	// Command to client: output.
	var pumps sync.WaitGroup
	for i, f := range outputs {
		pumps.Add(1)
		go func(f *os.File, typ byte) {
			defer pumps.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 {
					if c.send(typ, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(f, kinds[i])
	}

	ws := <-status
	close(done)
	deadline := time.Now().Add(drainAfterExit)
	for _, f := range outputs {
		if f.SetReadDeadline(deadline) != nil {
			// Not pollable: closing is the only way to stop the pump.
			time.AfterFunc(drainAfterExit, func() { f.Close() })
		}
	}
	pumps.Wait()
	return exitCode(ws), nil
}

// openPTY opens a new pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var n int
	var ioctlErr error
	// Control, not Fd: Fd would put the master in blocking mode and lose
	// read deadlines.
	err = controlFd(m, func(fd int) {
		if ioctlErr = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); ioctlErr != nil {
			return
		}
		n, ioctlErr = unix.IoctlGetInt(fd, unix.TIOCGPTN)
	})
	if err == nil {
		err = ioctlErr
	}
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

func setWinsize(f *os.File, rows, cols uint16) {
	controlFd(f, func(fd int) {
		unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

func controlFd(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// bringLoopbackUp sets lo up in the computer's network namespace.
func bringLoopbackUp() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return
	}
	if unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr) != nil {
		return
	}
	if ifr.Uint16()&unix.IFF_UP != 0 {
		return
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// lookPath finds file in the directories of path, as a shell would.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		return file, executable(file)
	}
	if path == "" {
		path = DefaultPath
	}
	var firstErr error = fmt.Errorf("command not found: %w", os.ErrNotExist)
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		err := executable(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, os.ErrNotExist) && errors.Is(firstErr, os.ErrNotExist) {
			firstErr = err
		}
	}
	return "", firstErr
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("permission denied: %w", os.ErrPermission)
	}
	return nil
}
