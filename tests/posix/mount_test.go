//go:build linux

package posix

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/tests/internal/ohmtest"
)

// TestMountProperties checks what a mounted volume shows the system: its
// type in /proc/mounts, about 1.0P in statfs and df, and "ohmfs" as the
// filesystem df names.
func TestMountProperties(t *testing.T) {
	ohmtest.RequireFUSE(t)
	v := ohmtest.NewVolume(t, ohmtest.Binary(t))
	v.Mount(t)
	defer v.Umount(t)

	if typ, _ := ohmtest.MountType(v.Dir); typ != "fuse.ohmfs" {
		t.Errorf("/proc/mounts type %q, want fuse.ohmfs", typ)
	}
	if src := ohmtest.MountSource(v.Dir); src != "ohmfs" {
		t.Errorf("/proc/mounts source %q, want ohmfs", src)
	}
	var s unix.Statfs_t
	if err := unix.Statfs(v.Dir, &s); err != nil {
		t.Fatalf("statfs: %v", err)
	}
	size := float64(s.Blocks) * float64(s.Bsize)
	if size < 0.95*(1<<50) || size > 1.05*(1<<50) {
		t.Errorf("statfs size %.4g bytes (blocks %d x bsize %d), want about 1 PiB", size, s.Blocks, s.Bsize)
	}
	if s.Bavail == 0 || s.Ffree == 0 {
		t.Errorf("statfs: bavail %d ffree %d, want free space and inodes", s.Bavail, s.Ffree)
	}
	out, err := exec.Command("df", "-h", v.Dir).Output()
	if err != nil {
		t.Fatalf("df -h: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 2 || fields[0] != "ohmfs" || fields[1] != "1.0P" {
		t.Errorf("df -h shows %q, want filesystem ohmfs, size 1.0P", lines[len(lines)-1])
	}

	// Used bytes are real: 64 MiB of data shows in statfs.
	free0 := s.Bfree
	data := randomBytes(9, 64<<20)
	if err := os.WriteFile(filepath.Join(v.Dir, "used"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(v.Dir, "used"))
	f.Sync()
	f.Close()
	if err := unix.Statfs(v.Dir, &s); err != nil {
		t.Fatal(err)
	}
	if used := (free0 - s.Bfree) * uint64(s.Bsize); used < 32<<20 {
		t.Errorf("after writing 64 MiB, statfs shows %d bytes more used", used)
	}
}

// TestMountErrors checks `ohm fs mount`'s bad input: each a one-line error
// and a non-zero exit, nothing corrupted.
func TestMountErrors(t *testing.T) {
	ohmtest.RequireFUSE(t)
	bin := ohmtest.Binary(t)
	v := ohmtest.NewVolume(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	oneLineError := func(t *testing.T, what string, args ...string) {
		t.Helper()
		_, stderr, err := ohmtest.Run(ctx, bin, args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Errorf("%s: %v, want a non-zero exit", what, err)
			return
		}
		msg := strings.TrimSpace(stderr)
		if msg == "" || strings.Contains(msg, "\n") || strings.Contains(msg, "goroutine") {
			t.Errorf("%s: stderr %q, want one line", what, stderr)
		}
	}

	missing := filepath.Join(t.TempDir(), "nothing-here")
	other := t.TempDir()
	oneLineError(t, "mount of a missing volume", "fs", "mount", "--background", missing, other)
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "some-file"), []byte("not a volume"), 0o644)
	oneLineError(t, "mount of a directory that is no volume", "fs", "mount", "--background", foreign, other)
	oneLineError(t, "format of a non-empty directory", "fs", "format", foreign)
	oneLineError(t, "format of an existing volume", "fs", "format", v.Path)
	oneLineError(t, "fsck of a missing volume", "fs", "fsck", missing)

	v.Mount(t)
	oneLineError(t, "a second mount of a mounted volume", "fs", "mount", "--background", v.Path, other)
	if ohmtest.Mounted(other) {
		ohmtest.ForceUnmount(other)
		t.Errorf("the second mount of a volume succeeded: single writer broken")
	}
	v2 := ohmtest.NewVolume(t, bin)
	oneLineError(t, "mount on a busy mountpoint", "fs", "mount", "--background", v2.Path, v.Dir)
	os.WriteFile(filepath.Join(v.Dir, "f"), []byte("still fine"), 0o644)
	// A process working in the mount keeps it busy: umount says so, in one
	// line, and leaves it mounted and serving.
	holder := exec.Command("sleep", "60")
	holder.Dir = v.Dir
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, "umount of a mount a process works in", "fs", "umount", v.Dir)
	holder.Process.Kill()
	holder.Wait()
	if b, err := os.ReadFile(filepath.Join(v.Dir, "f")); err != nil || string(b) != "still fine" {
		t.Errorf("after the refused umount: %q, %v", b, err)
	}
	v.Umount(t)

	out := ohmtest.Ohm(t, bin, "fs", "fsck", v.Path)
	if !strings.Contains(out, "clean") {
		t.Errorf("fsck after the refused operations: %q, want clean", out)
	}
	v.Mount(t)
	defer v.Umount(t)
	if b, err := os.ReadFile(filepath.Join(v.Dir, "f")); err != nil || string(b) != "still fine" {
		t.Errorf("after remount: %q, %v", b, err)
	}
}
