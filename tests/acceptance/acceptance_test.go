//go:build linux

// Package acceptance runs the acceptance script end to end with
// the built ohm binary, as root, in a data directory of its own: create a
// computer from the coding-agent template, check its two disks, write to
// the workspace, stop and start it, read it back, get an exit code through,
// delete it. Then the storage proof, scaled down for CI (make demo runs the
// full 100 GiB one), and the bad input of the CLI.
package acceptance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ohm/tests/internal/ohmtest"
)

// templateCache keeps built templates between runs on one machine, so that
// the coding-agent debootstrap is paid once per machine, not once per run;
// each run still gets a fresh data directory with a copy of them.
const templateCache = "/var/cache/ohm-test/templates"

var (
	bin     string
	dataDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if dataDir != "" {
		stopDaemon(dataDir)
		saveTemplates(dataDir)
		os.RemoveAll(dataDir)
	}
	ohmtest.CleanupBuild()
	os.Exit(code)
}

// setup finds the binary and makes the run's data directory, seeded with
// the cached templates.
func setup(t *testing.T) {
	t.Helper()
	ohmtest.RequireFUSE(t)
	bin = ohmtest.Binary(t)
	if dataDir != "" {
		return
	}
	d, err := os.MkdirTemp("/var/tmp", "ohm-acceptance-")
	if err != nil {
		t.Fatal(err)
	}
	dataDir = d
	if ents, err := os.ReadDir(templateCache); err == nil {
		os.MkdirAll(filepath.Join(dataDir, "templates"), 0o755)
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(templateCache, e.Name(), "manifest.json")); err != nil {
				continue
			}
			cp := exec.Command("cp", "-a", filepath.Join(templateCache, e.Name()), filepath.Join(dataDir, "templates", e.Name()))
			if out, err := cp.CombinedOutput(); err != nil {
				t.Logf("seeding template %s from the cache: %v\n%s", e.Name(), err, out)
			}
		}
	}
}

// saveTemplates copies the templates this run built into the cache.
func saveTemplates(dataDir string) {
	ents, _ := os.ReadDir(filepath.Join(dataDir, "templates"))
	for _, e := range ents {
		src := filepath.Join(dataDir, "templates", e.Name())
		if _, err := os.Stat(filepath.Join(src, "manifest.json")); err != nil {
			continue
		}
		dst := filepath.Join(templateCache, e.Name())
		if _, err := os.Stat(filepath.Join(dst, "manifest.json")); err == nil {
			continue
		}
		os.MkdirAll(templateCache, 0o755)
		tmp := dst + ".tmp"
		os.RemoveAll(tmp)
		if exec.Command("cp", "-a", src, tmp).Run() == nil {
			os.RemoveAll(dst)
			os.Rename(tmp, dst)
		}
	}
}

