// Package mount runs the life of an ohmfs mount as processes: serving a
// volume at a mountpoint until it is unmounted or signalled (Serve),
// serving it from a detached process that outlives the caller (Start), the
// records under /run/ohm/mounts that name the process serving each
// mountpoint, and unmounting that waits until the process has made
// everything durable and exited (Unmount).
//
// A mount is two processes: the keeper (Serve's), which makes the mount
// and holds its FUSE connection, and a server (server.go) that answers it.
// A server that dies is replaced on the same connection, so the mount
// never goes away under its users (docs/fuse-restart.md).
//
// `ohm fs mount` and `ohm fs umount` only parse their flags into a Config
// and call this package; a detached mount is `ohm fs mount` run again in
// the foreground by Start, in a session of its own.
package mount

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"ohm/internal/ohmfs/fusefs"
)

// Fsync modes: what fsync waits for.
const (
	// FsyncLocal: the metadata database and the object store have the
	// change (the default).
	FsyncLocal = "local"
	// FsyncReplica: the off-host metadata replica has it too.
	FsyncReplica = "replica"
)

// Config is what a mount serves, where, and how. The zero values of the
// optional fields are the defaults.
type Config struct {
	Volume     string // volume URL
	Mountpoint string // absolute

	CacheBytes int64  // block cache bound; 0 for the volume's default
	CacheDir   string // S3 volumes: the local metadata directory ("" for the default)
	Reserve    uint64 // host disk space the workspace leaves free
	Fsync      string // FsyncLocal ("" too) or FsyncReplica

	Debug            bool   // log every FUSE request
	NoWritebackCache bool   // send every write to the server (for measurements)
	CPUProfile       string // write a CPU profile of the serving process here
}

// check reports the first thing wrong with c, in one line.
func (c Config) check() error {
	switch {
	case c.Volume == "":
		return errors.New("no volume given")
	case !filepath.IsAbs(c.Mountpoint):
		return fmt.Errorf("mountpoint %q is not an absolute path", c.Mountpoint)
	case c.Fsync != "" && c.Fsync != FsyncLocal && c.Fsync != FsyncReplica:
		return fmt.Errorf("--fsync: %q is not %s or %s", c.Fsync, FsyncLocal, FsyncReplica)
	case c.CacheBytes < 0:
		return errors.New("the cache size must not be negative")
	}
	return nil
}

// Serve mounts c.Volume at c.Mountpoint and serves it until it is
// unmounted (by anyone) or ctx ends (SIGINT, SIGTERM), then flushes,
// unmounts and closes it: everything written is durable when Serve returns
// nil. If the volume's lease is lost (another host took an S3 volume
// over) the mount stops at once without writing anything more and Serve
// returns an error saying so.
//
// The process calling Serve is the mount's keeper: it makes the mount and
// holds its FUSE connection, and a server process (this executable again,
// see server.go) answers it. A server that dies (killed, crashed) is
// replaced by a new one that takes the same connection over, so that the
// processes using the mount, and the kernel filesystems on images in it,
// only wait: see docs/fuse-restart.md.
//
// If ready is not nil, Serve writes "ready" to it once the mount answers,
// or "error: " and the error if it fails before that (the protocol Start
// reads), and closes it.
func Serve(ctx context.Context, c Config, ready io.WriteCloser) (err error) {
	if ready != nil {
		defer func() {
			if ready != nil {
				if err != nil {
					fmt.Fprintf(ready, "%s%v\n", readyError, err)
				}
				ready.Close()
			}
		}()
	}
	if err := c.check(); err != nil {
		return err
	}
	conn, err := fusefs.Attach(c.Mountpoint, fusefs.Options{})
	if err != nil {
		return err
	}
	defer conn.File.Close()
	logger := log.New(os.Stderr, "", log.LstdFlags)
	k := &keeper{c: c, conn: conn, logger: logger}
	if err := k.start(); err != nil {
		fusefs.Detach(conn.Mountpoint)
		return err
	}
	defer os.Remove(recordPath(conn.Mountpoint))
	if ready != nil {
		fmt.Fprintln(ready, readyOK)
		ready.Close()
		ready = nil
	}
	// A hangup (the terminal going away) must not kill a mount.
	signal.Ignore(syscall.SIGHUP)
	return k.run(ctx)
}

