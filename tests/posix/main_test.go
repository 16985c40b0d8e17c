//go:build linux

// Package posix checks POSIX behaviour through the kernel, on a freshly
// mounted ohmfs volume and, with the very same table, on a plain ext4
// directory. The ext4 run validates the table itself: where ext4 and ohmfs
// differ, ohmfs is wrong. Each table runs in a child process of this test
// binary, once as root and once as uid 1000, in a directory that user owns.
package posix

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ohm/internal/filecopy"
	"ohm/tests/internal/ohmtest"
)

// The child process is this test binary, started with these variables set.
const (
	envMode     = "OHM_POSIX_MODE" // "run", "verify" or "lockhelper"
	envDir      = "OHM_POSIX_DIR"
	envFixtures = "OHM_POSIX_FIXTURES"
)

// userUID is the unprivileged user the table also runs as, as in a computer.
const userUID, userGID = 1000, 1000

// selfCopy is this test binary copied where uid 1000 can execute it.
var selfCopy string

func TestMain(m *testing.M) {
	switch os.Getenv(envMode) {
	case "run", "verify":
		os.Exit(childMain(os.Getenv(envMode), os.Getenv(envDir), os.Getenv(envFixtures)))
	case "lockhelper":
		os.Exit(lockHelperMain(os.Args[len(os.Args)-2:]))
	}
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "posix-test-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			os.Chmod(dir, 0o755)
			selfCopy = filepath.Join(dir, "posix.test")
			if err := filecopy.New(mustExecutable(), selfCopy, 0o755); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		defer ohmtest.CleanupBuild()
		return m.Run()
	}()
	os.Exit(code)
}

func mustExecutable() string {
	p, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return p
}

// identity is who a table runs as.
type identity struct {
	name     string
	uid, gid int
}

var identities = []identity{{"root", 0, 0}, {"uid1000", userUID, userGID}}

// TestPOSIXExt4 runs the table on a plain directory of the host's disk (ext4
// here), to validate the table itself.
func TestPOSIXExt4(t *testing.T) {
	ohmtest.RequireRoot(t)
	base, err := os.MkdirTemp("/var/tmp", "posix-ext4-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(base, &sfs); err == nil && sfs.Type != 0xEF53 {
		t.Logf("note: the reference directory %s is not on ext4 (statfs type %#x)", base, sfs.Type)
	}
	runTables(t, base, func(t *testing.T) { dropCaches() })
}

// TestPOSIXOhmfs runs the table on a freshly formatted and mounted ohmfs
// volume, remounting it between the run and verify phases.
func TestPOSIXOhmfs(t *testing.T) {
	ohmtest.RequireFUSE(t)
	v := ohmtest.NewVolume(t, ohmtest.Binary(t))
	v.Mount(t)
	t.Cleanup(func() {
		if ohmtest.Mounted(v.Dir) {
			v.Umount(t)
		}
	})
	runTables(t, v.Dir, func(t *testing.T) { v.Remount(t) })
}

// runTables runs the table in base as every identity: the run phase for all,
// then remount, then the verify phase for all. Each check becomes a subtest
// named identity/check.
func runTables(t *testing.T, base string, remount func(t *testing.T)) {
	type prepared struct {
		id            identity
		dir, fixtures string
		run, verify   map[string]string
	}
	var ps []*prepared
	for _, id := range identities {
		dir := filepath.Join(base, id.name)
		fixtures := filepath.Join(base, id.name+"-fixtures")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", dir, err)
		}
		if err := os.Chown(dir, id.uid, id.gid); err != nil {
			t.Fatalf("chown %s: %v", dir, err)
		}
		if err := makeFixtures(fixtures); err != nil {
			t.Fatalf("fixtures in %s: %v", fixtures, err)
		}
		ps = append(ps, &prepared{id: id, dir: dir, fixtures: fixtures})
	}
	for _, p := range ps {
		p.run = runChild(t, "run", p.id, p.dir, p.fixtures)
	}
	remount(t)
	for _, p := range ps {
		p.verify = runChild(t, "verify", p.id, p.dir, p.fixtures)
	}
	for _, p := range ps {
		t.Run(p.id.name, func(t *testing.T) {
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) {
					if msg := p.run[c.name]; msg != "" {
						t.Errorf("%s", msg)
					}
					if c.verify != nil && p.verify[c.name] != "" {
						t.Errorf("after remount: %s", p.verify[c.name])
					}
				})
			}
		})
	}
}

