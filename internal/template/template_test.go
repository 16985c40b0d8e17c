package template

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"ohm/internal/units"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("building templates needs root")
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skip("the minimal template needs busybox-static (apt-get install busybox-static)")
	}
}

// leftovers lists what an interrupted or failed build could leave in the
// store's directory.
func leftovers(t *testing.T, s *Store) []string {
	t.Helper()
	l, err := filepath.Glob(filepath.Join(s.dir, ".build-*"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestUnknownTemplate(t *testing.T) {
	s := NewStore(t.TempDir())
	want := `unknown template "x" (known: coding-agent, minimal)`
	for name, call := range map[string]func() error{
		"Ensure": func() error { _, err := s.Ensure(context.Background(), "x", nil); return err },
		"Build":  func() error { _, err := s.Build(context.Background(), "x", nil); return err },
		"Get":    func() error { _, err := s.Get(context.Background(), "x"); return err },
	} {
		if err := call(); err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}
}

func TestListUnbuilt(t *testing.T) {
	s := NewStore(t.TempDir())
	infos, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Name != "coding-agent" || infos[1].Name != "minimal" {
		t.Fatalf("List = %+v", infos)
	}
	for _, in := range infos {
		if in.Built || in.Root != "" || in.Description == "" {
			t.Errorf("unbuilt template listed as %+v", in)
		}
	}
}

func TestMinimal(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	s := NewStore(t.TempDir())
	var progress bytes.Buffer
	root, err := s.Ensure(ctx, "minimal", &progress)
	if err != nil {
		t.Fatal(err)
	}
	if root != s.RootPath("minimal") {
		t.Errorf("root = %s, want %s", root, s.RootPath("minimal"))
	}
	if !strings.Contains(progress.String(), "Built template minimal") {
		t.Errorf("progress does not say it built:\n%s", progress.String())
	}

	for cmd, want := range map[string]string{
		"id ohm":                         "uid=1000(ohm) gid=1000(ohm)",
		"id root":                        "uid=0(root) gid=0(root)",
		"echo hi | cat":                  "hi",
		"ls -d /proc /sys /dev /root":    "/dev\n/proc\n/root\n/sys",
		"stat -c '%a %u' /tmp /home/ohm": "1777 0\n755 1000",
		"cat /etc/hostname":              "ohm",
		"grep ^ohm: /etc/passwd":         "ohm:x:1000:1000:ohm:/home/ohm:/bin/sh",
		"which df sleep mkdir rm":        "/bin/df\n/bin/sleep\n/bin/mkdir\n/bin/rm",
	} {
		out, err := exec.Command("chroot", root, "/bin/sh", "-c", cmd).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v: %s", cmd, err, out)
			continue
		}
		if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, want) {
			t.Errorf("%s: got %q, want %q", cmd, got, want)
		}
	}
	if HasBash(root) {
		t.Error("minimal has bash")
	}

	infos, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := infos[1]
	if m.Name != "minimal" || !m.Built || m.Root != root || m.Shell != "/bin/sh" || m.SizeBytes < 1<<20 || m.BuiltAt.IsZero() {
		t.Errorf("minimal listed as %+v", m)
	}
	if infos[0].Built {
		t.Errorf("coding-agent listed as built: %+v", infos[0])
	}

	// Ensure on a built template builds nothing.
	progress.Reset()
	if _, err := s.Ensure(ctx, "minimal", &progress); err != nil || progress.Len() != 0 {
		t.Errorf("second Ensure: %v, progress %q", err, progress.String())
	}

	// Build replaces it with a new one, leaving nothing behind.
	if _, err := s.Build(ctx, "minimal", nil); err != nil {
		t.Fatal(err)
	}
	again, err := s.Get(ctx, "minimal")
	if err != nil {
		t.Fatal(err)
	}
	if !again.BuiltAt.After(m.BuiltAt) {
		t.Errorf("rebuild kept the old build: %v, then %v", m.BuiltAt, again.BuiltAt)
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("rebuild left %v", l)
	}
}

func TestConcurrentEnsureBuildsOnce(t *testing.T) {
	needRoot(t)
	dataDir := t.TempDir()
	var builds atomic.Int32
	count := func(string, string) error { builds.Add(1); return nil }
	// Two stores over one data directory stand for two processes: they
	// share no in-process lock, only the flock.
	stores := []*Store{NewStore(dataDir), NewStore(dataDir)}
	for _, s := range stores {
		s.beforeCommit = count
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := stores[i%2].Ensure(context.Background(), "minimal", nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("built %d times, want once", n)
	}
}

func TestFailedBuildLeavesNothing(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	s := NewStore(t.TempDir())
	injected := errors.New("injected failure")
	s.beforeCommit = func(string, string) error { return injected }
	if _, err := s.Ensure(ctx, "minimal", nil); !errors.Is(err, injected) {
		t.Fatalf("Ensure = %v, want the injected failure", err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "minimal")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed build left the template directory: %v", err)
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("failed build left %v", l)
	}
	if info, err := s.Get(ctx, "minimal"); err != nil || info.Built {
		t.Errorf("after a failed build: %+v, %v", info, err)
	}

	// A good build, then a failed rebuild: the good one stays.
	s.beforeCommit = nil
	if _, err := s.Ensure(ctx, "minimal", nil); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(ctx, "minimal")
	s.beforeCommit = func(string, string) error { return injected }
	if _, err := s.Build(ctx, "minimal", nil); !errors.Is(err, injected) {
		t.Fatalf("Build = %v, want the injected failure", err)
	}
	after, err := s.Get(ctx, "minimal")
	if err != nil || !after.Built || !after.BuiltAt.Equal(before.BuiltAt) {
		t.Errorf("failed rebuild changed the template: %+v -> %+v (%v)", before, after, err)
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("failed rebuild left %v", l)
	}
}

func TestInterruptedBuildIsCleanedUp(t *testing.T) {
	needRoot(t)
	s := NewStore(t.TempDir())
	// What a build killed halfway leaves: a temporary directory with a
	// partial root, and a mount inside it.
	stale := filepath.Join(s.dir, ".build-minimal-123")
	proc := filepath.Join(stale, "rootfs", "proc")
	if err := os.MkdirAll(proc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("mount", "-t", "tmpfs", "tmpfs", proc).Run(); err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", proc).Run() })
	if info, _ := s.Get(context.Background(), "minimal"); info.Built {
		t.Fatal("a partial build counts as built")
	}
	if _, err := s.Ensure(context.Background(), "minimal", nil); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("stale build not removed: %v", l)
	}
}

func TestCancelledBuild(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := NewStore(t.TempDir())
	if _, err := s.Ensure(ctx, "minimal", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ensure = %v, want context.Canceled", err)
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("cancelled build left %v", l)
	}
}

func TestCodingAgent(t *testing.T) {
	if os.Getenv("OHM_TEST_CODING_AGENT") != "1" {
		t.Skip("set OHM_TEST_CODING_AGENT=1 to build the coding-agent template (minutes, needs the Debian mirror)")
	}
	needRoot(t)
	ctx := context.Background()
	s := NewStore(t.TempDir())
	var progress bytes.Buffer
	root, err := s.Ensure(ctx, "coding-agent", &progress)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	t.Logf("progress:\n%s", progress.String())
	info, err := s.Get(ctx, "coding-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %.1fs, %s", info.BuildTime, units.FormatSize(info.SizeBytes))
	if info.Shell != "/bin/bash" || !HasBash(root) {
		t.Errorf("coding-agent shell = %q", info.Shell)
	}
	for cmd, want := range map[string]string{
		"id ohm":                                            "uid=1000(ohm) gid=1000(ohm)",
		"getent passwd ohm | cut -d: -f6,7":                 "/home/ohm:/bin/bash",
		"stat -c %a /etc/sudoers.d/ohm":                     "440",
		"su ohm -c 'sudo -n id -u'":                         "0",
		"python3 -c 'import venv; print(1)'":                "1",
		"node -e 'console.log(2)'":                          "2",
		"echo '{\"a\":3}' | jq .a":                          "3",
		"ls /var/lib/apt/lists | grep -c _Packages || true": "0",
	} {
		out, err := exec.Command("chroot", root, "/bin/bash", "-c", cmd).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v: %s", cmd, err, out)
			continue
		}
		if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, want) {
			t.Errorf("%s: got %q, want %q", cmd, got, want)
		}
	}
	for _, tool := range []string{"git", "curl", "gcc", "make", "npm", "pip3", "zip", "unzip", "ps", "ip", "less", "sudo"} {
		if out, err := exec.Command("chroot", root, "/bin/bash", "-c", "command -v "+tool).CombinedOutput(); err != nil {
			t.Errorf("%s missing: %v %s", tool, err, out)
		}
	}
	if mounts, _ := mountsUnder(filepath.Dir(root)); len(mounts) != 0 {
		t.Errorf("build left mounts: %v", mounts)
	}
}

func TestHostMirror(t *testing.T) {
	tests := []struct {
		name, text string
		deb822     bool
		want       string
	}{
		{"deb822", "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n", true, "http://deb.debian.org/debian"},
		{"deb822 security first", "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\nTypes: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm\n", true, "http://mirror.example/debian"},
		{"deb822 src only", "Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\n", true, ""},
		{"one-line", "# x\ndeb-src http://a/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://b/debian bookworm main\n", false, "http://b/debian"},
		{"one-line security", "deb http://security.debian.org/debian-security bookworm-security main\n", false, ""},
	}
	for _, tt := range tests {
		got := mirrorFromOneLine(tt.text)
		if tt.deb822 {
			got = mirrorFromDeb822(tt.text)
		}
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
