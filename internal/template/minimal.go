package template

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"ohm/internal/filecopy"

	"golang.org/x/sys/unix"
)

// busyboxPath is the host's static busybox (Debian package busybox-static),
// the whole userland of the minimal template.
const busyboxPath = "/bin/busybox"

// buildMinimal makes a tiny root: a static busybox with its applet links,
// users root and ohm, and the directories a computer mounts over. It has no
// bash, so commands run through /bin/sh.
func buildMinimal(ctx context.Context, _ *Store, root string, p *progressWriter) error {
	p.Phase("Installing busybox", busyboxPath)
	list, err := exec.CommandContext(ctx, busyboxPath, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets (is busybox-static installed?): %w", err)
	}

	dirs := []struct {
		path string
		mode uint32
		uid  int
	}{
		{"bin", 0o755, 0}, {"sbin", 0o755, 0}, {"usr/bin", 0o755, 0}, {"usr/sbin", 0o755, 0},
		{"etc", 0o755, 0}, {"dev", 0o755, 0}, {"proc", 0o555, 0}, {"sys", 0o555, 0},
		{"run", 0o755, 0}, {"var", 0o755, 0}, {"var/tmp", 0o1777, 0}, {"tmp", 0o1777, 0},
		{"root", 0o700, 0}, {"home", 0o755, 0}, {"home/ohm", 0o755, 1000},
	}
	for _, d := range dirs {
		path := filepath.Join(root, d.path)
		if err := os.MkdirAll(path, 0o755); err != nil {
			return err
		}
		// Chmod after Mkdir, as the umask strips bits; unix.Chmod because
		// os.Chmod does not take the sticky bit as 0o1000.
		if err := unix.Chmod(path, d.mode); err != nil {
			return err
		}
		if err := os.Lchown(path, d.uid, d.uid); err != nil {
			return err
		}
	}
	if err := filecopy.New(busyboxPath, filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		return fmt.Errorf("copy busybox: %w", err)
	}
	n := 0
	for _, applet := range strings.Fields(string(list)) {
		applet = filepath.Clean(applet)
		if applet == "bin/busybox" || strings.HasPrefix(applet, "..") || filepath.IsAbs(applet) {
			continue
		}
		dst := filepath.Join(root, applet)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", dst); err != nil {
			return fmt.Errorf("link applet %s: %w", applet, err)
		}
		n++
	}
	p.Phase("Installing busybox", fmt.Sprintf("%d applets", n))

	p.Phase("Configuring", "users root and ohm")
	files := []struct {
		path string
		mode os.FileMode
		data string
	}{
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nohm:x:1000:1000:ohm:/home/ohm:/bin/sh\n"},
		{"etc/group", 0o644, "root:x:0:\nohm:x:1000:\n"},
		{"etc/shadow", 0o640, "root:*:19000:0:99999:7:::\nohm:*:19000:0:99999:7:::\n"},
		{"etc/hostname", 0o644, "ohm\n"},
		{"etc/hosts", 0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		{"etc/profile", 0o644, "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(root, f.path), []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	return nil
}
