// Package template builds and caches the root filesystems computers start
// from. A template is built once into the data directory and then used
// read-only as the lower layer of every computer's overlay.
//
// Layout under <dataDir>/templates:
//
//	<name>/rootfs          the root filesystem
//	<name>/manifest.json   name, build time, size, shell: present only for a complete build
//	.build-<name>-*/       a build in progress (renamed to <name> when it succeeds)
//	.<name>.lock           flock(2) held while building, so two processes build once
//	<name>.build.log       the last build's full tool output
//
// A build happens entirely in a temporary directory beside <name>, which is
// renamed into place (or swapped with the old one by RENAME_EXCHANGE) in one
// step, so an interrupted or failed build never leaves a half template.
package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"

	"golang.org/x/sys/unix"

	"ohm/internal/filecopy"
	"ohm/internal/units"
)

// Info describes a known template.
type Info struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Built       bool      `json:"built"`
	SizeBytes   uint64    `json:"size_bytes,omitempty"`
	Root        string    `json:"root,omitempty"`          // the built root filesystem, when Built
	Shell       string    `json:"shell,omitempty"`         // "/bin/bash" or "/bin/sh", when Built
	BuiltAt     time.Time `json:"built_at,omitzero"`       // when the build finished, when Built
	BuildTime   float64   `json:"build_seconds,omitempty"` // how long the build took, when Built
}

// manifest is <name>/manifest.json; its presence marks a complete build.
type manifest struct {
	Name      string    `json:"name"`
	BuiltAt   time.Time `json:"built_at"`
	SizeBytes uint64    `json:"size_bytes"`
	Shell     string    `json:"shell"`
	BuildTime float64   `json:"build_seconds"`
}

// recipe knows how to build one template into an empty directory root.
type recipe struct {
	name        string
	description string
	build       func(ctx context.Context, s *Store, root string, p *progressWriter) error
}

var recipes = []recipe{
	{
		name:        "coding-agent",
		description: "Debian bookworm with bash, python3, git, build-essential, nodejs, npm and sudo",
		build:       buildCodingAgent,
	},
	{
		name:        "minimal",
		description: "busybox only; builds in seconds, for tests",
		build:       buildMinimal,
	},
}

func findRecipe(name string) (recipe, error) {
	for _, r := range recipes {
		if r.name == name {
			return r, nil
		}
	}
	return recipe{}, fmt.Errorf("unknown template %q (known: %s)", name, strings.Join(Names(), ", "))
}

// Names returns the names of the known templates, sorted.
func Names() []string {
	var names []string
	for _, r := range recipes {
		names = append(names, r.name)
	}
	sort.Strings(names)
	return names
}

// DefaultCacheDir is where downloaded Debian packages are kept between
// builds. It is a fixed host path rather than part of the data directory so
// that several data directories on one host (CI runs, tests) share it.
const DefaultCacheDir = "/var/cache/ohm/debootstrap"

// Store is the template cache under a data directory.
type Store struct {
	dir string // <dataDir>/templates

	// CacheDir holds the .debs debootstrap downloads; DefaultCacheDir
	// unless set before first use.
	CacheDir string
	// Mirror is the Debian mirror to build from; empty means the host's
	// configured apt mirror (see HostMirror). Set before first use.
	Mirror string

	mu    sync.Mutex
	locks map[string]chan struct{} // per-template in-process build locks

	// beforeCommit, when set, runs after a build succeeded and before it is
	// renamed into place; tests use it to inject failures.
	beforeCommit func(name, root string) error
}

// NewStore returns the template cache kept under dataDir.
func NewStore(dataDir string) *Store {
	return &Store{
		dir:      filepath.Join(dataDir, "templates"),
		CacheDir: DefaultCacheDir,
		locks:    make(map[string]chan struct{}),
	}
}

// RootPath is where template name's root filesystem lives once built.
func (s *Store) RootPath(name string) string { return filepath.Join(s.dir, name, "rootfs") }

func (s *Store) manifestPath(name string) string {
	return filepath.Join(s.dir, name, "manifest.json")
}

