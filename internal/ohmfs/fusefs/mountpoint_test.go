package fusefs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"

	"ohm/internal/ohmfs/volume"
)

// ohmfsMounts returns the mountpoints of every ohmfs mount on the host.
func ohmfsMounts(t *testing.T) map[string]bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("fuse." + FSName))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range ms {
		got[m.Mountpoint] = true
	}
	return got
}

// TestMountRefusesSymlinks plants a symlink at the mountpoint and in a
// directory above it, as root in a computer could in the directory its
// workspace is mounted in: the mount is refused, nothing is mounted where
// the links point (or anywhere else), and nothing is made there.
func TestMountRefusesSymlinks(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	dir := t.TempDir()
	url := filepath.Join(dir, "vol")
	if err := volume.Format(ctx, url, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target") // where the attacker wants the mount
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "up")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := ohmfsMounts(t)
	for _, tt := range []struct {
		name, mp string
		want     error  // errors.Is
		wantMsg  string // or a part of the message
		notMade  string // a path that must not exist afterwards
	}{
		{name: "symlink at the mountpoint", mp: filepath.Join(dir, "link"), want: ErrSymlink},
		{name: "symlink above, to an existing directory", mp: filepath.Join(dir, "link", "."), want: ErrSymlink},
		{name: "symlink above, missing mountpoint", mp: filepath.Join(dir, "link", "ws"), want: ErrSymlink, notMade: filepath.Join(target, "ws")},
		{name: "symlink two levels above", mp: filepath.Join(dir, "up", "target", "deep", "ws"), want: ErrSymlink, notMade: filepath.Join(target, "deep")},
		{name: "a file", mp: file, wantMsg: "not a directory"},
		{name: "relative", mp: "relative/mnt", wantMsg: "not an absolute path"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vol, err := volume.Open(ctx, url, volume.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer vol.Close(ctx)
			m, err := Mount(ctx, vol, tt.mp, Options{})
			if err == nil {
				m.Close(ctx)
				t.Fatalf("Mount(%s) succeeded", tt.mp)
			}
			if tt.want != nil && !errors.Is(err, tt.want) || tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Mount(%s) = %v, want %v %q", tt.mp, err, tt.want, tt.wantMsg)
			}
			if _, ok, _ := MountedAt(target); ok {
				t.Fatalf("something got mounted at the symlink's target %s", target)
			}
			if tt.notMade != "" {
				if _, err := os.Lstat(tt.notMade); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s was made through the symlink (%v)", tt.notMade, err)
				}
			}
			after := ohmfsMounts(t)
			for mp := range after {
				if !before[mp] {
					t.Errorf("a refused mount left an ohmfs mount at %s", mp)
				}
			}
		})
	}

	// Missing directories without symlinks are made, one at a time.
	vol, err := volume.Open(ctx, url, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close(ctx)
	deep := filepath.Join(dir, "a", "b", "c")
	m, err := Mount(ctx, vol, deep, Options{})
	if err != nil {
		t.Fatalf("mount at a missing path without symlinks: %v", err)
	}
	defer m.Close(ctx)
	if fstype, ok, _ := MountedAt(deep); !ok || fstype != "fuse."+FSName {
		t.Fatalf("%s: mounted %v, type %q", deep, ok, fstype)
	}
}
