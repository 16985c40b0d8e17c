package disk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"ohm/internal/hostbin"
)

// TestMkfsNotFromPATH puts a mkfs.btrfs that would run as root first on
// the daemon's PATH: mkfs must run the system's, never it.
func TestMkfsNotFromPATH(t *testing.T) {
	if err := Available(Btrfs); err != nil {
		t.Skipf("needs mkfs.btrfs: %v", err)
	}
	evil := t.TempDir()
	marker := filepath.Join(evil, "ran")
	for _, name := range []string{"mkfs.btrfs", "mkfs.ext4", "mkfs.xfs"} {
		script := "#!/bin/sh\necho " + name + " >> " + marker + "\nexit 0\n"
		if err := os.WriteFile(filepath.Join(evil, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	if p, _ := exec.LookPath("mkfs.btrfs"); p != filepath.Join(evil, "mkfs.btrfs") {
		t.Fatalf("the planted mkfs.btrfs is not first on PATH (%s)", p)
	}
	// The system's fails on a device that is not there; the planted one
	// would succeed.
	if err := mkfs(context.Background(), Btrfs, "", filepath.Join(evil, "no-such-device")); err == nil {
		t.Error("mkfs of a missing device succeeded")
	}
	if data, err := os.ReadFile(marker); err == nil {
		t.Errorf("programs run from PATH: %q", data)
	}
	if p, err := tool("mkfs.btrfs"); err != nil || !slices.Contains(hostbin.TrustedDirs(), filepath.Dir(p)) {
		t.Errorf("tool(mkfs.btrfs) = %s, %v; want one in %v", p, err, hostbin.TrustedDirs())
	}
}

// TestToolRefusesWritable is a mkfs in a system directory that someone
// besides root could change (mode 0777): it is not run.
func TestToolRefusesWritable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: plants a program in /usr/sbin")
	}
	name := "mkfs.ohm-test-" + strconv.Itoa(os.Getpid())
	p := filepath.Join("/usr/sbin", name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Skipf("cannot write /usr/sbin: %v", err)
	}
	t.Cleanup(func() { os.Remove(p) })
	if got, err := tool(name); err != nil || got != p {
		t.Fatalf("tool(%s) = %s, %v; want %s (root-owned, 0755)", name, got, err, p)
	}
	if err := os.Chmod(p, 0o777); err != nil {
		t.Fatal(err)
	}
	if got, err := tool(name); err == nil {
		t.Errorf("tool(%s) = %s: a program anyone can change was accepted", name, got)
	}
}
