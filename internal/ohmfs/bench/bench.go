// Package bench measures the same agent work on several directories, one
// on ext4 and the others on ohmfs layouts on the same disk (an ohmfs FUSE
// mount, and kernel filesystems on ohmfs device images), and reports each
// step's time as a ratio to ext4's from the same run: a sequential write
// and cold read, many small files, and the work an agent does in a
// workspace (untar a source tree, git clone, edit and commit, npm ci with
// a warm cache, go build, SQLite commits, rm -rf). For the ohmfs layouts it
// also reports write amplification (bytes the storage stored per byte the
// work wrote) and, where asked, the FUSE requests and block flushes a step
// cost.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options size the work.
type Options struct {
	SeqSize    int64 // bytes for the sequential write and read; 0 skips them
	SmallFiles int   // files for create/stat/unlink; 0 skips them
	SmallSize  int   // bytes per small file
	// SQLiteCommits is the number of one-row transactions of the SQLite
	// step; 0 skips it.
	SQLiteCommits int
	// EditFiles is how many files the edit-and-commit step changes.
	EditFiles int
	// Inputs are the prepared inputs of the agent steps; a step whose
	// input is missing is skipped.
	Inputs Inputs
	// Only, if not empty, runs only these parts of the work: seq, small,
	// untar, clone (with the edit and commit), npm, build, sqlite.
	Only []string
	Log  io.Writer
}

// DefaultOptions are the sizes of the agent table: 2 GiB sequential,
// 20,000 files of 4 KiB, 1,000 SQLite commits, 300 edited files.
func DefaultOptions() Options {
	return Options{SeqSize: 2 << 30, SmallFiles: 20000, SmallSize: 4096, SQLiteCommits: 1000, EditFiles: 300}
}

// runs reports whether part is to be run.
func (o Options) runs(part string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, p := range o.Only {
		if p == part {
			return true
		}
	}
	return false
}

// Target is the largest time ratio to ext4 a step may take.
type Target struct {
	Text     string  // as docs/contracts.md states it
	MaxRatio float64 // time / ext4's time
}

var (
	targetWrite  = Target{"<= 1.3x ext4's time", 1.3}
	targetRead   = Target{"<= 1.3x ext4's time", 1.3}
	targetSmall  = Target{"<= 1.3x ext4's time", 1.3}
	targetAgent  = Target{"<= 1.3x ext4's time", 1.3}
	targetFsync  = Target{"<= 2x ext4's time", 2}
	targetDelete = Target{"<= 1.3x ext4's time", 1.3}
)

// Step is one measured piece of work.
type Step struct {
	Name   string
	Target Target
	// Bytes, if set, lets the report show a throughput.
	Bytes int64
	// Per, if set, is how many operations the step does (SQLite commits):
	// the report divides the step's FUSE requests by it.
	Per int
	// Trace asks for the step's FUSE requests and block requests to be
	// counted on the layouts that can (it costs a little time).
	Trace bool
}

// FS is one column of the comparison: a directory to work in.
type FS struct {
	Name string
	Dir  string
	// Cold empties the caches before the cold read: dropping the kernel's
	// page cache, and for ohmfs layouts remounting too.
	Cold func(ctx context.Context) error
	// Stored, if set, reports the bytes the layout's storage has stored
	// so far (for write amplification).
	Stored func() (uint64, error)
	// Targets, if set, names what traced steps count the requests of:
	// the FUSE connection (the minor of the ohmfs mount's device) and the
	// loop device (its device number); 0 for none. A function, because a
	// remount makes a new connection.
	Targets func() (fuseConn uint32, blockDev uint64)
}

// Result is one step measured on every FS.
type Result struct {
	Step
	// Times, Failed, Stored and Requests are per FS, in the order given.
	Times []time.Duration
	// Failed says why a step did not complete on an FS (its time is then
	// meaningless); the steps after it in its workload are not run there.
	Failed []string
	// Stored is the bytes the FS's storage stored during the step (0 if
	// it does not say).
	Stored []uint64
	// Requests counts the FUSE requests (by opcode, e.g. "WRITE") and the
	// loop device's block requests (by kind, "block flush", "block write")
	// during a traced step; nil where not traced.
	Requests []map[string]uint64
	// Written is the bytes the work wrote on the baseline (the first FS):
	// what write amplification is measured against.
	Written uint64
}

// Ratio is FS i's time over the baseline's.
func (r Result) Ratio(i int) float64 {
	if r.Times[0] <= 0 || r.Failed[i] != "" {
		return 0
	}
	return float64(r.Times[i]) / float64(r.Times[0])
}

