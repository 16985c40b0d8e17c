package hostbin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	// A program planted first on PATH is never what Path finds.
	evil := t.TempDir()
	if err := os.WriteFile(filepath.Join(evil, "sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	p, err := Path("sh")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(TrustedDirs(), filepath.Dir(p)) {
		t.Errorf("Path(sh) = %s, not in %v", p, TrustedDirs())
	}
	for _, name := range []string{"", "../bin/sh", "/bin/sh", "bin/sh", "ohm-no-such-program"} {
		if p, err := Path(name); err == nil {
			t.Errorf("Path(%q) = %s, want an error", name, p)
		}
	}
}

func TestTrustedRefusesWritable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the files checked must belong to root")
	}
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	if err := trusted(prog); err != nil {
		t.Fatalf("a root-owned program: %v", err)
	}
	for _, tt := range []struct {
		path string
		mode os.FileMode
	}{{prog, 0o777}, {dir, 0o777}} {
		os.Chmod(tt.path, tt.mode)
		if err := trusted(prog); err == nil || !strings.Contains(err.Error(), "writable by root alone") {
			t.Errorf("%s mode %v: %v, want refused", tt.path, tt.mode, err)
		}
		os.Chmod(prog, 0o755)
		os.Chmod(dir, 0o755)
	}
}