// stopDaemon ends the `ohm serve` the CLI started for dataDir, as the
// test's own clean-up: nothing is left running.
func stopDaemon(dataDir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) >= 4 && args[1] == "serve" && args[len(args)-1] == dataDir {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// result is what one ohm command did.
type result struct {
	stdout, stderr string
	code           int
}

// ohm runs the binary with the run's data directory, as the script does.
func ohm(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "OHM_DATA_DIR="+dataDir)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	r := result{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ohm %s: %v (stderr: %s)", strings.Join(args, " "), err, r.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("ohm %s: no answer within %v", strings.Join(args, " "), timeout)
	}
	t.Logf("$ ohm %s  -> exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// must runs ohm and fails the test on a non-zero exit.
func must(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	r := ohm(t, timeout, args...)
	if r.code != 0 {
		t.Fatalf("ohm %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// create runs `ohm computer create` and returns the one-line name.
func create(t *testing.T, args ...string) string {
	t.Helper()
	// The first create may build the template (debootstrap): minutes.
	out := must(t, 15*time.Minute, append([]string{"computer", "create"}, args...)...)
	name := strings.TrimSpace(out)
	if strings.Contains(name, "\n") || !dnsLabel.MatchString(name) {
		t.Fatalf("create printed %q, want one line: the new name", out)
	}
	return name
}

// dfLine finds df's line for a mountpoint: filesystem, size, used.
func dfLine(t *testing.T, out, mountpoint string) (fs, size, used string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[len(f)-1] == mountpoint {
			return f[0], f[1], f[2]
		}
	}
	t.Fatalf("df shows no line for %s:\n%s", mountpoint, out)
	return
}

// TestAcceptanceScript is the acceptance script, as scripts/demo.sh runs it.
func TestAcceptanceScript(t *testing.T) {
	setup(t)
	name := create(t, "--template", "coding-agent", "--disk-size-mb", "10240")
	deleted := false
	defer func() {
		if !deleted {
			ohm(t, 5*time.Minute, "computer", "delete", name)
		}
	}()

	df := must(t, 2*time.Minute, "computer", "run", name, "df -h / /home/ohm")
	if _, size, _ := dfLine(t, df, "/"); size != "10G" {
		t.Errorf("df -h / inside: size %s, want 10G", size)
	}
	if fs, size, _ := dfLine(t, df, "/home/ohm"); fs != "ohmfs" || size != "1.0P" {
		t.Errorf("df -h /home/ohm inside: %s %s, want ohmfs 1.0P", fs, size)
	}

	must(t, time.Minute, "computer", "run", name, "echo saved > /home/ohm/state.txt")
	must(t, 2*time.Minute, "computer", "stop", name)
	must(t, 2*time.Minute, "computer", "start", name)
	if got := strings.TrimSpace(must(t, time.Minute, "computer", "run", name, "cat /home/ohm/state.txt")); got != "saved" {
		t.Errorf("after stop and start, state.txt holds %q, want saved", got)
	}
	r := ohm(t, time.Minute, "computer", "run", name, "python3 -c 'import sys; sys.exit(3)'")
	if r.code != 3 {
		t.Errorf("run of a command exiting 3: ohm exited %d, want 3", r.code)
	}
	who := strings.TrimSpace(must(t, time.Minute, "computer", "run", name, "id -u; echo $HOME; pwd"))
	if who != "1000\n/home/ohm\n/home/ohm" {
		t.Errorf("run as whom, where: %q, want uid 1000, HOME and cwd /home/ohm", who)
	}

	must(t, 5*time.Minute, "computer", "delete", name)
	deleted = true
	if r := ohm(t, time.Minute, "computer", "info", name); r.code == 0 {
		t.Errorf("info of a deleted computer succeeded")
	}
	if out := must(t, time.Minute, "computer", "list"); strings.Contains(out, name) {
		t.Errorf("list still shows the deleted computer:\n%s", out)
	}
	// Root disk, workspace and metadata gone: nothing under the data dir
	// is named for it any more.
	filepath.Walk(dataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(filepath.Base(p), name) && !strings.HasSuffix(p, ".log") {
			t.Errorf("left behind after delete: %s", p)
		}
		if info != nil && info.IsDir() && strings.HasPrefix(p, filepath.Join(dataDir, "templates")) {
			return filepath.SkipDir
		}
		return nil
	})
}

// fillScript writes GIB GiB to a file in 1 MiB blocks, each block a 32-byte
// SHA-256 digest (of the block's number) repeated, and fsyncs at the end;
// then it reads back a few blocks and checks them.
const fillScript = `python3 - "$@" <<'EOF'
import hashlib, os, sys
gib, path = int(sys.argv[1]), sys.argv[2]
blocks = gib * 1024
def block(i):
    return hashlib.sha256(str(i).encode()).digest() * 32768
with open(path, "wb") as f:
    for i in range(blocks):
        f.write(block(i))
    f.flush()
    os.fsync(f.fileno())
with open(path, "rb") as f:
    for i in sorted({0, 1, blocks // 2, blocks - 1}):
        f.seek(i << 20)
        if f.read(1 << 20) != block(i):
            sys.exit("block %d reads back wrong" % i)
print("wrote and checked %d GiB" % gib)
EOF`

// storageProof is the storage proof at a given size: a file of
// gib GiB in /home/ohm of a computer whose root disk is diskMB, which the
// root disk could never hold.
func storageProof(t *testing.T, gib, diskMB int) {
	name := create(t, "--template", "coding-agent", "--disk-size-mb", strconv.Itoa(diskMB))
	defer ohm(t, 10*time.Minute, "computer", "delete", name)

	before := must(t, time.Minute, "computer", "run", name, "df -B1M / | tail -1")
	script := fmt.Sprintf("bash -c %s fill %d /home/ohm/big", shellQuote(fillScript), gib)
	must(t, 15*time.Minute, "computer", "run", name, script)

	du := must(t, time.Minute, "computer", "run", name, "du -h /home/ohm/big")
	if f := strings.Fields(du); len(f) == 0 || f[0] != fmt.Sprintf("%dG", gib) {
		t.Errorf("du -h of the %d GiB file: %q, want %dG", gib, du, gib)
	}
	df := must(t, time.Minute, "computer", "run", name, "df -h /")
	wantSize := fmt.Sprintf("%.1fG", float64(diskMB)/1024)
	if diskMB%1024 == 0 && diskMB >= 10240 {
		wantSize = fmt.Sprintf("%dG", diskMB/1024)
	}
	if _, size, _ := dfLine(t, df, "/"); size != wantSize {
		t.Errorf("df -h / after the write: size %s, want %s", size, wantSize)
	}
	after := must(t, time.Minute, "computer", "run", name, "df -B1M / | tail -1")
	usedMB := func(line string) int {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("df line %q", line)
		}
		n, _ := strconv.Atoi(strings.TrimSuffix(f[2], "M"))
		return n
	}
	if grew := usedMB(after) - usedMB(before); grew > 100 {
		t.Errorf("the root disk's use grew by %d MiB while writing to /home/ohm", grew)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestStorageProof is the scaled-down proof for CI: 20 GiB on a 2 GiB root
// disk. `make demo` runs the full one (100 GiB on 10 GiB).
func TestStorageProof(t *testing.T) {
	setup(t)
	gib, disk := 20, 2048
	if v, err := strconv.Atoi(os.Getenv("OHM_PROOF_GIB")); err == nil && v > 0 {
		gib = v
	}
	storageProof(t, gib, disk)
}

// TestBadInput checks the CLI's bad input: each a clear one-line
// error and a non-zero exit, nothing left half-created.
func TestBadInput(t *testing.T) {
	setup(t)
	oneLine := func(what string, args ...string) {
		t.Helper()
		r := ohm(t, 5*time.Minute, args...)
		msg := strings.TrimSpace(r.stderr)
		if r.code == 0 {
			t.Errorf("%s: exit 0, want an error", what)
		} else if msg == "" || strings.Contains(msg, "\n") || strings.Contains(msg, "goroutine ") {
			t.Errorf("%s: stderr %q, want one line", what, r.stderr)
		}
	}
	before := must(t, time.Minute, "computer", "list")
	oneLine("unknown template", "computer", "create", "--template", "no-such-template", "--disk-size-mb", "1024")
	oneLine("invalid name", "computer", "create", "Not_A-DNS.label", "--template", "minimal", "--disk-size-mb", "1024")
	oneLine("disk size 0", "computer", "create", "--template", "minimal", "--disk-size-mb", "0")
	oneLine("disk larger than the host can hold", "computer", "create", "--template", "minimal", "--disk-size-mb", "1000000000")
	oneLine("run of a missing computer", "computer", "run", "no-such-computer", "true")
	oneLine("stop of a missing computer", "computer", "stop", "no-such-computer")
	oneLine("delete of a missing computer", "computer", "delete", "no-such-computer")
	if after := must(t, time.Minute, "computer", "list"); after != before {
		t.Errorf("failed creates left something behind: list was\n%s\nand is\n%s", before, after)
	}

	name := create(t, "dup-check", "--template", "minimal", "--disk-size-mb", "256")
	defer ohm(t, 5*time.Minute, "computer", "delete", name)
	oneLine("duplicate name", "computer", "create", "dup-check", "--template", "minimal", "--disk-size-mb", "256")
	must(t, 2*time.Minute, "computer", "run", name, "true") // running now, whether or not create started it
	oneLine("start of a running computer", "computer", "start", name)
	if r := ohm(t, time.Minute, "computer", "run", name, "exit 7"); r.code != 7 {
		t.Errorf("run in the minimal template of `exit 7`: exit %d", r.code)
	}
}
