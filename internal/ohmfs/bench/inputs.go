package bench

import (
	"archive/zip"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Inputs are the warm inputs of the agent steps, prepared once outside the
// measured directories and reused by every run.
type Inputs struct {
	GoTar        string // a tarball of a Go tree (untar)
	GitRepo      string // a bare repository with history (clone, edit + commit)
	GitRepoBytes int64  // its size once cloned: checkout and .git
	NpmProject   string // a directory with package.json and package-lock.json (npm ci)
	NpmCache     string // the npm cache that makes npm ci work offline
	NpmPackages  int    // packages in the lockfile
	Module       string // a Go module's tree (go build), copied in untimed
	GoModCache   string // its dependencies, read-only
	GoRoot       string // the Go toolchain that builds it
}

//go:embed npm/package.json npm/package-lock.json
var npmProject embed.FS

// PrepareOptions say where the inputs come from.
type PrepareOptions struct {
	// GoRoot is the Go toolchain whose tree is untarred and which builds
	// the module (default /usr/local/go).
	GoRoot string
	// Module is a Go module to build: a git checkout (its HEAD is
	// archived) or a plain tree; "" skips the go build step.
	Module string
	// RepoModule and RepoVersions name the module whose releases, from
	// the Go module proxy, become the commits of the git repository the
	// clone step clones: a real project's real history, one commit per
	// release. Default: four Kubernetes releases (about 100 MB cloned).
	RepoModule   string
	RepoVersions []string
	Log          func(format string, args ...any)
}

// DefaultRepoModule and DefaultRepoVersions are the clone step's
// repository: Kubernetes (8,000 files, 84 MB a release).
const DefaultRepoModule = "k8s.io/kubernetes"

// DefaultRepoVersions are the releases committed, oldest first.
var DefaultRepoVersions = []string{"v1.29.0", "v1.30.0", "v1.31.0", "v1.32.0"}

// PrepareInputs makes the inputs in dir, or reuses those an earlier run
// made. A fresh machine needs the Go module proxy (the repository's
// releases, the module's dependencies), the npm registry (the cache, once)
// and Debian's git, tar, npm and python3.
func PrepareInputs(ctx context.Context, dir string, opts PrepareOptions) (Inputs, error) {
	if opts.GoRoot == "" {
		opts.GoRoot = "/usr/local/go"
	}
	if opts.RepoModule == "" {
		opts.RepoModule, opts.RepoVersions = DefaultRepoModule, DefaultRepoVersions
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Inputs{}, err
	}
	in := Inputs{GoRoot: opts.GoRoot}
	goBin := filepath.Join(opts.GoRoot, "bin", "go")
	modcache := filepath.Join(dir, "gomodcache")
	goEnv := []string{"GOMODCACHE=" + modcache, "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "GOTELEMETRY=off"}

	// The Go tree, as a tarball.
	in.GoTar = filepath.Join(dir, "go.tar")
	if !exists(in.GoTar) {
		logf("bench: tar %s into %s", opts.GoRoot, in.GoTar)
		if err := command(ctx, dir, nil, "tar", "-cf", in.GoTar+".tmp", "-C", filepath.Dir(opts.GoRoot), filepath.Base(opts.GoRoot)); err != nil {
			return in, err
		}
		if err := os.Rename(in.GoTar+".tmp", in.GoTar); err != nil {
			return in, err
		}
	}

	// The repository: one commit per release of RepoModule.
	in.GitRepo = filepath.Join(dir, "repo.git")
	sizeFile := filepath.Join(dir, "repo.size")
	if !exists(in.GitRepo) {
		logf("bench: make %s from %d releases of %s (Go module proxy)", in.GitRepo, len(opts.RepoVersions), opts.RepoModule)
		if err := makeRepo(ctx, dir, opts.RepoModule, opts.RepoVersions, goBin, goEnv, in.GitRepo, sizeFile); err != nil {
			return in, fmt.Errorf("make the git repository: %w", err)
		}
	}
	if b, err := os.ReadFile(sizeFile); err == nil {
		fmt.Sscan(string(b), &in.GitRepoBytes)
	}

	// The npm project and its warm cache.
	in.NpmProject = filepath.Join(dir, "npm")
	in.NpmCache = filepath.Join(dir, "npm-cache")
	if err := os.MkdirAll(in.NpmProject, 0o755); err != nil {
		return in, err
	}
	lock, _ := npmProject.ReadFile("npm/package-lock.json")
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, _ := npmProject.ReadFile("npm/" + f)
		if err := os.WriteFile(filepath.Join(in.NpmProject, f), b, 0o644); err != nil {
			return in, err
		}
	}
	in.NpmPackages = bytes.Count(lock, []byte(`"node_modules/`))
	warm := filepath.Join(in.NpmCache, ".ohm-bench-warm")
	if !exists(warm) {
		logf("bench: fill the npm cache %s (npm registry)", in.NpmCache)
		scratch, err := os.MkdirTemp(dir, "npm-fill-")
		if err != nil {
			return in, err
		}
		defer os.RemoveAll(scratch)
		for _, f := range []string{"package.json", "package-lock.json"} {
			b, _ := npmProject.ReadFile("npm/" + f)
			os.WriteFile(filepath.Join(scratch, f), b, 0o644)
		}
		if err := command(ctx, scratch, []string{"npm_config_update_notifier=false"}, "npm", "ci", "--cache", in.NpmCache, "--no-audit", "--no-fund", "--loglevel=error"); err != nil {
			return in, fmt.Errorf("fill the npm cache: %w", err)
		}
		if err := os.WriteFile(warm, nil, 0o644); err != nil {
			return in, err
		}
	}

	// The module to build, and its dependencies.
	if opts.Module != "" {
		in.Module = filepath.Join(dir, "module")
		os.RemoveAll(in.Module)
		if err := os.Mkdir(in.Module, 0o755); err != nil {
			return in, err
		}
		if exists(filepath.Join(opts.Module, ".git")) {
			archive := exec.CommandContext(ctx, "git", "-C", opts.Module, "archive", "--format=tar", "HEAD")
			untar := exec.CommandContext(ctx, "tar", "-x", "-C", in.Module)
			pipe, err := archive.StdoutPipe()
			if err != nil {
				return in, err
			}
			untar.Stdin = pipe
			var errb bytes.Buffer
			archive.Stderr, untar.Stderr = &errb, &errb
			if err := untar.Start(); err != nil {
				return in, err
			}
			if err := archive.Run(); err != nil {
				return in, fmt.Errorf("git archive %s: %v: %s", opts.Module, err, errb.String())
			}
			if err := untar.Wait(); err != nil {
				return in, fmt.Errorf("untar %s: %v: %s", opts.Module, err, errb.String())
			}
		} else if err := command(ctx, dir, nil, "cp", "-a", opts.Module+"/.", in.Module); err != nil {
			return in, err
		}
		logf("bench: download the dependencies of %s (Go module proxy)", opts.Module)
		if err := command(ctx, in.Module, goEnv, goBin, "mod", "download"); err != nil {
			return in, err
		}
		in.GoModCache = modcache
	}
	return in, nil
}

// makeRepo builds a bare repository at bare whose commits are the given
// releases of module, as the Go module proxy serves them.
func makeRepo(ctx context.Context, dir, module string, versions []string, goBin string, goEnv []string, bare, sizeFile string) error {
	work, err := os.MkdirTemp(dir, "repo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return err
	}
	if err := command(ctx, tree, gitEnv, "git", "init", "-q"); err != nil {
		return err
	}
	for _, v := range versions {
		zipPath, err := downloadModule(ctx, work, module, v, goBin, goEnv)
		if err != nil {
			return err
		}
		ents, err := os.ReadDir(tree)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Name() != ".git" {
				os.RemoveAll(filepath.Join(tree, e.Name()))
			}
		}
		if err := unzipModule(zipPath, module+"@"+v+"/", tree); err != nil {
			return err
		}
		if err := command(ctx, tree, gitEnv, "git", "add", "-A"); err != nil {
			return err
		}
		if err := command(ctx, tree, gitEnv, "git", "commit", "-q", "-m", module+" "+v); err != nil {
			return err
		}
	}
	if err := command(ctx, work, gitEnv, "git", "clone", "-q", "--bare", tree, bare+".tmp"); err != nil {
		return err
	}
	if err := command(ctx, bare+".tmp", gitEnv, "git", "gc", "-q"); err != nil {
		return err
	}
	// What a clone takes: the checkout and the packed history.
	checkout, err := treeSize(tree, ".git")
	if err != nil {
		return err
	}
	history, err := treeSize(bare+".tmp", "")
	if err != nil {
		return err
	}
	size := checkout + history
	if err := os.Rename(bare+".tmp", bare); err != nil {
		return err
	}
	return os.WriteFile(sizeFile, []byte(fmt.Sprint(size)), 0o644)
}

// downloadModule fetches module@version through the go command (the Go
// module proxy) and returns its zip.
func downloadModule(ctx context.Context, dir, module, version, goBin string, goEnv []string) (string, error) {
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", module+"@"+version)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), goEnv...)
	out, err := cmd.Output()
	var info struct{ Zip, Error string }
	json.Unmarshal(out, &info)
	if err != nil || info.Zip == "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s", module, version, err, info.Error)
	}
	return info.Zip, nil
}

// unzipModule extracts a module zip into dir, dropping the module@version/
// prefix every name has.
func unzipModule(zipPath, prefix, dir string) error {
	r, err := zip.OpenReader(zipPath)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, f := range r.File {
		name, ok := strings.CutPrefix(f.Name, prefix)
		if !ok || name == "" || strings.Contains(name, "..") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(f.Name, "/") {
			os.MkdirAll(dst, 0o755)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		src, err := f.Open()
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if f.Mode()&0o111 != 0 {
			mode = 0o755
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
		if err == nil {
			_, err = io.Copy(out, src)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		src.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// treeSize is the bytes of the regular files under dir, leaving out
// directories named skip.
func treeSize(dir, skip string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skip != "" && d.Name() == skip {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, os.ErrNotExist)
}
