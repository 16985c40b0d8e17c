// Package mount runs the life of an ohmfs mount as processes: serving a
// volume at a mountpoint until it is unmounted or signalled (Serve),
// serving it from a detached process that outlives the caller (Start), the
// records under /run/ohm/mounts that name the process serving each
// mountpoint, and unmounting that waits until the process has made
// everything durable and exited (Unmount).
//
// `ohm fs mount` and `ohm fs umount` only parse their flags into a Config
// and call this package; a detached mount is `ohm fs mount` run again in
// the foreground by Start, in a session of its own.
package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/ohmfs/volume"
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

// Serve mounts c.Volume at c.Mountpoint in this process and serves it
// until it is unmounted (by anyone) or ctx ends (SIGINT, SIGTERM), then
// flushes, unmounts and closes it: everything written is durable when
// Serve returns nil. If the volume's lease is lost (another host took an
// S3 volume over) it stops at once without writing anything more and
// returns an error saying so.
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
	if c.CPUProfile != "" {
		pf, err := os.Create(c.CPUProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			pf.Close()
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	mp := c.Mountpoint

	// The volume and the mount outlive ctx, which ends on SIGTERM: that
	// is when they must still flush.
	bg := context.WithoutCancel(ctx)
	vol, err := volume.Open(bg, c.Volume, volume.OpenOptions{Mountpoint: mp, CacheBytes: c.CacheBytes, CacheDir: c.CacheDir})
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	fopts := fusefs.Options{Debug: c.Debug, NoWritebackCache: c.NoWritebackCache, Logger: logger}
	fopts.VFS.Reserve = c.Reserve
	if c.Fsync == FsyncReplica {
		// vfs has committed the change locally when this runs: Flush
		// ships everything committed so far.
		fopts.AfterFsync = vol.Replica.Flush
		// A device image's flush is otherwise durable in its local
		// write-ahead log only: fold it into the store first.
		fopts.VFS.FsyncToStore = true
	}
	m, err := fusefs.Mount(bg, vol, mp, fopts)
	if err != nil {
		vol.Close(bg)
		return err
	}
	mp = m.Mountpoint()
	recPath, err := writeRecord(Record{PID: os.Getpid(), Volume: c.Volume, Mountpoint: mp})
	if err != nil {
		logger.Printf("ohm: %v (ohm fs umount will not wait for this process)", err)
	}
	defer os.Remove(recPath)
	logger.Printf("ohm: serving %s at %s (pid %d)", c.Volume, mp, os.Getpid())
	if ready != nil {
		fmt.Fprintln(ready, readyOK)
		ready.Close()
		ready = nil
	}

	// A hangup (the terminal going away) must not kill a mount.
	signal.Ignore(syscall.SIGHUP)
	select {
	case <-m.Done():
		logger.Printf("ohm: %s was unmounted; closing the volume", mp)
	case <-ctx.Done():
		logger.Printf("ohm: signalled; flushing and unmounting %s", mp)
	case <-vol.LeaseLost: // nil (never) for a file volume
		// Another host may own the volume now: write nothing more, not
		// even the last commit. The local lock goes with the process.
		if err := m.Abort(); err != nil {
			logger.Printf("ohm: %v", err)
		}
		return fmt.Errorf("lost the lease of %s (another host took it over, or it could not be renewed in time): stopped serving %s without writing anything more", c.Volume, mp)
	}
	var errs []error
	if err := m.Close(bg); err != nil {
		errs = append(errs, err)
	}
	if err := vol.Close(bg); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	logger.Printf("ohm: %s closed cleanly", c.Volume)
	return nil
}
