package mount

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/ohmfs/volume"
)

// A mount's server is this executable started again by the keeper (Serve)
// with serverEnv set: the init below turns it into the server before main
// runs, in the ohm binary and in test binaries alike. It gets the FUSE
// connection as descriptor 3 and reports on descriptor 4.

// serverEnv carries a server's job (serverJob as JSON).
const serverEnv = "OHM_MOUNT_SERVER"

// serverJob is what a server is told.
type serverJob struct {
	Config Config `json:"config"`
	Dev    uint64 `json:"dev"`
	// Init is the kernel's INIT as the first server got it; empty for
	// the first server, which answers the INIT itself.
	Init []byte `json:"init,omitempty"`
}

func init() {
	if s := os.Getenv(serverEnv); s != "" {
		os.Unsetenv(serverEnv) // not for the server's own helpers
		os.Exit(runServer(s))
	}
}

func runServer(spec string) int {
	var job serverJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fmt.Fprintf(os.Stderr, "ohm mount server: bad job: %v\n", err)
		return 1
	}
	ready := os.NewFile(4, "ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP)
	if err := serve(ctx, job, ready); err != nil {
		// An error before the server answered went to the keeper, which
		// reports it: printing it here too would say it twice.
		if !errors.As(err, new(keeperReported)) {
			fmt.Fprintf(os.Stderr, "ohm: %v\n", err)
		}
		return 1
	}
	return 0
}

// keeperReported is an error the server sent to its keeper over the ready
// pipe, for the keeper to report.
type keeperReported struct{ error }

func (e keeperReported) Unwrap() error { return e.error }

// serve answers the connection on descriptor 3 until the mount is gone or
// ctx ends, reporting on ready (and closing it) once it answers.
func serve(ctx context.Context, job serverJob, ready *os.File) (err error) {
	defer func() {
		if ready != nil {
			if err != nil {
				fmt.Fprintf(ready, "%s%v\n", readyError, err)
				err = keeperReported{err}
			}
			ready.Close()
		}
	}()
	c := job.Config
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
	var init []byte
	if len(job.Init) > 0 {
		init = job.Init
	}
	m, err := fusefs.Resume(bg, vol, mp, job.Dev, 3, init, fopts)
	if err != nil {
		vol.Close(bg)
		return err
	}
	fmt.Fprintf(ready, "%s %s\n", readyOK, base64.StdEncoding.EncodeToString(m.KernelInit()))
	ready.Close()
	ready = nil
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
