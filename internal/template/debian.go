package template

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"ohm/internal/hostbin"
)

// debianSuite is the release the coding-agent template is built from.
const debianSuite = "bookworm"

// codingAgentPackages are installed by apt-get inside the debootstrapped
// root. debootstrap's own resolver cannot install them itself: it ignores
// Provides and alternatives, and npm's dependency tree needs both.
var codingAgentPackages = []string{
	"bash", "coreutils", "python3", "python3-venv", "python3-pip", "git", "curl",
	"ca-certificates", "build-essential", "nodejs", "npm", "jq", "zip", "unzip",
	"procps", "iproute2", "less", "sudo",
	// Resolves the computer's own hostname without an /etc/hosts entry,
	// which sudo looks up on every call.
	"libnss-myhostname",
}

// buildCodingAgent builds Debian bookworm: debootstrap --variant=minbase,
// then apt-get install of codingAgentPackages in a chroot, then the ohm user
// with passwordless sudo. Downloaded packages are kept in s.CacheDir, which
// debootstrap and apt (by a bind mount over /var/cache/apt/archives) share,
// so a rebuild downloads nothing.
func buildCodingAgent(ctx context.Context, s *Store, root string, p *progressWriter) error {
	// By absolute path, root-owned (hostbin), never through $PATH: it
	// runs as root. (The chroot is the kernel's, SysProcAttr.Chroot.)
	if _, err := hostbin.Path("debootstrap"); err != nil {
		return fmt.Errorf("debootstrap not found (apt-get install debootstrap): %w", err)
	}
	mirror := s.Mirror
	if mirror == "" {
		mirror = HostMirror()
	}
	if err := os.MkdirAll(s.CacheDir, 0o755); err != nil {
		return fmt.Errorf("create package cache: %w", err)
	}
	// Builds in other data directories share the package cache; take turns.
	cacheLock, err := flock(ctx, filepath.Join(s.CacheDir, ".lock"), func() {
		p.Phase("Waiting", "for another build using the package cache "+s.CacheDir)
	})
	if err != nil {
		return fmt.Errorf("lock package cache: %w", err)
	}
	defer cacheLock.Close()

	logf, err := os.Create(filepath.Join(s.dir, "coding-agent.build.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// Whatever happens below, nothing stays mounted inside the new root.
	defer func() {
		if err := unmountUnder(root); err != nil {
			p.Linef("warning: %v", err)
		}
	}()

	p.Phase("Bootstrapping", "Debian "+debianSuite+" from "+mirror)
	db := &debootstrapProgress{p: p}
	err = runLogged(ctx, logf, db.line, nil, "debootstrap",
		"--variant=minbase", "--cache-dir="+s.CacheDir, debianSuite, root, mirror)
	if err != nil {
		return fmt.Errorf("debootstrap: %w", err)
	}

	// Keep services from starting inside the chroot during installs.
	policy := filepath.Join(root, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	archives := filepath.Join(root, "var/cache/apt/archives")
	if err := os.MkdirAll(archives, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(s.CacheDir, archives, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind package cache: %w", err)
	}
	// dpkg fsyncs every file it unpacks; the whole tree is synced once
	// before the build is committed, so that is wasted time here.
	unsafeIO := filepath.Join(root, "etc/dpkg/dpkg.cfg.d/ohm-build-unsafe-io")
	if err := os.WriteFile(unsafeIO, []byte("force-unsafe-io\n"), 0o644); err != nil {
		return err
	}
	// Some maintainer scripts read /proc.
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc in the new root: %w", err)
	}

	p.Phase("Installing packages", strings.Join(codingAgentPackages, " "))
	ap := &aptProgress{p: p}
	args := append([]string{"apt-get", "install", "-y", "--no-install-recommends",
		"-o", "Dpkg::Use-Pty=0", "-o", "APT::Keep-Downloaded-Packages=true"}, codingAgentPackages...)
	if err := runLogged(ctx, logf, ap.line, chrootAttr(root), args[0], args[1:]...); err != nil {
		return fmt.Errorf("apt-get install: %w", err)
	}
	// Unmount the cache before cleaning, or apt-get clean would empty it.
	if err := unmountUnder(root); err != nil {
		return err
	}

	p.Phase("Configuring", "user ohm with passwordless sudo")
	steps := [][]string{
		{"groupadd", "--gid", "1000", "ohm"},
		{"useradd", "--uid", "1000", "--gid", "1000", "--create-home", "--home-dir", "/home/ohm", "--shell", "/bin/bash", "ohm"},
		{"apt-get", "clean"},
	}
	for _, argv := range steps {
		if err := runLogged(ctx, logf, nil, chrootAttr(root), argv[0], argv[1:]...); err != nil {
			return fmt.Errorf("%s: %w", argv[0], err)
		}
	}
	sudoers := filepath.Join(root, "etc/sudoers.d/ohm")
	if err := os.WriteFile(sudoers, []byte("ohm ALL=(ALL:ALL) NOPASSWD: ALL\n"), 0o440); err != nil {
		return err
	}
	if err := os.Chmod(sudoers, 0o440); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("ohm\n"), 0o644); err != nil {
		return err
	}
	for _, f := range []string{policy, unsafeIO} {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	lists, _ := filepath.Glob(filepath.Join(root, "var/lib/apt/lists/*"))
	for _, l := range lists {
		if filepath.Base(l) == "partial" || filepath.Base(l) == "lock" {
			continue
		}
		if err := os.RemoveAll(l); err != nil {
			return err
		}
	}
	return nil
}

// programPath is the absolute path program name runs from: on the host
// (chroot empty) the root-owned one in hostbin.TrustedDirs; chrooted, the
// first of those directories inside chroot that has it, a path the
// process resolves after entering the new root. Never the daemon's $PATH,
// which could put any program first.
func programPath(chroot, name string) (string, error) {
	if chroot == "" {
		return hostbin.Path(name)
	}
	if name == "" || filepath.Base(name) != name {
		return "", fmt.Errorf("program %q: not a bare program name", name)
	}
	for _, dir := range hostbin.TrustedDirs() {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(filepath.Join(chroot, p)); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in the new root's %v", name, hostbin.TrustedDirs())
}

// chrootAttr runs a command chrooted into root, in its own process group
// so that cancelling kills its children too.
func chrootAttr(root string) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Chroot: root, Setpgid: true}
}

// runLogged runs program name with args, copying its combined output to
// logw and handing each line to onLine. On failure the error carries the
// last lines of output. Cancelling ctx kills the whole process group.
// name is a bare name, found by absolute path (programPath), never
// through $PATH.
func runLogged(ctx context.Context, logw io.Writer, onLine func(string), attr *syscall.SysProcAttr, name string, args ...string) error {
	if attr == nil {
		attr = &syscall.SysProcAttr{Setpgid: true}
	}
	bin, err := programPath(attr.Chroot, name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = attr
	cmd.Dir = "/"
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive", "DEBCONF_NONINTERACTIVE_SEEN=true",
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	fmt.Fprintf(logw, "+ %s %s\n", name, strings.Join(args, " "))

	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logw, line)
			if onLine != nil {
				onLine(line)
			}
			if strings.TrimSpace(line) != "" {
				tail = append(tail, line)
				if len(tail) > 8 {
					tail = tail[1:]
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if f, ok := logw.(*os.File); ok {
			return fmt.Errorf("%w: %s (full log: %s)", err, lastError(tail), f.Name())
		}
		return fmt.Errorf("%w: %s", err, lastError(tail))
	}
	return nil
}

// lastError picks the most telling of a failed command's last lines: the
// last "E:" line if any, else the last line.
func lastError(tail []string) string {
	for i := len(tail) - 1; i >= 0; i-- {
		if strings.HasPrefix(tail[i], "E: ") {
			return tail[i]
		}
	}
	if len(tail) == 0 {
		return "no output"
	}
	return tail[len(tail)-1]
}

// debootstrapProgress condenses debootstrap's "I: Retrieving pkg",
// "I: Extracting pkg", "I: Unpacking pkg", "I: Configuring pkg" lines into
// counts. It covers 0-30% of the whole build.
type debootstrapProgress struct {
	p                                          *progressWriter
	retrieved, extracted, unpacked, configured map[string]bool
}

func (d *debootstrapProgress) line(line string) {
	if d.retrieved == nil {
		d.retrieved, d.extracted = map[string]bool{}, map[string]bool{}
		d.unpacked, d.configured = map[string]bool{}, map[string]bool{}
	}
	if strings.HasPrefix(line, "W: ") || strings.HasPrefix(line, "E: ") {
		d.p.Linef("debootstrap: %s", line)
		return
	}
	rest, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		return
	}
	verb, pkg, _ := strings.Cut(rest, " ")
	pkg = strings.TrimSuffix(strings.TrimSuffix(pkg, "..."), ":amd64")
	if i := strings.IndexByte(pkg, ' '); i >= 0 {
		pkg = pkg[:i] // "Retrieving libc6 2.36-9" -> libc6
	}
	n := len(d.retrieved)
	frac := func(k, phases int) float64 {
		if n == 0 {
			return 0
		}
		return min(float64(k)/float64(phases*n), 1)
	}
	// Extracting, unpacking and configuring overlap in debootstrap's
	// output, so one fraction over all three counts drives 10-30%: it only
	// grows, where a percentage per verb went backwards.
	done := func() int {
		return 10 + int(20*frac(len(d.extracted)+len(d.unpacked)+len(d.configured), 3))
	}
	switch verb {
	case "Retrieving", "Validating":
		if pkg == "Release" || pkg == "InRelease" || pkg == "Packages" {
			d.p.Step("debootstrap-index", 0, "Bootstrapping: downloading package index")
			return
		}
		d.retrieved[pkg] = true
		d.p.Step("debootstrap-retrieve", 1+min(len(d.retrieved)/30, 8), "Bootstrapping: retrieving packages %d", len(d.retrieved))
	case "Extracting":
		d.extracted[pkg] = true
		d.p.Step("debootstrap-extract", done(), "Bootstrapping: extracting %d/%d %s", len(d.extracted), n, pkg)
	case "Unpacking":
		if strings.HasSuffix(rest, "packages...") || strings.HasPrefix(rest, "Unpacking the") {
			return
		}
		d.unpacked[pkg] = true
		d.p.Step("debootstrap-unpack", done(), "Bootstrapping: unpacking %d/%d %s", len(d.unpacked), n, pkg)
	case "Configuring":
		if strings.HasSuffix(rest, "packages...") || strings.HasPrefix(rest, "Configuring the") {
			return
		}
		d.configured[pkg] = true
		d.p.Step("debootstrap-configure", done(), "Bootstrapping: configuring %d/%d %s", len(d.configured), n, pkg)
	case "Base":
		d.p.Step("debootstrap-done", 30, "Bootstrapping: base system installed")
	}
}

// aptProgress condenses apt-get install's output ("N newly installed",
// "Get:i ...", "Unpacking pkg", "Setting up pkg") into counts. It covers
// 30-95% of the whole build.
type aptProgress struct {
	p                    *progressWriter
	total                int
	unpacked, configured int
}

var (
	aptTotalRE = regexp.MustCompile(`^\d+ upgraded, (\d+) newly installed`)
	aptGetRE   = regexp.MustCompile(`^Get:(\d+) \S+ \S+ \S+ (\S+)`)
)

func (a *aptProgress) line(line string) {
	frac := func(k int) float64 {
		if a.total == 0 {
			return 0
		}
		return min(float64(k)/float64(a.total), 1)
	}
	// dpkg unpacks and sets up packages in interleaved batches, so 40-95%
	// follows both counts together; a percentage per verb went from 70%
	// back to 40% at the next batch.
	installed := func() int { return 40 + int(55*frac(a.unpacked+a.configured)/2) }
	switch {
	case aptTotalRE.MatchString(line):
		a.total, _ = strconv.Atoi(aptTotalRE.FindStringSubmatch(line)[1])
		a.p.Step("apt-total", 30, "Installing %d packages", a.total)
	case aptGetRE.MatchString(line):
		m := aptGetRE.FindStringSubmatch(line)
		i, _ := strconv.Atoi(m[1])
		a.p.Step("apt-download", 30+int(10*frac(i)), "Downloading %d/%d %s", i, a.total, m[2])
	case strings.HasPrefix(line, "Unpacking "):
		a.unpacked++
		a.p.Step("apt-install", installed(), "Unpacking %d/%d %s", a.unpacked, a.total, aptPkg(line))
	case strings.HasPrefix(line, "Setting up "):
		a.configured++
		a.p.Step("apt-install", installed(), "Setting up %d/%d %s", a.configured, a.total, aptPkg(line))
	case strings.HasPrefix(line, "E: ") && !strings.Contains(line, "Can not write log"):
		a.p.Linef("apt: %s", line)
	}
}

// aptPkg extracts "libc6" from "Unpacking libc6:amd64 (2.36-9) ...".
func aptPkg(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return ""
	}
	pkg := f[1]
	if f[0] == "Setting" && len(f) > 2 {
		pkg = f[2]
	}
	pkg, _, _ = strings.Cut(pkg, ":")
	return pkg
}

// HostMirror returns the first Debian archive URI in the host's apt
// configuration (/etc/apt/sources.list.d/*.sources in deb822 form, then
// /etc/apt/sources.list), skipping security archives; it falls back to
// http://deb.debian.org/debian.
func HostMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if m := mirrorFromDeb822(string(b)); m != "" {
				return m
			}
		}
	}
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	for _, f := range append([]string{"/etc/apt/sources.list"}, lists...) {
		if b, err := os.ReadFile(f); err == nil {
			if m := mirrorFromOneLine(string(b)); m != "" {
				return m
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func usableMirror(uri, suite string) bool {
	return (strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://")) &&
		!strings.Contains(uri, "security") && !strings.HasSuffix(suite, "-security") &&
		(suite == "" || strings.HasPrefix(suite, debianSuite) || suite == "stable")
}

// mirrorFromDeb822 picks the first usable URI of a deb822 .sources file.
func mirrorFromDeb822(text string) string {
	for _, stanza := range regexp.MustCompile(`\n\s*\n`).Split(text, -1) {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if ok && !strings.HasPrefix(k, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || fields["enabled"] == "no" {
			continue
		}
		suite := strings.Fields(fields["suites"] + " ")
		for _, uri := range strings.Fields(fields["uris"]) {
			if len(suite) > 0 && usableMirror(uri, suite[0]) {
				return strings.TrimSuffix(uri, "/")
			}
		}
	}
	return ""
}

// mirrorFromOneLine picks the first usable URI of a one-line sources.list.
func mirrorFromOneLine(text string) string {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // [ options ]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && usableMirror(f[0], f[1]) {
			return strings.TrimSuffix(f[0], "/")
		}
	}
	return ""
}