// Met reports whether FS i is within the target.
func (r Result) Met(i int) bool {
	return r.Failed[i] == "" && (r.Target.MaxRatio == 0 || r.Ratio(i) <= r.Target.MaxRatio)
}

// Amplification is FS i's bytes stored per byte written, 0 when unknown.
func (r Result) Amplification(i int) float64 {
	if r.Written == 0 || r.Stored[i] == 0 {
		return 0
	}
	return float64(r.Stored[i]) / float64(r.Written)
}

// workload is a sequence of steps run in one directory. run runs step i
// and returns how long it took; setup and cleanup are not timed.
type workload interface {
	steps(opts Options) []Step
	// setup prepares fs for step i (untimed).
	setup(ctx context.Context, fs FS, i int) error
	// run does step i, timed.
	run(ctx context.Context, fs FS, i int) error
	// cleanup empties dir after a failure.
	cleanup(dir string)
}

// Compare runs every workload on each FS in turn (each workload on one and
// then the next, so that all see the same machine state) and returns the
// results in order. The first FS is the baseline.
func Compare(ctx context.Context, fss []FS, opts Options) ([]Result, error) {
	if len(fss) == 0 {
		return nil, fmt.Errorf("no filesystems to compare")
	}
	tr := newTracer()
	defer tr.close()
	var results []Result
	workloads := []workload{
		sequential{size: opts.SeqSize * b2i(opts.runs("seq"))},
		smallFiles{n: opts.SmallFiles * int(b2i(opts.runs("small"))), size: opts.SmallSize},
		&agent{opts: opts},
	}
	for _, w := range workloads {
		steps := w.steps(opts)
		if len(steps) == 0 {
			continue
		}
		first := len(results)
		for _, s := range steps {
			n := len(fss)
			results = append(results, Result{Step: s, Times: make([]time.Duration, n), Failed: make([]string, n),
				Stored: make([]uint64, n), Requests: make([]map[string]uint64, n)})
		}
		for fi, fs := range fss {
			failed := ""
			for si := range steps {
				r := &results[first+si]
				if failed != "" {
					r.Failed[fi] = "not run: an earlier step failed"
					continue
				}
				if err := w.setup(ctx, fs, si); err != nil {
					failed = fmt.Sprintf("setup: %v", err)
					r.Failed[fi] = failed
					continue
				}
				before, _ := stored(fs)
				io0 := ioWritten()
				var trace *traceRun
				if r.Trace {
					trace = tr.start(fs)
				}
				start := time.Now()
				err := w.run(ctx, fs, si)
				d := time.Since(start)
				if trace != nil {
					r.Requests[fi] = trace.stop()
				}
				if err != nil {
					failed = err.Error()
					r.Failed[fi] = failed
					logf(opts, "  %-12s %-48s FAILED: %v", fs.Name, r.Name, err)
					continue
				}
				r.Times[fi] = d
				logf(opts, "  %-12s %-48s %8.2fs", fs.Name, r.Name, d.Seconds())
				// Untimed: what the step left in caches reaches the
				// storage, so that its bytes count against it.
				syncFS(fs.Dir)
				if fi == 0 {
					r.Written = ioWritten() - io0
				}
				if after, ok := stored(fs); ok {
					r.Stored[fi] = after - before
				}
				if ctx.Err() != nil {
					return results, ctx.Err()
				}
			}
			if failed != "" {
				w.cleanup(fs.Dir)
			}
		}
	}
	return results, nil
}

func stored(fs FS) (uint64, bool) {
	if fs.Stored == nil {
		return 0, false
	}
	n, err := fs.Stored()
	return n, err == nil
}

func logf(opts Options, format string, args ...any) {
	if opts.Log != nil {
		fmt.Fprintf(opts.Log, format+"\n", args...)
	}
}

// ioWritten is the bytes this process and its finished children have
// written so far (the kernel's write_bytes: what they dirtied for the
// storage below the page cache).
func ioWritten() uint64 {
	var self uint64
	if b, err := os.ReadFile("/proc/self/io"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
				self, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_CHILDREN, &ru)
	return self + uint64(ru.Oublock)*512
}

// syncFS writes back the dirty data of the filesystem holding dir (syncfs).
func syncFS(dir string) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Syncfs(fd)
	unix.Close(fd)
}

// DropCaches writes back dirty data and drops the kernel's page, dentry and
// inode caches (needs root).
func DropCaches() error {
	if err := exec.Command("sync").Run(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
