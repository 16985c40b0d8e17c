// Package bench measures the same work on two directories, one on ext4 and
// one on an ohmfs mount on the same disk, and reports the ratios against
// the targets of DESIGN.md section 6: sequential write and read in 1 MiB
// blocks, create/stat/unlink of many small files, and a real source tree
// (copy the Go toolchain in, build the standard library, git add and commit
// it, delete it all).
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Options size the work.
type Options struct {
	SeqSize    int64  // bytes for the sequential write and read
	SmallFiles int    // files for create/stat/unlink
	SmallSize  int    // bytes per small file
	TreeSrc    string // the tree to copy in; "" skips the tree workload
	BuildStd   bool   // build the standard library with the copied toolchain (TreeSrc must be a Go root)
	Log        io.Writer
}

// DefaultOptions are the sizes of issue 2: 4 GiB, 20,000 files of 4 KiB,
// the Go toolchain at /usr/local/go.
func DefaultOptions() Options {
	return Options{SeqSize: 4 << 30, SmallFiles: 20000, SmallSize: 4096, TreeSrc: "/usr/local/go", BuildStd: true}
}

// Target is a DESIGN.md section 6 target, as the largest ohmfs/ext4 time
// ratio it allows.
type Target struct {
	Text     string  // as DESIGN.md states it
	MaxRatio float64 // ohmfs time / ext4 time
}

// Step is one measured piece of work.
type Step struct {
	Name   string
	Target Target
	// Bytes, if set, lets the report show a throughput.
	Bytes int64
}

// Result is one step measured on both filesystems.
type Result struct {
	Step
	Ext4, Ohmfs time.Duration
	// Failed says why a step did not complete on ohmfs (its time is then
	// meaningless); the steps after it in its workload are not run.
	Failed string
}

// Ratio is ohmfs's time over ext4's.
func (r Result) Ratio() float64 {
	if r.Ext4 <= 0 {
		return 0
	}
	return float64(r.Ohmfs) / float64(r.Ext4)
}

// Met reports whether the ratio is within the target.
func (r Result) Met() bool {
	return r.Failed == "" && (r.Target.MaxRatio == 0 || r.Ratio() <= r.Target.MaxRatio)
}

var (
	targetWrite = Target{">= 0.7 of ext4's throughput", 1 / 0.7}
	targetRead  = Target{">= 0.8 of ext4's throughput", 1 / 0.8}
	targetSmall = Target{">= 0.5 of ext4's rate", 1 / 0.5}
	targetTree  = Target{"<= 1.3x ext4's time", 1.3}
)

// FS is one side of the comparison: a directory to work in and a way to
// make the next read cold.
type FS struct {
	Name string
	Dir  string
	// Cold empties the caches between the write and the read: dropping the
	// kernel's page cache, and for ohmfs also remounting.
	Cold func(ctx context.Context) error
}

// Compare runs every step on ext4, then on ohmfs (each workload on one and
// then the other, so that both see the same machine state), and returns the
// results in order.
func Compare(ctx context.Context, ext4, ohmfs FS, opts Options) ([]Result, error) {
	var results []Result
	type workload func(ctx context.Context, fs FS, opts Options) ([]Step, []time.Duration, error)
	for _, w := range []workload{sequential, smallFiles, tree} {
		steps, ext4Times, err := w(ctx, ext4, opts)
		if err != nil {
			return results, fmt.Errorf("%s: %w", ext4.Name, err)
		}
		_, ohmTimes, ohmErr := w(ctx, ohmfs, opts)
		for i, s := range steps {
			r := Result{Step: s, Ext4: ext4Times[i]}
			switch {
			case i < len(ohmTimes):
				r.Ohmfs = ohmTimes[i]
			case i == len(ohmTimes) && ohmErr != nil:
				r.Failed = ohmErr.Error()
			default:
				r.Failed = "not run: an earlier step failed"
			}
			results = append(results, r)
		}
		if ohmErr != nil {
			logf(opts, "  %s: %v", ohmfs.Name, ohmErr)
			ohmfs.cleanup()
		}
	}
	return results, nil
}

func logf(opts Options, format string, args ...any) {
	if opts.Log != nil {
		fmt.Fprintf(opts.Log, format+"\n", args...)
	}
}

func timed(opts Options, fs FS, what string, f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %w", what, err)
	}
	logf(opts, "  %-6s %-40s %8.2fs", fs.Name, what, d.Seconds())
	return d, nil
}

