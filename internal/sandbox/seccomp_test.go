package sandbox

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSeccompProfile(t *testing.T) {
	p := seccompProfile()
	if p.DefaultAction != specs.ActErrno {
		t.Errorf("default action %s, want refusal", p.DefaultAction)
	}
	allowed := map[string]bool{}
	for _, sc := range p.Syscalls {
		if sc.Action == specs.ActAllow && len(sc.Args) == 0 {
			for _, n := range sc.Names {
				allowed[n] = true
			}
		}
	}
	for name := range deniedSyscalls {
		if !slices.Contains(linuxSyscalls, name) {
			t.Errorf("denied %q is no system call of the list (typo?)", name)
		}
		if allowed[name] {
			t.Errorf("%s allowed", name)
		}
	}
	for _, name := range []string{"read", "write", "openat", "execve", "fork", "vfork", "wait4", "setresuid", "setgroups", "chroot", "seccomp", "prctl", "pidfd_open"} {
		if !allowed[name] {
			t.Errorf("%s not allowed", name)
		}
	}
	if allowed["clone"] || allowed["clone3"] {
		t.Error("clone or clone3 allowed without conditions")
	}
}

func TestReadCgroupFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(content), 0o644)
		return path
	}
	for _, tt := range []struct {
		content string
		want    int64
	}{{"536870912\n", 512 << 20}, {"max\n", math.MaxInt64}, {"-1\n", math.MaxInt64}, {"256", 256}} {
		if got, err := readLimit(write("limit", tt.content)); err != nil || got != tt.want {
			t.Errorf("readLimit(%q) = %d %v, want %d", tt.content, got, err, tt.want)
		}
	}
	if _, err := readLimit(write("bad", "lots\n")); err == nil {
		t.Error("readLimit of garbage: no error")
	}
	for _, tt := range []struct {
		content string
		want    float64
	}{{"150000 100000\n", 1.5}, {"50000 100000\n", 0.5}, {"max 100000\n", float64(numCPU())}} {
		if got, err := readCPUMax(write("cpu.max", tt.content)); err != nil || got != tt.want {
			t.Errorf("readCPUMax(%q) = %v %v, want %v", tt.content, got, err, tt.want)
		}
	}
	if _, err := readCPUMax(write("cpu.max", "100000\n")); err == nil {
		t.Error("readCPUMax of one field: no error")
	}
}