// keeper holds a mount's FUSE connection and keeps a server process
// answering it.
type keeper struct {
	c      Config
	conn   *fusefs.Conn
	logger *log.Logger

	init     []byte // the kernel's INIT, from the first server
	server   *exec.Cmd
	exited   chan error // the server's Wait
	restarts int
	// lastDeath is how the last server that was replaced ended, and
	// when: for Record.
	lastDeath   string
	lastDeathAt time.Time
}

// start starts a server process and waits until it answers the mount.
func (k *keeper) start() error {
	job := serverJob{Config: k.c, Dev: k.conn.Dev, Init: k.init}
	spec, err := json.Marshal(job)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"ohmfs-server", k.c.Mountpoint},
		Env:        append(os.Environ(), serverEnv+"="+string(spec)),
		Stdout:     os.Stderr,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{k.conn.File, w}, // descriptors 3 and 4
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the server of %s: %w", k.c.Mountpoint, err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(line, readyOK):
		if k.init == nil {
			init, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(line, readyOK)))
			if err != nil || len(init) == 0 {
				cmd.Process.Kill()
				<-exited
				return fmt.Errorf("the server of %s did not report the kernel's INIT", k.c.Mountpoint)
			}
			k.init = init
		}
	case strings.HasPrefix(line, readyError):
		<-exited
		return errors.New(strings.TrimPrefix(line, readyError))
	default:
		<-exited
		return fmt.Errorf("the server of %s exited before it answered", k.c.Mountpoint)
	}
	k.server, k.exited = cmd, exited
	rec := Record{PID: os.Getpid(), Server: cmd.Process.Pid, Restarts: k.restarts, LastDeath: k.lastDeath, LastDeathAt: k.lastDeathAt, Volume: k.c.Volume, Mountpoint: k.conn.Mountpoint}
	if _, err := writeRecord(rec); err != nil {
		k.logger.Printf("ohm: %v (ohm fs umount will not wait for this process)", err)
	}
	k.logger.Printf("ohm: serving %s at %s (keeper %d, server %d)", k.c.Volume, k.conn.Mountpoint, os.Getpid(), cmd.Process.Pid)
	return nil
}

// run waits for the server to end, replacing it while it dies and the
// mount is still there, and passes ctx's end on to it as SIGTERM.
func (k *keeper) run(ctx context.Context) error {
	stopping := false
	var recent []time.Time // the last deaths
	for {
		var err error
		select {
		case err = <-k.exited:
		case <-ctx.Done():
			if !stopping {
				stopping = true
				k.server.Process.Signal(syscall.SIGTERM)
			}
			err = <-k.exited
		}
		if err == nil {
			return nil // unmounted or signalled: flushed and closed
		}
		var ee *exec.ExitError
		if stopping || !errors.As(err, &ee) || !died(ee) {
			// A server that stops on its own with an error (the lease
			// is lost, the volume is broken) is not replaced.
			fusefs.Detach(k.conn.Mountpoint)
			return fmt.Errorf("serve %s: %w", k.conn.Mountpoint, err)
		}
		if _, ok, _ := fusefs.MountedAt(k.conn.Mountpoint); !ok {
			return fmt.Errorf("serve %s: the server %v and the mount is gone", k.conn.Mountpoint, err)
		}
		if recent = append(recent, time.Now()); len(recent) > maxDeaths {
			recent = recent[1:]
			if time.Since(recent[0]) < deathWindow {
				fusefs.Detach(k.conn.Mountpoint)
				return fmt.Errorf("serve %s: the server died %d times in %v (last: %w); not starting another", k.conn.Mountpoint, maxDeaths+1, deathWindow, err)
			}
		}
		k.restarts++
		k.lastDeath, k.lastDeathAt = err.Error(), time.Now().UTC()
		k.logger.Printf("ohm: the server of %s %v; starting another on the same connection", k.conn.Mountpoint, err)
		start := time.Now()
		if err := k.start(); err != nil {
			fusefs.Detach(k.conn.Mountpoint)
			return fmt.Errorf("restart the server of %s: %w", k.conn.Mountpoint, err)
		}
		k.logger.Printf("ohm: %s answers again after %v", k.conn.Mountpoint, time.Since(start).Round(time.Millisecond))
	}
}

// A server that dies more than maxDeaths times within deathWindow is
// not replaced again: something kills it as soon as it runs.
const (
	maxDeaths   = 5
	deathWindow = time.Minute
)

// died reports whether a server's exit was a death (a signal, a Go
// panic's exit status 2) rather than a decision of its own.
func died(ee *exec.ExitError) bool {
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && (ws.Signaled() || ws.ExitStatus() == 2)
}
