package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ohm/internal/disk"
)

// TestRunLayouts is the smoke test of `ohm bench` itself: Run, with a
// freshly built ohm, sets up ext4, the file layout and a small btrfs
// block layout, runs the sequential, small-file and SQLite work at tiny
// sizes on each, reports write amplification and FUSE requests, and
// leaves nothing mounted or behind. It measures nothing; it keeps the
// benchmark from rotting between the runs that make docs/benchmarks.md.
func TestRunLayouts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: ohm bench mounts volumes and disks")
	}
	for _, p := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	if err := disk.Available(disk.Btrfs); err != nil {
		t.Skipf("needs btrfs: %v", err)
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for the SQLite step")
	}
	// The go command that runs this test is on PATH (make test puts
	// /usr/local/go/bin there); the toolchain's default place otherwise.
	goBin := "/usr/local/go/bin/go"
	if p, err := exec.LookPath("go"); err == nil {
		goBin = p
	}
	dir := t.TempDir()
	ohm := filepath.Join(dir, "ohm")
	build := exec.Command(goBin, "build", "-o", ohm, "ohm/cmd/ohm")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build ohm: %v\n%s", err, out)
	}
	var log bytes.Buffer
	cfg := RunConfig{
		Dir:        filepath.Join(dir, "bench"),
		Ohm:        ohm,
		FileLayout: true,
		Blocks:     []BlockSpec{{Kind: disk.Btrfs}},
		DiskSize:   1 << 30,
		SpaceGuard: true,
		Options: Options{SeqSize: 4 << 20, SmallFiles: 20, SmallSize: 4096, SQLiteCommits: 3, EditFiles: 1,
			Log: &log},
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if len(rep.Columns) != 3 {
		t.Fatalf("columns %v, want ext4, ohmfs and btrfs", rep.Columns)
	}
	// 2 sequential, 1 small-file, SQLite and rm -rf (no agent inputs).
	if len(rep.Results) != 5 {
		t.Fatalf("%d results, want 5\n%s", len(rep.Results), log.String())
	}
	traced := false
	for _, r := range rep.Results {
		for i, f := range r.Failed {
			if f != "" {
				t.Errorf("%s failed on %s: %s", r.Name, rep.Columns[i].Name, f)
			} else if r.Times[i] <= 0 {
				t.Errorf("%s on %s: no time", r.Name, rep.Columns[i].Name)
			}
		}
		if r.Trace && r.Requests[2] != nil {
			traced = true
		}
	}
	if r := rep.Results[0]; r.Stored[1] == 0 || r.Stored[2] == 0 {
		t.Errorf("the write stored %v bytes on the ohmfs layouts, want some", r.Stored)
	}
	if !traced {
		t.Log("no traced step counted requests (tracefs unavailable?)")
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"btrfs on ohmfs", "Write amplification", "SQLite inserts"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	// Everything it made is gone, nothing is mounted under it.
	if ents, err := os.ReadDir(cfg.Dir); err != nil || len(ents) != 0 {
		t.Errorf("bench dir after Run: %v entries, %v", len(ents), err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), cfg.Dir) {
		t.Errorf("still mounted under %s:\n%s", cfg.Dir, mounts)
	}
}
