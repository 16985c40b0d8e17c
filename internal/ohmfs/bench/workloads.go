package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// sequential writes SeqSize bytes in 1 MiB blocks with a final fsync,
// makes the caches cold, and reads it back in 1 MiB blocks.
type sequential struct{ size int64 }

func (w sequential) steps(opts Options) []Step {
	if w.size <= 0 {
		return nil
	}
	size := sizeName(w.size)
	return []Step{
		{Name: size + " write + fsync", Target: targetWrite, Bytes: w.size},
		{Name: size + " cold read", Target: targetRead, Bytes: w.size},
	}
}

func sizeName(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// setup makes the caches cold before the read.
func (sequential) setup(ctx context.Context, fs FS, i int) error {
	if i == 1 && fs.Cold != nil {
		if err := fs.Cold(ctx); err != nil {
			return fmt.Errorf("make the caches cold: %w", err)
		}
	}
	return nil
}

func (sequential) cleanup(dir string) { os.Remove(filepath.Join(dir, "seq")) }

const seqBlock = 1 << 20

func (w sequential) run(ctx context.Context, fs FS, i int) error {
	path := filepath.Join(fs.Dir, "seq")
	if i == 0 {
		// Random data, so that compression cannot help, and each block
		// made distinct, so that nothing can deduplicate it.
		pattern := make([]byte, 16*seqBlock)
		if err := readRandom(pattern); err != nil {
			return err
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for off, i := int64(0), 0; off < w.size; off, i = off+seqBlock, i+1 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b := pattern[(i%16)*seqBlock : (i%16+1)*seqBlock]
			putUint64(b, uint64(i))
			n := min(int64(seqBlock), w.size-off)
			if _, err := f.Write(b[:n]); err != nil {
				return err
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}
	return readBack(path, w.size)
}

func readBack(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, seqBlock)
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
	if total != size {
		return fmt.Errorf("read %d bytes, wrote %d", total, size)
	}
	return os.Remove(path)
}

func putUint64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func readRandom(b []byte) error {
	f, err := os.Open("/dev/urandom")
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.ReadFull(f, b)
	return err
}

// smallFiles creates SmallFiles files of SmallSize bytes, stats each, and
// unlinks each: one step.
type smallFiles struct{ n, size int }

func (w smallFiles) steps(opts Options) []Step {
	if w.n <= 0 {
		return nil
	}
	return []Step{{Name: fmt.Sprintf("%s x %s create, stat, unlink", thousands(w.n), byteName(w.size)), Target: targetSmall}}
}

func byteName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func (smallFiles) setup(ctx context.Context, fs FS, i int) error {
	return os.Mkdir(filepath.Join(fs.Dir, "small"), 0o755)
}

func (smallFiles) cleanup(dir string) { os.RemoveAll(filepath.Join(dir, "small")) }

func (w smallFiles) run(ctx context.Context, fs FS, _ int) error {
	dir := filepath.Join(fs.Dir, "small")
	data := make([]byte, w.size)
	readRandom(data)
	name := func(i int) string { return filepath.Join(dir, fmt.Sprintf("f%06d", i)) }
	for _, phase := range []func(i int) error{
		func(i int) error { return os.WriteFile(name(i), data, 0o644) },
		func(i int) error { _, err := os.Stat(name(i)); return err },
		func(i int) error { return os.Remove(name(i)) },
	} {
		for i := 0; i < w.n; i++ {
			if err := phase(i); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return os.Remove(dir)
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// agent is the work an agent does in a workspace, in one directory: untar
// a source tree, clone a repository, edit and commit, npm ci, go build,
// SQLite commits, and delete it all. A step whose input is missing is
// left out.
type agent struct {
	opts  Options
	parts []agentStep
}

type agentStep struct {
	step  Step
	setup func(ctx context.Context, work string) error
	run   func(ctx context.Context, work string) error
}

// workDir is the agent workload's directory in an FS's directory.
func workDir(dir string) string { return filepath.Join(dir, "work") }

func (a *agent) steps(opts Options) []Step {
	in := opts.Inputs
	var parts []agentStep
	if in.GoTar != "" && opts.runs("untar") {
		parts = append(parts, agentStep{
			step: Step{Name: "untar the Go source tree", Target: targetAgent},
			setup: func(ctx context.Context, work string) error {
				return os.MkdirAll(filepath.Join(work, "go"), 0o755)
			},
			run: func(ctx context.Context, work string) error {
				return command(ctx, work, nil, "tar", "-xf", in.GoTar, "-C", filepath.Join(work, "go"))
			},
		})
	}
	if in.GitRepo != "" && opts.runs("clone") {
		name := "git clone of a real repository"
		if in.GitRepoBytes > 0 {
			name = fmt.Sprintf("git clone of a %d MB repository", (in.GitRepoBytes+500_000)/1_000_000)
		}
		parts = append(parts, agentStep{
			step: Step{Name: name, Target: targetAgent},
			run: func(ctx context.Context, work string) error {
				// --no-local: a real clone (pack, index, checkout), not
				// hard links into the source on the same filesystem.
				return command(ctx, work, gitEnv, "git", "clone", "-q", "--no-local", in.GitRepo, "repo")
			},
		})
		edit := opts.EditFiles
		parts = append(parts, agentStep{
			step: Step{Name: fmt.Sprintf("edit %d files, git add + commit", edit), Target: targetAgent},
			run: func(ctx context.Context, work string) error {
				return editAndCommit(ctx, filepath.Join(work, "repo"), edit)
			},
		})
	}
	if in.NpmProject != "" && in.NpmCache != "" && opts.runs("npm") {
		name := "npm ci, warm cache"
		if in.NpmPackages > 0 {
			name = fmt.Sprintf("npm ci, %d packages, warm cache", in.NpmPackages)
		}
		parts = append(parts, agentStep{
			step: Step{Name: name, Target: targetAgent},
			setup: func(ctx context.Context, work string) error {
				dst := filepath.Join(work, "npm")
				if err := os.MkdirAll(dst, 0o755); err != nil {
					return err
				}
				for _, f := range []string{"package.json", "package-lock.json"} {
					b, err := os.ReadFile(filepath.Join(in.NpmProject, f))
					if err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
						return err
					}
				}
				return nil
			},
			run: func(ctx context.Context, work string) error {
				return command(ctx, filepath.Join(work, "npm"), []string{"npm_config_update_notifier=false"},
					"npm", "ci", "--offline", "--cache", in.NpmCache, "--no-audit", "--no-fund", "--loglevel=error")
			},
		})
	}
	if in.Module != "" && in.GoRoot != "" && opts.runs("build") {
		parts = append(parts, agentStep{
			step: Step{Name: "go build of a real module, GOCACHE in the dir", Target: targetAgent},
			setup: func(ctx context.Context, work string) error {
				return command(ctx, work, nil, "cp", "-a", in.Module, filepath.Join(work, "module"))
			},
			run: func(ctx context.Context, work string) error {
				env := []string{"GOCACHE=" + filepath.Join(work, "gocache"), "GOROOT=" + in.GoRoot, "GOFLAGS=-mod=mod",
					"GOTOOLCHAIN=local", "GOPROXY=off", "CGO_ENABLED=0", "GOTELEMETRY=off"}
				if in.GoModCache != "" {
					env = append(env, "GOMODCACHE="+in.GoModCache)
				}
				return command(ctx, filepath.Join(work, "module"), env, filepath.Join(in.GoRoot, "bin", "go"), "build", "./...")
			},
		})
	}
	if opts.SQLiteCommits > 0 && opts.runs("sqlite") {
		n := opts.SQLiteCommits
		parts = append(parts, agentStep{
			step: Step{Name: fmt.Sprintf("%s SQLite inserts, one commit (fsync) each", thousands(n)), Target: targetFsync, Per: n, Trace: true},
			run: func(ctx context.Context, work string) error {
				return command(ctx, work, nil, "python3", "-c", sqliteScript, filepath.Join(work, "bench.db"), fmt.Sprint(n))
			},
		})
	}
	if len(parts) == 0 {
		return nil
	}
	parts = append(parts, agentStep{
		step: Step{Name: "rm -rf of it all", Target: targetDelete},
		run: func(ctx context.Context, work string) error {
			return command(ctx, filepath.Dir(work), nil, "rm", "-rf", work)
		},
	})
	a.parts = parts
	steps := make([]Step, len(parts))
	for i, p := range parts {
		steps[i] = p.step
	}
	return steps
}

func (a *agent) setup(ctx context.Context, fs FS, i int) error {
	work := workDir(fs.Dir)
	if i == 0 {
		if err := os.Mkdir(work, 0o755); err != nil {
			return err
		}
	}
	if s := a.parts[i].setup; s != nil {
		return s(ctx, work)
	}
	return nil
}

func (a *agent) run(ctx context.Context, fs FS, i int) error {
	return a.parts[i].run(ctx, workDir(fs.Dir))
}

func (a *agent) cleanup(dir string) { os.RemoveAll(workDir(dir)) }

// sqliteScript makes a table and inserts one row per transaction, each
// commit an fsync (SQLite's default rollback journal, synchronous=FULL).
const sqliteScript = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("create table t (id integer primary key, v text)")
for i in range(int(sys.argv[2])):
    db.execute("begin")
    db.execute("insert into t (v) values (?)", ("x" * 100,))
    db.execute("commit")
db.close()
`

// gitEnv keeps the user's and the system's git configuration out, and
// `git gc --auto` (which would run detached and race the next step).
var gitEnv = []string{"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@ohm", "GIT_COMMITTER_NAME=bench",
	"GIT_COMMITTER_EMAIL=bench@ohm", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0"}

// editAndCommit appends a line to n files of the repository (spread over
// its tree, the same ones every run), then git add -A and git commit.
func editAndCommit(ctx context.Context, repo string, n int) error {
	var files []string
	err := filepath.WalkDir(repo, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no files in %s", repo)
	}
	sort.Strings(files)
	stride := max(len(files)/n, 1)
	for i := 0; i < n && i*stride < len(files); i++ {
		f, err := os.OpenFile(files[i*stride], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(f, "\n// edited by ohm bench %d\n", i)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if err := command(ctx, repo, gitEnv, "git", "add", "-A"); err != nil {
		return err
	}
	return command(ctx, repo, gitEnv, "git", "commit", "-q", "-m", "edit")
}

// command runs name in dir with env added, failing with its output.
func command(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, lastLines(string(out), 10))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
