package template

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDebootstrapNotFromPATH puts a debootstrap, an apt-get and a chroot
// that would run as root first on the daemon's PATH, then builds the
// coding-agent template from a mirror that does not answer: the build
// fails (the system's debootstrap finds no mirror), and none of the
// planted programs ran.
func TestDebootstrapNotFromPATH(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("building templates needs root")
	}
	if _, err := os.Stat("/usr/sbin/debootstrap"); err != nil {
		t.Skip("needs debootstrap (apt-get install debootstrap)")
	}
	evil := t.TempDir()
	marker := filepath.Join(evil, "ran")
	for _, name := range []string{"debootstrap", "apt-get", "chroot", "wget"} {
		script := "#!/bin/sh\necho " + name + " >> " + marker + "\nexit 1\n"
		if err := os.WriteFile(filepath.Join(evil, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	if p, _ := exec.LookPath("debootstrap"); p != filepath.Join(evil, "debootstrap") {
		t.Fatalf("the planted debootstrap is not first on PATH (%s)", p)
	}
	s := NewStore(t.TempDir())
	s.CacheDir = t.TempDir()
	s.Mirror = "http://127.0.0.1:9/debian" // the discard port: refused
	if _, err := s.Ensure(context.Background(), "coding-agent", nil); err == nil {
		t.Fatal("a build from a mirror that does not answer succeeded")
	}
	if data, err := os.ReadFile(marker); err == nil {
		t.Errorf("programs run from PATH: %q", data)
	}
}

func TestProgramPath(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/useradd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		chroot, name, want string
		ok                 bool
	}{
		{root, "useradd", "/usr/sbin/useradd", true},
		{root, "groupadd", "", false},
		{root, "../useradd", "", false},
		{root, "/usr/sbin/useradd", "", false},
		{"", "sh", "", true},
		{"", "bin/sh", "", false},
	} {
		got, err := programPath(tc.chroot, tc.name)
		if (err == nil) != tc.ok || (tc.want != "" && got != tc.want) {
			t.Errorf("programPath(%q, %q) = %q, %v; want %q (ok %v)", tc.chroot, tc.name, got, err, tc.want, tc.ok)
		}
		if tc.ok && !filepath.IsAbs(got) {
			t.Errorf("programPath(%q, %q) = %q, not absolute", tc.chroot, tc.name, got)
		}
	}
}