// makeFixtures makes, as root, what the checks of an unprivileged user need
// from someone else: a private file, a directory they cannot write, and a
// sticky directory holding root's file.
func makeFixtures(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	steps := []func() error{
		func() error { return os.WriteFile(filepath.Join(dir, "private"), []byte("secret"), 0o600) },
		func() error { return os.Chmod(filepath.Join(dir, "private"), 0o600) },
		func() error { return os.WriteFile(filepath.Join(dir, "shared"), []byte("shared"), 0o666) },
		func() error { return os.Chmod(filepath.Join(dir, "shared"), 0o666) },
		func() error { return os.Mkdir(filepath.Join(dir, "rootdir"), 0o755) },
		func() error { return os.Mkdir(filepath.Join(dir, "sticky"), 0o777) },
		func() error { return os.Chmod(filepath.Join(dir, "sticky"), 0o777|os.ModeSticky) },
		func() error { return os.WriteFile(filepath.Join(dir, "sticky", "f"), []byte("x"), 0o666) },
		func() error { return os.Chmod(filepath.Join(dir, "sticky", "f"), 0o666) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// result is one line of a child's output.
type result struct {
	Check string `json:"check"`
	Start bool   `json:"start,omitempty"`
	Err   string `json:"err,omitempty"`
}

// runChild runs one phase of the table as id and returns, for each check, ""
// if it passed or what went wrong. A check the child never finished is
// reported with the child's stderr.
func runChild(t *testing.T, mode string, id identity, dir, fixtures string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, selfCopy, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envMode+"="+mode, envDir+"="+dir, envFixtures+"="+fixtures)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(id.uid), Gid: uint32(id.gid), Groups: []uint32{}},
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s child as %s: %v", mode, id.name, err)
	}
	results := map[string]string{}
	done := map[string]bool{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if r.Start {
			results[r.Check] = "the child died or hung in this check"
			continue
		}
		results[r.Check] = r.Err
		done[r.Check] = true
	}
	werr := cmd.Wait()
	for _, c := range checks {
		if mode == "verify" && c.verify == nil {
			continue
		}
		if !done[c.name] {
			if _, started := results[c.name]; !started {
				results[c.name] = "not run: the child stopped before it"
			}
			results[c.name] += fmt.Sprintf(" (%s child as %s: %v; stderr: %s)", mode, id.name, werr, lastLines(stderr.String(), 10))
		}
	}
	return results
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childMain runs one phase of the table in dir and prints one JSON line per
// check.
func childMain(mode, dir, fixtures string) int {
	syscall.Umask(0o022)
	enc := json.NewEncoder(os.Stdout)
	for _, c := range checks {
		f := c.run
		if mode == "verify" {
			f = c.verify
		}
		if f == nil {
			continue
		}
		enc.Encode(result{Check: c.name, Start: true})
		cdir := filepath.Join(dir, c.name)
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			if mode == "run" {
				if err := os.Mkdir(cdir, 0o755); err != nil {
					return err
				}
			}
			return f(&env{dir: cdir, fixtures: fixtures, uid: os.Geteuid(), gid: os.Getegid()})
		}()
		r := result{Check: c.name}
		if err != nil {
			r.Err = err.Error()
		}
		enc.Encode(r)
	}
	return 0
}

func dropCaches() {
	syscall.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
