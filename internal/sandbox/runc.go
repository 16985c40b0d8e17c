package sandbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/agent"
	"ohm/internal/hostbin"
)

// hostCommand is exec.CommandContext for host program name, found in the
// system directories (hostbin), never through $PATH: the daemon runs it as
// root.
func hostCommand(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	bin, err := hostbin.Path(name)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, bin, args...), nil
}

// runc runs the runc command with the computer's state root.
func runc(ctx context.Context, p paths, args ...string) ([]byte, error) {
	cmd, err := hostCommand(ctx, "runc", append([]string{"--root", p.runc}, args...)...)
	if err != nil {
		return nil, err
	}
	return cmd.CombinedOutput()
}

type containerState struct {
	Status string `json:"status"`
	Pid    int    `json:"pid"`
}

// runcState asks runc about the container; an error means runc knows none.
func runcState(ctx context.Context, p paths, name string) (containerState, error) {
	var st containerState
	if _, err := os.Stat(p.runc); err != nil {
		return st, fmt.Errorf("no container: %w", err)
	}
	cmd, err := hostCommand(ctx, "runc", "--root", p.runc, "state", name)
	if err != nil {
		return st, err
	}
	out, err := cmd.Output()
	if err != nil {
		return st, fmt.Errorf("runc state: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("runc state: %w", err)
	}
	return st, nil
}

// runcRun starts the container detached. The container's init inherits
// runc's stdio, so both go to the agent log: a pipe would be held open by
// the container for its whole life.
//
// The agent's socket is made here, on the host, in the state directory
// the computer cannot see, and handed to the agent as fd 3: what the
// daemon dials is always this computer's agent. (A socket the agent made
// in a directory of the computer's could be replaced, by root in it, with
// a link to another computer's socket, and the daemon would send this
// computer's commands there.)
func runcRun(ctx context.Context, p paths, name string) error {
	rotateLog(p.log)
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	off, _ := logf.Seek(0, io.SeekEnd)
	sock, err := listenAgent(p.socket)
	if err != nil {
		return err
	}
	// The agent's copy is the only one that must stay open: a daemon
	// holding one would have its dials queue, unanswered, once the agent
	// is gone.
	defer sock.Close()
	cmd, err := hostCommand(ctx, "runc", "--root", p.runc, "run", "--detach", "--preserve-fds", "1", "--bundle", p.bundle, name)
	if err != nil {
		return err
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{sock}
	if err := cmd.Run(); err != nil {
		msg := ""
		if f, ferr := os.Open(p.log); ferr == nil {
			f.Seek(off, io.SeekStart)
			b, _ := io.ReadAll(io.LimitReader(f, 4096))
			f.Close()
			msg = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("runc run: %v: %s", err, msg)
	}
	return nil
}

// listenAgent makes the agent's listening socket at path, connectable by
// root alone, and returns it as a file to hand over.
func listenAgent(path string) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	old := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // the agent serves on it after we close ours
	f, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	return f, nil
}

// waitExit waits up to d for process pid to end.
func waitExit(pid int, d time.Duration) {
	if pid <= 0 {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}

// waitAgent waits until the agent answers on socket, or the container's
// init (pid) has exited, which means the agent could not run.
func waitAgent(ctx context.Context, socket string, pid int, d time.Duration) error {
	pidfd := -1
	if pid > 0 {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			pidfd = fd
			defer unix.Close(fd)
		}
	}
	deadline := time.Now().Add(d)
	delay := time.Millisecond
	for {
		err := ping(ctx, socket)
		if err == nil {
			return nil
		}
		if pidfd >= 0 {
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			if n, _ := unix.Poll(fds, 0); n > 0 {
				return errors.New("the agent exited at start")
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent did not answer within %v: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// maxAgentLog is the size past which the agent log is rotated at start.
// While the computer runs, its log grows within its root disk at most.
const maxAgentLog = 1 << 20

// rotateLog keeps the log at path and one older generation, the older
// only when the log has grown past maxAgentLog.
func rotateLog(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Size() > maxAgentLog {
		os.Rename(path, path+".1")
	}
}

// logTail is the end of the agent log, for error messages.
func logTail(p paths) string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	if len(data) > 1024 {
		data = data[len(data)-1024:]
	}
	return strings.TrimSpace(string(data))
}

func dial(ctx context.Context, socket string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

func ping(ctx context.Context, socket string) error {
	c, err := dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := agent.WriteFrame(c, agent.FramePing, nil); err != nil {
		return err
	}
	typ, _, err := agent.ReadFrame(c)
	if err != nil {
		return err
	}
	if typ != agent.FramePing {
		return fmt.Errorf("unexpected frame %d", typ)
	}
	return nil
}

// shutdownAgent asks the agent at socket to end the computer: it sends
// SIGTERM to every process and exits once they are gone. The agent takes
// no signal (so that nothing in the computer can end it); an agent of an
// older ohm answers with an error, and then SIGTERM is the way.
func shutdownAgent(ctx context.Context, socket string) error {
	c, err := dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := agent.WriteFrame(c, agent.FrameShutdown, nil); err != nil {
		return err
	}
	typ, _, err := agent.ReadFrame(c)
	if err != nil {
		return err
	}
	if typ != agent.FrameShutdown {
		return fmt.Errorf("agent answered frame %d to a shutdown", typ)
	}
	return nil
}

// ErrUnreachable is what Exec's error wraps when the computer's agent does
// not answer (its container is gone, say): the API answers it as
// "unavailable".
var ErrUnreachable = errors.New("computer not reachable")

// execAgent runs req through the agent at socket.
func execAgent(ctx context.Context, socket string, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(req.Argv) == 0 {
		return 0, errors.New("exec: empty command")
	}
	c, err := dial(ctx, socket)
	if err != nil {
		return 0, fmt.Errorf("exec: %w: %w", ErrUnreachable, err)
	}
	defer c.Close()
	payload, err := json.Marshal(agent.Request{
		Argv:      req.Argv,
		User:      req.User,
		Workdir:   req.Workdir,
		Env:       req.Env,
		TTY:       req.TTY,
		Rows:      req.Size.Rows,
		Cols:      req.Size.Cols,
		TimeoutMS: req.Timeout.Milliseconds(),
	})
	if err != nil {
		return 0, err
	}
	var wmu sync.Mutex
	send := func(typ byte, b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return agent.WriteFrame(c, typ, b)
	}
	if err := send(agent.FrameStart, payload); err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}

	done := make(chan struct{})
	defer close(done)
	// Cancelling ctx closes the connection, which makes the agent kill
	// the command.
	go func() {
		select {
		case <-ctx.Done():
			c.Close()
		case <-done:
		}
	}()
	if stdin == nil {
		send(agent.FrameStdinEOF, nil)
	} else {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 && send(agent.FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					send(agent.FrameStdinEOF, nil)
					return
				}
			}
		}()
	}
	if req.Resize != nil {
		go func() {
			for {
				select {
				case ws, ok := <-req.Resize:
					if !ok {
						return
					}
					send(agent.FrameResize, agent.ResizePayload(ws.Rows, ws.Cols))
				case <-done:
					return
				}
			}
		}()
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		typ, payload, err := agent.ReadFrame(c)
		if err != nil {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("exec: %w", ctx.Err())
			}
			// The agent went away under the command (its container
			// died): as unreachable as a refused dial.
			return 0, fmt.Errorf("exec: %w: connection lost: %w", ErrUnreachable, err)
		}
		switch typ {
		case agent.FrameStdout:
			if _, err := stdout.Write(payload); err != nil {
				return 0, fmt.Errorf("exec: write stdout: %w", err)
			}
		case agent.FrameStderr:
			if _, err := stderr.Write(payload); err != nil {
				return 0, fmt.Errorf("exec: write stderr: %w", err)
			}
		case agent.FrameExit:
			if len(payload) != 4 {
				return 0, errors.New("exec: malformed exit frame")
			}
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		case agent.FrameError:
			return 0, fmt.Errorf("exec %s: %s", req.Argv[0], payload)
		}
	}
}