// List returns every known template, built or not.
func (s *Store) List(ctx context.Context) ([]Info, error) {
	var infos []Info
	for _, name := range Names() {
		info, err := s.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Get describes template name, built or not.
func (s *Store) Get(ctx context.Context, name string) (Info, error) {
	r, err := findRecipe(name)
	if err != nil {
		return Info{}, err
	}
	info := Info{Name: r.name, Description: r.description}
	m, ok, err := s.readManifest(name)
	if err != nil {
		return Info{}, err
	}
	if ok {
		info.Built = true
		info.SizeBytes = m.SizeBytes
		info.Root = s.RootPath(name)
		info.Shell = m.Shell
		info.BuiltAt = m.BuiltAt
		info.BuildTime = m.BuildTime
	}
	return info, nil
}

// readManifest reports whether template name is completely built.
func (s *Store) readManifest(name string) (manifest, bool, error) {
	var m manifest
	b, err := os.ReadFile(s.manifestPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("read template %s: %w", name, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, fmt.Errorf("read template %s manifest: %w", name, err)
	}
	if _, err := os.Stat(s.RootPath(name)); err != nil {
		return m, false, fmt.Errorf("template %s: manifest without root filesystem: %w", name, err)
	}
	return m, true, nil
}

// Ensure returns the root filesystem of template name, building it first if
// it is not built yet; build progress goes to progress. Concurrent calls for
// one template build it once. An unknown name is an error naming the known
// ones.
func (s *Store) Ensure(ctx context.Context, name string, progress io.Writer) (string, error) {
	r, err := findRecipe(name)
	if err != nil {
		return "", err
	}
	if _, ok, err := s.readManifest(name); err != nil || ok {
		return s.RootPath(name), err
	}
	unlock, err := s.lock(ctx, name, progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Someone else may have built it while we waited for the lock.
	if _, ok, err := s.readManifest(name); err != nil || ok {
		return s.RootPath(name), err
	}
	return s.build(ctx, r, progress)
}

// Build (re)builds template name, replacing the cached one only when the
// new build succeeded. It refuses to replace a template that a mounted
// overlay uses as its lower layer (a running computer).
func (s *Store) Build(ctx context.Context, name string, progress io.Writer) (string, error) {
	r, err := findRecipe(name)
	if err != nil {
		return "", err
	}
	unlock, err := s.lock(ctx, name, progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := checkNotInUse(s.RootPath(name)); err != nil {
		return "", fmt.Errorf("rebuild template %s: %w", name, err)
	}
	return s.build(ctx, r, progress)
}

// lock takes the in-process lock, then the cross-process flock, for
// building template name. Both waits end when ctx does.
func (s *Store) lock(ctx context.Context, name string, progress io.Writer) (unlock func(), err error) {
	s.mu.Lock()
	ch, ok := s.locks[name]
	if !ok {
		ch = make(chan struct{}, 1)
		s.locks[name] = ch
	}
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait to build template %s: %w", name, ctx.Err())
	}
	release := func() { <-ch }

	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		release()
		return nil, fmt.Errorf("create template directory: %w", err)
	}
	f, err := flock(ctx, filepath.Join(s.dir, "."+name+".lock"), func() {
		if progress != nil {
			fmt.Fprintf(progress, "Waiting: another process is building template %s\n", name)
		}
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("lock template %s: %w", name, err)
	}
	return func() { f.Close(); release() }, nil
}

// flock opens path and takes an exclusive flock on it, polling so that ctx
// can end the wait; waiting, if not nil, is called once if it has to wait.
// Closing the file releases the lock.
func flock(ctx context.Context, path string, waiting func()) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, err
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// build runs recipe r in a fresh temporary directory and, if it succeeds,
// moves the result into place. The caller holds the template's lock.
func (s *Store) build(ctx context.Context, r recipe, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	p := newProgressWriter(progress)
	start := time.Now()

	// Anything left by an earlier, interrupted build is garbage now: we hold
	// the lock, so nobody else is building this template.
	if err := s.removeStale(r.name); err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	tmp, err := os.MkdirTemp(s.dir, ".build-"+r.name+"-")
	if err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	committed := false
	defer func() {
		if !committed {
			if err := safeRemoveAll(tmp); err != nil {
				p.Linef("warning: could not remove %s: %v", tmp, err)
			}
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	root := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	if err := r.build(ctx, s, root, p); err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	if s.beforeCommit != nil {
		if err := s.beforeCommit(r.name, root); err != nil {
			return "", fmt.Errorf("build template %s: %w", r.name, err)
		}
	}

	p.Phase("Finishing", "measuring size")
	size, err := diskUsage(root)
	if err != nil {
		return "", fmt.Errorf("build template %s: measure size: %w", r.name, err)
	}
	m := manifest{
		Name:      r.name,
		BuiltAt:   time.Now().UTC(),
		SizeBytes: size,
		Shell:     shellOf(root),
		BuildTime: time.Since(start).Round(time.Millisecond).Seconds(),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	if err := filecopy.WriteSynced(filepath.Join(tmp, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	// Make the tree durable before it becomes visible under its final name.
	unix.Sync()

	final := filepath.Join(s.dir, r.name)
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE); err == nil {
		committed = true
	} else if errors.Is(err, unix.EEXIST) {
		// Replace the old build in one step; tmp then holds the old one,
		// which the deferred removal deletes.
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); err != nil {
			return "", fmt.Errorf("build template %s: replace old build: %w", r.name, err)
		}
	} else {
		return "", fmt.Errorf("build template %s: %w", r.name, err)
	}
	filecopy.SyncDir(s.dir) // best effort: the build is in place
	p.Donef("Built template %s in %s (%s)", r.name, roundDuration(time.Since(start)), units.FormatSize(size))
	return s.RootPath(r.name), nil
}

// removeStale deletes the leftovers of interrupted builds of name.
func (s *Store) removeStale(name string) error {
	stale, err := filepath.Glob(filepath.Join(s.dir, ".build-"+name+"-*"))
	if err != nil {
		return err
	}
	for _, dir := range stale {
		if err := safeRemoveAll(dir); err != nil {
			return fmt.Errorf("remove interrupted build: %w", err)
		}
	}
	return nil
}

// HasBash reports whether the root filesystem at root has /bin/bash; where
// it has not, commands run through /bin/sh.
func HasBash(root string) bool {
	_, err := os.Stat(filepath.Join(root, "bin", "bash"))
	return err == nil
}

func shellOf(root string) string {
	if HasBash(root) {
		return "/bin/bash"
	}
	return "/bin/sh"
}

// diskUsage is the space the tree at root takes on disk, counting each
// hard-linked inode once.
func diskUsage(root string) (uint64, error) {
	type ino struct{ dev, ino uint64 }
	seen := make(map[ino]bool)
	var total uint64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		if st.Nlink > 1 && !d.IsDir() {
			k := ino{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += uint64(st.Blocks) * 512
		return nil
	})
	return total, err
}

// checkNotInUse fails if an overlay mounted in this mount namespace uses
// root as a lower layer: replacing it would pull it from under a running
// computer.
func checkNotInUse(root string) error {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("overlay"))
	if err != nil {
		return err
	}
	for _, m := range ms {
		for _, opt := range strings.Split(m.VFSOptions, ",") {
			lower, ok := strings.CutPrefix(opt, "lowerdir=")
			if !ok {
				continue
			}
			for _, dir := range strings.Split(lower, ":") {
				if dir == root || strings.HasPrefix(dir, root+"/") {
					return fmt.Errorf("it is in use by a running computer; stop it first")
				}
			}
		}
	}
	return nil
}

// safeRemoveAll removes the tree at dir after detaching anything mounted
// inside it (an interrupted debootstrap can leave /proc or a bind mount of
// the host's /dev there, and removing through those would be a disaster).
func safeRemoveAll(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := unmountUnder(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// unmountUnder detaches every mount at or below dir, deepest first, and
// fails if any remains.
func unmountUnder(dir string) error {
	dir = filepath.Clean(dir)
	for attempt := 0; attempt < 3; attempt++ {
		mounts, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mounts) == 0 {
			return nil
		}
		sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
		for _, m := range mounts {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	if mounts, _ := mountsUnder(dir); len(mounts) > 0 {
		return fmt.Errorf("%s still has mounts inside: %s", dir, strings.Join(mounts, ", "))
	}
	return nil
}

func mountsUnder(dir string) ([]string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	mounts := make([]string, 0, len(ms))
	for _, m := range ms {
		mounts = append(mounts, m.Mountpoint)
	}
	return mounts, nil
}

// roundDuration keeps two or three significant digits of d.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
