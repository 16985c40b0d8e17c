package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmoke runs every workload at a tiny size on two plain directories so
// that the benchmark code keeps working; it measures nothing.
func TestSmoke(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "pkg", "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "pkg", "a.go"), []byte("package pkg\n"), 0o644)
	os.WriteFile(filepath.Join(src, "pkg", "sub", "b.txt"), []byte("hello\n"), 0o644)
	os.Symlink("a.go", filepath.Join(src, "pkg", "link"))

	opts := Options{SeqSize: 3<<20 + 5, SmallFiles: 50, SmallSize: 4096, TreeSrc: src}
	var log bytes.Buffer
	opts.Log = &log
	cold := func(context.Context) error { return nil }
	a := FS{Name: "ext4", Dir: t.TempDir(), Cold: cold}
	b := FS{Name: "ohmfs", Dir: t.TempDir(), Cold: cold}
	results, err := Compare(context.Background(), a, b, opts)
	if err != nil {
		t.Fatalf("Compare: %v\n%s", err, log.String())
	}
	// 2 sequential + 4 small-file + 3 tree steps and their total.
	if len(results) != 10 {
		t.Fatalf("%d results, want 10", len(results))
	}
	for _, r := range results {
		if r.Ext4 <= 0 || r.Ohmfs <= 0 {
			t.Errorf("%s: times %v / %v", r.Name, r.Ext4, r.Ohmfs)
		}
	}
	for _, dir := range []string{a.Dir, b.Dir} {
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s left behind %d entries", dir, len(ents))
		}
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, Describe(a.Dir), opts, results); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| work | ext4 | ohmfs |", "sequential write", "create + stat + unlink", ">= 0.7 / >= 0.8"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}
