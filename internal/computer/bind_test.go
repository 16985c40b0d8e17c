package computer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// plantLinks are the links a computer whose /home was once writable could
// have left on the way to its workspace's mountpoint <dir>/mnt/ohm, each
// pointing at a host directory: the mountpoint itself, or its parent.
var plantLinks = []struct {
	name  string
	plant func(t *testing.T, mountpoint, target string)
}{
	{"mountpoint", func(t *testing.T, mountpoint, target string) {
		if err := os.Remove(mountpoint); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, mountpoint); err != nil {
			t.Fatal(err)
		}
	}},
	{"parent", func(t *testing.T, mountpoint, target string) {
		mnt := filepath.Dir(mountpoint)
		if err := os.RemoveAll(mnt); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, mnt); err != nil {
			t.Fatal(err)
		}
		// What the link leads to looks like a /home with ohm in it.
		if err := os.Mkdir(filepath.Join(target, "ohm"), 0o755); err != nil {
			t.Fatal(err)
		}
	}},
}

// assertNotMountedThrough fails if anything is mounted at or below target
// or was made in it besides what want lists.
func assertNotMountedThrough(t *testing.T, target string, want ...string) {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(target))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Errorf("mounted through the link: %s (%s)", m.Mountpoint, m.FSType)
		unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
	}
	entries, _ := os.ReadDir(target)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("the link's target holds %v, want %v", got, want)
	}
}

// TestDirWorkspaceMountRefusesLinks plants a link at the mountpoint or its
// parent: Mount must fail and mount nothing where the link points.
func TestDirWorkspaceMountRefusesLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	ctx := context.Background()
	for _, tc := range plantLinks {
		t.Run(tc.name, func(t *testing.T) {
			vol, mp := computerDir(t)
			var w DirWorkspace
			if err := w.Format(ctx, vol); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(vol, "secret"), []byte("workspace"), 0o644); err != nil {
				t.Fatal(err)
			}
			target := t.TempDir()
			tc.plant(t, mp, target)
			if err := w.Mount(ctx, vol, mp); err == nil {
				t.Error("Mount followed a link")
			}
			var want []string
			if tc.name == "parent" {
				want = []string{"ohm"}
			}
			assertNotMountedThrough(t, target, want...)
			if _, err := os.Stat(filepath.Join(target, "ohm", "secret")); err == nil {
				t.Error("the workspace is reachable through the link")
			}
		})
	}
}

// TestDirWorkspaceMountFlags: the bind made through a descriptor is the
// workspace, nosuid and nodev.
func TestDirWorkspaceMountFlags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	ctx := context.Background()
	vol, mp := computerDir(t)
	var w DirWorkspace
	if err := w.Format(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "f"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Mount(ctx, vol, mp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Unmount(ctx, mp) })
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "ok" {
		t.Errorf("file through the bind: %q %v", got, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&(unix.ST_NOSUID|unix.ST_NODEV) != unix.ST_NOSUID|unix.ST_NODEV {
		t.Errorf("bind flags %#x, want nosuid,nodev", st.Flags)
	}
}

// TestBlockWorkspaceMountRefusesLinks is the workspace remount escape
// against the block workspace: its mount is gone, a link waits at its
// mountpoint or above; mounting it again must fail and mount nothing
// where the link points.
func TestBlockWorkspaceMountRefusesLinks(t *testing.T) {
	requireBlock(t)
	ctx := context.Background()
	w := NewBlockWorkspace(ohmBinary(t))
	for _, tc := range plantLinks {
		t.Run(tc.name, func(t *testing.T) {
			vol, mp := computerDir(t)
			t.Cleanup(func() { w.Destroy(context.Background(), vol) })
			if err := w.Format(ctx, vol); err != nil {
				t.Fatalf("format: %v", err)
			}
			if err := w.Mount(ctx, vol, mp); err != nil {
				t.Fatalf("mount: %v", err)
			}
			if err := os.WriteFile(filepath.Join(mp, "secret"), []byte("workspace"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := w.Unmount(ctx, mp); err != nil {
				t.Fatalf("unmount: %v", err)
			}
			target := t.TempDir()
			tc.plant(t, mp, target)
			if err := w.Mount(ctx, vol, mp); err == nil {
				t.Error("Mount followed a link")
			}
			var want []string
			if tc.name == "parent" {
				want = []string{"ohm"}
			}
			assertNotMountedThrough(t, target, want...)
			if _, err := os.Stat(filepath.Join(target, "ohm", "secret")); err == nil {
				t.Error("the workspace is reachable through the link")
			}
		})
	}
}
