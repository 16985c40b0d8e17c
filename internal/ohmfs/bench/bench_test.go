package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmoke runs every workload at a tiny size on three plain directories
// so that the benchmark code keeps working; it measures nothing.
func TestSmoke(t *testing.T) {
	for _, tool := range []string{"tar", "git", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	inputs := t.TempDir()
	ctx := context.Background()
	// A tree to untar, which is also the module to build.
	mod := filepath.Join(inputs, "mod")
	os.MkdirAll(filepath.Join(mod, "sub"), 0o755)
	os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module smoke\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(mod, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(mod, "sub", "b.txt"), []byte("hello\n"), 0o644)
	os.Symlink("main.go", filepath.Join(mod, "link"))
	tarball := filepath.Join(inputs, "tree.tar")
	if err := command(ctx, inputs, nil, "tar", "-cf", tarball, "mod"); err != nil {
		t.Fatal(err)
	}
	// A repository with two commits, as a bare clone.
	repo := filepath.Join(inputs, "repo")
	os.MkdirAll(repo, 0o755)
	for i, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "one"}} {
		if i == 1 {
			os.WriteFile(filepath.Join(repo, "a.txt"), []byte("a\n"), 0o644)
		}
		if err := command(ctx, repo, gitEnv, "git", args...); err != nil {
			t.Fatal(err)
		}
	}
	bare := filepath.Join(inputs, "repo.git")
	if err := command(ctx, inputs, gitEnv, "git", "clone", "-q", "--bare", repo, bare); err != nil {
		t.Fatal(err)
	}

	// No go build: with GOCACHE in the directory it compiles the runtime,
	// which takes a while.
	opts := Options{SeqSize: 3<<20 + 5, SmallFiles: 50, SmallSize: 4096, SQLiteCommits: 5, EditFiles: 3,
		Inputs: Inputs{GoTar: tarball, GitRepo: bare}}
	var log bytes.Buffer
	opts.Log = &log
	cold := func(context.Context) error { return nil }
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	store := t.TempDir()
	fss := []FS{
		{Name: "ext4", Dir: dirs[0], Cold: cold},
		{Name: "a", Dir: dirs[1], Cold: cold},
		// Its "storage" grows by a file per step.
		{Name: "b", Dir: dirs[2], Cold: cold, Stored: func() func() (uint64, error) {
			count := StoreCounter(store)
			n := 0
			return func() (uint64, error) {
				n++
				os.WriteFile(filepath.Join(store, strings.Repeat("x", n)), make([]byte, 4096), 0o644)
				return count()
			}
		}()},
	}
	results, err := Compare(ctx, fss, opts)
	if err != nil {
		t.Fatalf("Compare: %v\n%s", err, log.String())
	}
	// 2 sequential, 1 small-file, and untar, clone, edit, SQLite, rm -rf.
	if want := 8; len(results) != want {
		t.Fatalf("%d results, want %d\n%s", len(results), want, log.String())
	}
	for _, r := range results {
		for i, f := range r.Failed {
			if f != "" {
				t.Errorf("%s failed on %s: %s", r.Name, fss[i].Name, f)
			}
		}
		if r.Times[0] <= 0 || r.Times[1] <= 0 || r.Times[2] <= 0 {
			t.Errorf("%s: times %v", r.Name, r.Times)
		}
		if r.Stored[2] != 4096 || r.Stored[1] != 0 {
			t.Errorf("%s: stored %v", r.Name, r.Stored)
		}
	}
	for _, dir := range dirs {
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s left behind %d entries", dir, len(ents))
		}
	}
	var md bytes.Buffer
	cols := []Column{{Name: "ext4"}, {Name: "a"}, {Name: "b"}}
	if err := WriteMarkdown(&md, Report{Machine: Describe(dirs[0]), Options: opts, Columns: cols, Results: results}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| step | ext4 | a | b | target |", "write + fsync", "create, stat, unlink",
		"git clone", "SQLite inserts", "Write amplification", "| b stored |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	WriteText(&log, cols, results)
}

// TestCountLine parses the tracepoint lines the tracer reads.
func TestCountLine(t *testing.T) {
	counts := map[string]uint64{}
	for _, line := range []string{
		"# entries-in-buffer/entries-written: 10/12   #P:2",
		"  python3-123 [001] ..... 10.0: fuse_request_send: connection 40 req 2 opcode 16 (FUSE_WRITE) len 4176",
		"  kworker-9 [000] ..... 10.1: fuse_request_send: connection 40 req 4 opcode 20 (FUSE_FSYNC) len 64",
		"  kworker-9 [000] ..... 10.2: block_rq_issue: 7,3 FF 0 () 0 + 0 [kworker/0:1]",
		"  kworker-9 [000] ..... 10.3: block_rq_issue: 7,3 WSM 4096 () 1024 + 8 [kworker/0:1]",
		"  kworker-9 [000] ..... 10.4: block_rq_issue: 7,3 FWS 4096 () 1024 + 8 [kworker/0:1]",
		"  kworker-9 [000] ..... 10.5: block_rq_issue: 7,3 D 4096 () 1024 + 8 [kworker/0:1]",
	} {
		countLine(line, counts)
	}
	want := map[string]uint64{"lost events": 2, "WRITE": 1, "FSYNC": 1, "block flush": 2, "block write": 2, "block discard": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, counts[k], v, counts)
		}
	}
}