// DropCaches writes back dirty data and drops the kernel's page, dentry and
// inode caches (needs root).
func DropCaches() error {
	if err := exec.Command("sync").Run(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// sequential writes SeqSize bytes in 1 MiB blocks with a final fsync, makes
// the caches cold, and reads it back in 1 MiB blocks.
func sequential(ctx context.Context, fs FS, opts Options) ([]Step, []time.Duration, error) {
	if opts.SeqSize <= 0 {
		return nil, nil, nil
	}
	const block = 1 << 20
	// Random data, so that compression cannot help, and each block made
	// distinct, so that nothing can deduplicate it.
	pattern := make([]byte, 16<<20)
	if _, err := readFull(pattern); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(fs.Dir, "seq")
	size := fmt.Sprintf("%d MiB", opts.SeqSize>>20)
	steps := []Step{
		{Name: "sequential write " + size + ", 1 MiB blocks, fsync", Target: targetWrite, Bytes: opts.SeqSize},
		{Name: "sequential read " + size + ", 1 MiB blocks, cold", Target: targetRead, Bytes: opts.SeqSize},
	}
	var times []time.Duration
	d, err := timed(opts, fs, steps[0].Name, func() error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for off, i := int64(0), 0; off < opts.SeqSize; off, i = off+block, i+1 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b := pattern[(i%16)*block : (i%16+1)*block]
			putUint64(b, uint64(i))
			n := min(int64(block), opts.SeqSize-off)
			if _, err := f.Write(b[:n]); err != nil {
				return err
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	})
	if err != nil {
		return nil, nil, err
	}
	times = append(times, d)
	if fs.Cold != nil {
		if err := fs.Cold(ctx); err != nil {
			return nil, nil, fmt.Errorf("make the caches cold: %w", err)
		}
	}
	d, err = timed(opts, fs, steps[1].Name, func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, block)
		var total int64
		for {
			n, err := f.Read(buf)
			total += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if total != opts.SeqSize {
			return fmt.Errorf("read %d bytes, wrote %d", total, opts.SeqSize)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	times = append(times, d)
	return steps, times, os.Remove(path)
}

func putUint64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func readFull(b []byte) (int, error) {
	f, err := os.Open("/dev/urandom")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.ReadFull(f, b)
}

// smallFiles creates SmallFiles files of SmallSize bytes, stats each, and
// unlinks each, timing the three phases.
func smallFiles(ctx context.Context, fs FS, opts Options) ([]Step, []time.Duration, error) {
	if opts.SmallFiles <= 0 {
		return nil, nil, nil
	}
	dir := filepath.Join(fs.Dir, "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, err
	}
	data := make([]byte, opts.SmallSize)
	readFull(data)
	name := func(i int) string { return filepath.Join(dir, fmt.Sprintf("f%06d", i)) }
	n := opts.SmallFiles
	steps := []Step{
		{Name: fmt.Sprintf("create %d files of %d KiB", n, opts.SmallSize>>10), Target: targetSmall},
		{Name: fmt.Sprintf("stat %d files", n), Target: targetSmall},
		{Name: fmt.Sprintf("unlink %d files", n), Target: targetSmall},
	}
	phases := []func(i int) error{
		func(i int) error { return os.WriteFile(name(i), data, 0o644) },
		func(i int) error { _, err := os.Stat(name(i)); return err },
		func(i int) error { return os.Remove(name(i)) },
	}
	var times []time.Duration
	for p, phase := range phases {
		d, err := timed(opts, fs, steps[p].Name, func() error {
			for i := 0; i < n; i++ {
				if err := phase(i); err != nil {
					return err
				}
			}
			return ctx.Err()
		})
		if err != nil {
			return steps, times, err
		}
		times = append(times, d)
	}
	var total time.Duration
	for _, d := range times {
		total += d
	}
	steps = append(steps, Step{Name: fmt.Sprintf("create + stat + unlink of %d files", n), Target: targetSmall})
	times = append(times, total)
	return steps, times, os.Remove(dir)
}

// tree copies TreeSrc in with cp -a, builds the standard library with the
// copied toolchain and GOCACHE beside it, commits the tree to a new git
// repository, and deletes everything.
func tree(ctx context.Context, fs FS, opts Options) ([]Step, []time.Duration, error) {
	if opts.TreeSrc == "" {
		return nil, nil, nil
	}
	work := filepath.Join(fs.Dir, "tree")
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, nil, err
	}
	dst := filepath.Join(work, filepath.Base(opts.TreeSrc))
	run := func(dir string, env []string, name string, args ...string) func() error {
		return func() error {
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v\n%s", name, err, out)
			}
			return nil
		}
	}
	gitEnv := []string{"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@ohm", "GIT_COMMITTER_NAME=bench",
		"GIT_COMMITTER_EMAIL=bench@ohm", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		// 15,000 loose objects trip `git gc --auto`, which then runs
		// detached and races the rm -rf of the next step on either
		// filesystem; the bench measures the commit, not a background gc.
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0"}
	type part struct {
		step Step
		f    func() error
	}
	parts := []part{{Step{Name: "copy the tree in (cp -a " + opts.TreeSrc + ")", Target: targetTree}, run(work, nil, "cp", "-a", opts.TreeSrc, dst)}}
	if opts.BuildStd {
		goEnv := []string{"GOCACHE=" + filepath.Join(work, "gocache"), "GOROOT=" + dst, "GOFLAGS=", "GOTOOLCHAIN=local"}
		parts = append(parts, part{Step{Name: "go build std (GOCACHE in the tree)", Target: targetTree}, run(dst, goEnv, filepath.Join(dst, "bin", "go"), "build", "std")})
	}
	parts = append(parts,
		part{Step{Name: "git init && git add -A && git commit", Target: targetTree}, func() error {
			for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "tree"}} {
				if err := run(dst, gitEnv, "git", args...)(); err != nil {
					return err
				}
			}
			return nil
		}},
		part{Step{Name: "delete it all (rm -rf)", Target: targetTree}, run(fs.Dir, nil, "rm", "-rf", work)},
	)
	var steps []Step
	var times []time.Duration
	var total time.Duration
	for _, p := range parts {
		d, err := timed(opts, fs, p.step.Name, p.f)
		if err != nil {
			return steps, times, err
		}
		steps = append(steps, p.step)
		times = append(times, d)
		total += d
	}
	steps = append(steps, Step{Name: "the real tree, all steps", Target: targetTree})
	times = append(times, total)
	return steps, times, nil
}

// cleanup removes what a failed workload left in the directory, so that the
// next workload starts from an empty one.
func (fs FS) cleanup() {
	ents, _ := os.ReadDir(fs.Dir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(fs.Dir, e.Name()))
	}
}
