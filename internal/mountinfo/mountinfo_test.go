package mountinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sample is a mount table as the kernel writes it: a stack of two
// mounts at /srv/stack, an escaped space, a FUSE mount and fusectl.
const sample = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
1 0 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
40 22 0:36 / /sys/fs/fuse/connections rw,nosuid,nodev,noexec,relatime shared:18 - fusectl fusectl rw
60 1 0:50 / /srv/stack rw,relatime shared:30 - tmpfs bottom rw,size=1024k
61 60 7:3 / /srv/stack rw,relatime shared:31 - ext4 /dev/loop3 rw
70 1 0:52 / /srv/with\040space rw,nosuid,nodev,relatime shared:40 - fuse.ohmfs ohmfs rw,user_id=0,group_id=0
71 1 0:53 /sub /srv/bind ro,relatime shared:41 - ext4 /dev/loop4 ro,errors=remount-ro
`

func TestTable(t *testing.T) {
	tab, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != 7 {
		t.Fatalf("parsed %d mounts, want 7", len(tab))
	}
	tests := []struct {
		path      string
		ok        bool
		stack     int
		id        int
		dev       string // major:minor
		fstype    string
		source    string
		root      string
		superOpts string
	}{
		{path: "/", ok: true, stack: 1, id: 1, dev: "259:2", fstype: "ext4", source: "/dev/nvme0n1p2", root: "/", superOpts: "rw"},
		{path: "/sys/fs/fuse/connections", ok: true, stack: 1, id: 40, dev: "0:36", fstype: "fusectl", source: "fusectl", root: "/", superOpts: "rw"},
		{path: "/sys/fs/fuse/connections/", ok: true, stack: 1, id: 40, dev: "0:36", fstype: "fusectl", source: "fusectl", root: "/", superOpts: "rw"},
		{path: "/srv/stack", ok: true, stack: 2, id: 61, dev: "7:3", fstype: "ext4", source: "/dev/loop3", root: "/", superOpts: "rw"},
		{path: "/srv/with space", ok: true, stack: 1, id: 70, dev: "0:52", fstype: "fuse.ohmfs", source: "ohmfs", root: "/", superOpts: "rw,user_id=0,group_id=0"},
		{path: "/srv/bind", ok: true, stack: 1, id: 71, dev: "0:53", fstype: "ext4", source: "/dev/loop4", root: "/sub", superOpts: "ro,errors=remount-ro"},
		{path: "/srv", ok: false},
		{path: "/srv/stack/inner", ok: false},
		{path: `/srv/with\040space`, ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			m, ok := tab.At(tc.path)
			if ok != tc.ok {
				t.Fatalf("At(%q) ok = %v, want %v", tc.path, ok, tc.ok)
			}
			if got := len(tab.Stack(tc.path)); got != tc.stack {
				t.Errorf("Stack(%q) has %d mounts, want %d", tc.path, got, tc.stack)
			}
			if !ok {
				return
			}
			dev := fmt.Sprintf("%d:%d", m.Major, m.Minor)
			if m.ID != tc.id || dev != tc.dev || m.FSType != tc.fstype || m.Source != tc.source || m.Root != tc.root || m.SuperOpts != tc.superOpts {
				t.Errorf("At(%q) = %+v, want id %d dev %s type %s source %s root %s super %s",
					tc.path, m, tc.id, tc.dev, tc.fstype, tc.source, tc.root, tc.superOpts)
			}
			if m.Dev() != unix.Mkdev(m.Major, m.Minor) {
				t.Errorf("Dev() = %#x", m.Dev())
			}
			if byID, ok := tab.ByID(m.ID); !ok || byID != m {
				t.Errorf("ByID(%d) = %+v, %v", m.ID, byID, ok)
			}
		})
	}
	if _, ok := tab.ByID(999); ok {
		t.Errorf("ByID(999) found a mount")
	}
}

// TestRealMount mounts two tmpfs on one directory and checks that the
// table of this namespace answers with the top one, as stat does.
func TestRealMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if IsMountpoint(dir) {
		t.Fatalf("%s is a mount point before anything is mounted", dir)
	}
	for _, src := range []string{"ohm-bottom", "ohm-top"} {
		if err := unix.Mount(src, dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	}
	if !IsMountpoint(dir) {
		t.Fatalf("%s is not a mount point", dir)
	}
	m, ok, err := At(dir)
	if err != nil || !ok {
		t.Fatalf("At(%s) = %v, %v", dir, ok, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if m.FSType != "tmpfs" || m.Source != "ohm-top" || m.Dev() != st.Dev {
		t.Errorf("At(%s) = %+v, want tmpfs from ohm-top on device %#x", dir, m, st.Dev)
	}
	s, err := Stack(dir)
	if err != nil || len(s) != 2 || s[0].Source != "ohm-bottom" {
		t.Errorf("Stack(%s) = %+v, %v; want ohm-bottom under ohm-top", dir, s, err)
	}
	if byID, ok, err := ByID(m.ID); err != nil || !ok || byID != m {
		t.Errorf("ByID(%d) = %+v, %v, %v", m.ID, byID, ok, err)
	}
	if IsMountpoint(filepath.Dir(dir)) {
		t.Errorf("%s (the parent) counts as a mount point", filepath.Dir(dir))
	}
}
