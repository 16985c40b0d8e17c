package disk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

const pib = 1 << 50

// TestLifecycle creates a disk of each kind on an ohmfs mount, checks
// the loop device and what df shows, writes, closes, opens again and reads
// back, and checks that Close left nothing attached.
func TestLifecycle(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		size int64
	}{
		{Btrfs, pib}, // the workspace's size: mkfs must be quick, df exact
		{Ext4, 1 << 30},
		{XFS, 1 << 30},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			requireDisks(t, tc.kind)
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			cfg := e.config(tc.kind, "workspace")
			start := time.Now()
			d, err := Create(ctx, cfg, tc.size)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			t.Logf("create %s of %d bytes: %v", tc.kind, tc.size, time.Since(start))
			dev := d.Device()
			l, ok := loopByRdev(d.loop.rdev)
			if !ok {
				t.Fatalf("%s is not a loop device", dev)
			}
			for file, want := range map[string]string{"loop/dio": "1", "loop/autoclear": "1", "queue/logical_block_size": "4096"} {
				if got := readSysfs(l.sysfs(file)); got != want {
					t.Errorf("%s %s = %q, want %q", dev, file, got, want)
				}
			}
			if got := readSysfs(l.sysfs("loop/backing_file")); got != filepath.Join(cfg.ImageDir, cfg.Image) {
				t.Errorf("backing file %q", got)
			}
			m, ok, err := mountinfo.At(cfg.Mountpoint)
			if err != nil || !ok {
				t.Fatalf("nothing mounted at %s (%v)", cfg.Mountpoint, err)
			}
			if m.Source != "ohmfs" || m.FSType != string(tc.kind) {
				t.Errorf("mount source %q type %q, want ohmfs and %s", m.Source, m.FSType, tc.kind)
			}
			if !strings.Contains(m.Options, "noatime") {
				t.Errorf("mount options %q lack noatime", m.Options)
			}
			u, err := d.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if tc.kind == Btrfs {
				if u.Size < uint64(tc.size)*99/100 || u.Used > 16<<20 {
					t.Errorf("empty 1 PiB btrfs: size %d, used %d", u.Size, u.Used)
				}
				if d.Size() != tc.size {
					t.Errorf("Size %d", d.Size())
				}
			}

			if err := d.ChownRoot(1000, 1000); err != nil {
				t.Fatal(err)
			}
			var rst unix.Stat_t
			if err := unix.Stat(cfg.Mountpoint, &rst); err != nil || rst.Uid != 1000 || rst.Gid != 1000 {
				t.Errorf("root owned by %d:%d (%v), want 1000:1000", rst.Uid, rst.Gid, err)
			}
			data := bytes.Repeat([]byte("ohm disk "), 100000)
			if err := os.WriteFile(filepath.Join(cfg.Mountpoint, "f"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(ctx, cfg); !errors.Is(err, ErrInUse) {
				t.Errorf("second Open: %v, want ErrInUse", err)
			}
			// Released (a daemon that closes while its computer runs),
			// the disk stays mounted and a new Open takes it over.
			if err := d.Release(); err != nil {
				t.Fatalf("release: %v", err)
			}
			if !mountinfo.IsMountpoint(cfg.Mountpoint) {
				t.Errorf("not mounted after Release")
			}
			if d, err = Open(ctx, cfg); err != nil {
				t.Fatalf("Open after Release: %v", err)
			}
			if got, err := os.ReadFile(filepath.Join(cfg.Mountpoint, "f")); err != nil || !bytes.Equal(got, data) {
				t.Errorf("after the takeover: %d bytes, %v", len(got), err)
			}
			if err := d.Close(ctx); err != nil {
				t.Fatalf("close: %v", err)
			}
			if m, ok, _ := mountinfo.At(cfg.Mountpoint); ok {
				t.Errorf("still mounted after Close: %+v", m)
			}
			if l.bound() {
				t.Errorf("%s still attached after Close", dev)
			}
			if _, err := os.Lstat(filepath.Join(cfg.DevDir, "ohmfs")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("device node left behind: %v", err)
			}
			if err := d.Close(ctx); err != nil {
				t.Errorf("second Close: %v", err)
			}

			d, err = Open(ctx, cfg)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(cfg.Mountpoint, "f"))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes, %v", len(got), err)
			}
			if err := d.Close(ctx); err != nil {
				t.Fatalf("close: %v", err)
			}
			if _, err := Create(ctx, cfg, tc.size); !errors.Is(err, ErrExists) {
				t.Errorf("Create over an existing image: %v, want ErrExists", err)
			}
		})
	}
}

// TestDF runs the real df on a 1 PiB btrfs disk: the filesystem column
// says ohmfs, the size 1.0P, and used stays within a few MiB of what the
// disk holds.
func TestDF(t *testing.T) {
	requireDisks(t, Btrfs)
	e := newEnv(t, envOptions{})
	cfg := e.config(Btrfs, "workspace")
	d := e.create(cfg, pib)
	const written = 64 << 20
	f, err := os.Create(filepath.Join(cfg.Mountpoint, "data"))
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{1}, 1<<20)
	for range written >> 20 {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	unix.Sync()

	out, err := exec.Command("df", "-h", cfg.Mountpoint).CombinedOutput()
	if err != nil {
		t.Fatalf("df: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 6 || fields[0] != "ohmfs" || fields[1] != "1.0P" {
		t.Errorf("df -h says:\n%s\nwant filesystem ohmfs, size 1.0P", out)
	}
	out, err = exec.Command("df", "-B1", "--output=used", cfg.Mountpoint).CombinedOutput()
	if err != nil {
		t.Fatalf("df: %v\n%s", err, out)
	}
	used, err := strconv.ParseUint(strings.TrimSpace(strings.Split(strings.TrimSpace(string(out)), "\n")[1]), 10, 64)
	if err != nil {
		t.Fatalf("df used: %v\n%s", err, out)
	}
	if used < written || used > written+8<<20 {
		t.Errorf("df says %d bytes used for %d written", used, written)
	}
	// Growing sends the kernel's change event for the device; the name
	// df shows must survive it.
	if err := d.Grow(context.Background(), pib+(1<<30)); err != nil {
		t.Fatal(err)
	}
	if m, ok, _ := mountinfo.At(cfg.Mountpoint); !ok || m.Source != "ohmfs" {
		t.Errorf("after Grow the mount source is %+v", m)
	}
}

// TestGrow grows each kind online and refuses to shrink.
func TestGrow(t *testing.T) {
	for _, kind := range []Kind{Btrfs, Ext4, XFS} {
		t.Run(string(kind), func(t *testing.T) {
			requireDisks(t, kind)
			if kind == Ext4 && !hasCap(unix.CAP_SYS_RESOURCE) {
				t.Skip("growing ext4 online needs CAP_SYS_RESOURCE, which this process lacks")
			}
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			cfg := e.config(kind, "root")
			d := e.create(cfg, 512<<20)
			before, err := d.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cfg.Mountpoint, "keep"), []byte("kept"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := d.Grow(ctx, 1<<30); err != nil {
				t.Fatalf("grow: %v", err)
			}
			after, err := d.Usage()
			if err != nil {
				t.Fatal(err)
			}
			if after.Size < before.Size+400<<20 {
				t.Errorf("size %d -> %d after growing by 512 MiB", before.Size, after.Size)
			}
			if d.Size() != 1<<30 {
				t.Errorf("Size %d", d.Size())
			}
			if fi, err := os.Stat(filepath.Join(cfg.ImageDir, cfg.Image)); err != nil || fi.Size() != 1<<30 {
				t.Errorf("image %v %v", fi, err)
			}
			err = d.Grow(ctx, 768<<20)
			if err == nil || !strings.Contains(err.Error(), "can only grow") {
				t.Errorf("shrink: %v", err)
			}
			if err := d.Grow(ctx, 1<<30); err != nil {
				t.Errorf("grow to the same size: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(cfg.Mountpoint, "keep")); err != nil || string(b) != "kept" {
				t.Errorf("file after grow: %q %v", b, err)
			}
			// The new size holds after a remount.
			if err := d.Close(ctx); err != nil {
				t.Fatal(err)
			}
			d, err = Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close(ctx)
			if u, err := d.Usage(); err != nil || u.Size < after.Size {
				t.Errorf("size after remount %d (%v), want %d", u.Size, err, after.Size)
			}
		})
	}
}

// TestFreeze freezes a disk: a second freeze finds it frozen, writes wait
// until Thaw, and the frozen image is consistent (it mounts and checks
// clean as a copy).
func TestFreeze(t *testing.T) {
	requireDisks(t, Btrfs)
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	cfg := e.config(Btrfs, "workspace")
	d := e.create(cfg, 1<<30)
	if err := os.WriteFile(filepath.Join(cfg.Mountpoint, "before"), []byte("frozen in"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Freeze(ctx); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	root, err := d.root()
	if err != nil {
		t.Fatal(err)
	}
	if err := freeze(root); !errors.Is(err, unix.EBUSY) {
		t.Errorf("FIFREEZE of a frozen filesystem: %v, want EBUSY", err)
	}
	root.Close()
	wrote := make(chan error, 1)
	go func() {
		wrote <- os.WriteFile(filepath.Join(cfg.Mountpoint, "during"), []byte("waits"), 0o644)
	}()
	select {
	case err := <-wrote:
		t.Errorf("a write finished while frozen: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := d.Grow(ctx, 2<<30); err == nil {
		t.Error("Grow of a frozen disk succeeded")
	}
	if err := d.Thaw(ctx); err != nil {
		t.Fatalf("thaw: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Errorf("write after thaw: %v", err)
	}
	if err := d.Thaw(ctx); err != nil {
		t.Errorf("second thaw: %v", err)
	}
	// Freeze, then Close: Close thaws first.
	if err := d.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatalf("close of a frozen disk: %v", err)
	}
}

// TestAdopt: a process that made a disk and died without closing it (a
// crashed daemon) leaves the disk mounted; Open takes it over as it is.
func TestAdopt(t *testing.T) {
	requireDisks(t, Btrfs)
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	cfg := e.config(Btrfs, "workspace")
	dev := helper(t, "create", string(cfg.Kind), cfg.ImageDir, cfg.Image, cfg.Mountpoint, cfg.DevDir, strconv.Itoa(pib))
	d, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open after the creator died: %v", err)
	}
	defer d.Close(ctx)
	if d.Device() != dev {
		t.Errorf("open attached %s; the disk was on %s", d.Device(), dev)
	}
	if d.Size() != pib {
		t.Errorf("adopted size %d", d.Size())
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Mountpoint, "left")); err != nil || string(b) != "by a crashed process" {
		t.Errorf("file of the crashed process: %q %v", b, err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := loopByRdev(d.loop.rdev); l.bound() {
		t.Errorf("%s still attached", dev)
	}
}

// TestCleanup: a loop device this package attached whose owner died and
// that nothing mounted is detached by Cleanup; other loop devices are left
// alone.
func TestCleanup(t *testing.T) {
	requireDisks(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "leftover.img")
	other := filepath.Join(dir, "other.img")
	for _, p := range []string{img, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 64<<20); err != nil {
			t.Fatal(err)
		}
	}
	// A loop device of someone else's, with the same settings but no tag.
	f, err := os.OpenFile(other, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	otherDev, otherLoop, err := attachLoop(f, "someone else")
	if err != nil {
		t.Fatal(err)
	}
	defer detachLoop(otherDev)

	out := strings.Fields(helper(t, "attach", img, "testkey"))
	if len(out) != 2 {
		t.Fatalf("helper said %q", out)
	}
	dev := out[0]
	sleeper, _ := strconv.Atoi(out[1])
	defer syscall.Kill(sleeper, syscall.SIGKILL)

	left, err := Cleanup(context.Background())
	if err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	var found bool
	for _, l := range left {
		if l.Device == otherLoop.path() {
			t.Errorf("cleanup detached a loop device it did not make: %+v", l)
		}
		found = found || (l.Device == dev && l.Backing == img)
	}
	if !found {
		t.Errorf("cleanup found %+v, not %s", left, dev)
	}
	// The sleeping process still holds the device: the kernel detaches
	// it once that is gone.
	syscall.Kill(sleeper, syscall.SIGKILL)
	num, _ := strconv.Atoi(strings.TrimPrefix(dev, "/dev/loop"))
	waitFor(t, dev+" to detach", 10*time.Second, func() bool { return !(loopDev{num: num}).bound() })
	if !otherLoop.bound() {
		t.Error("the other loop device was detached")
	}
}

// TestPathsNotFollowed: the host refuses symlinks and directories others
// can write in every path of a disk's configuration.
func TestPathsNotFollowed(t *testing.T) {
	requireDisks(t, Btrfs)
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	good := e.config(Btrfs, "workspace")

	link := filepath.Join(e.root, "link")
	if err := os.Symlink(filepath.Join(e.root, "mnt"), link); err != nil {
		t.Fatal(err)
	}
	imgLink := filepath.Join(e.root, "imglink")
	if err := os.Symlink(good.ImageDir, imgLink); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(e.root, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	if err := os.Symlink("/etc/passwd", filepath.Join(good.ImageDir, "evil.img")); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"mountpoint through a symlink": func(c *Config) { c.Mountpoint = filepath.Join(link, "ws") },
		"mountpoint in an open dir":    func(c *Config) { c.Mountpoint = filepath.Join(open, "ws") },
		"device dir in an open dir":    func(c *Config) { c.DevDir = filepath.Join(open, "dev") },
		"image dir through a symlink":  func(c *Config) { c.ImageDir = imgLink },
		"image is a symlink":           func(c *Config) { c.Image = "evil.img" },
		"image name with a slash":      func(c *Config) { c.Image = "../x.img" },
		"relative mountpoint":          func(c *Config) { c.Mountpoint = "ws" },
		"unknown kind":                 func(c *Config) { c.Kind = "zfs" },
	} {
		cfg := good
		mutate(&cfg)
		d, err := Create(ctx, cfg, 1<<30)
		if err == nil {
			d.Close(ctx)
			t.Errorf("%s: Create succeeded", name)
			continue
		}
		if d, err := Open(ctx, cfg); err == nil {
			d.Close(ctx)
			t.Errorf("%s: Open succeeded", name)
		}
		t.Logf("%s: %v", name, err)
	}
	if b, _ := os.ReadFile("/etc/passwd"); len(b) == 0 {
		t.Error("/etc/passwd was truncated")
	}
	if _, err := Create(ctx, good, 1<<20); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("tiny disk: %v", err)
	}
}

// hasCap reports whether the process has capability c in its effective
// set.
func hasCap(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<c) != 0
		}
	}
	return false
}

// TestFlushCost counts, with the kernel's fuse_request_send tracepoint,
// the FUSE requests an fsync in a disk costs its ohmfs mount: WRITEs
// only, none of the SETATTR, GETATTR and GETXATTR a cached open of
// the image would add to every flush and write.
func TestFlushCost(t *testing.T) {
	requireDisks(t, Btrfs)
	const tracing = "/sys/kernel/tracing"
	if _, err := os.Stat(tracing + "/events/fuse/fuse_request_send"); err != nil {
		t.Skipf("needs tracefs with the fuse_request_send tracepoint at %s", tracing)
	}
	e := newEnv(t, envOptions{})
	cfg := e.config(Btrfs, "workspace")
	e.create(cfg, 1<<30)
	var st unix.Stat_t
	if err := unix.Stat(e.imageDir(), &st); err != nil {
		t.Fatal(err)
	}
	inst := filepath.Join(tracing, "instances", "ohm-disk-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(inst, 0o700); err != nil {
		t.Skipf("make a tracing instance: %v", err)
	}
	defer os.Remove(inst)
	w := func(name, v string) {
		if err := os.WriteFile(filepath.Join(inst, name), []byte(v), 0); err != nil {
			t.Fatalf("tracefs %s: %v", name, err)
		}
	}
	ev := "events/fuse/fuse_request_send/"
	w(ev+"filter", "connection == "+strconv.Itoa(int(unix.Minor(st.Dev))))
	w(ev+"enable", "1")
	defer w(ev+"enable", "0")

	f, err := os.Create(filepath.Join(cfg.Mountpoint, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{7}, 4096)
	for i := range 50 {
		if _, err := f.WriteAt(buf, int64(i%8)*4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	w("tracing_on", "0")
	trace, err := os.ReadFile(filepath.Join(inst, "trace"))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(string(trace), "\n") {
		if _, op, ok := strings.Cut(line, "(FUSE_"); ok {
			op, _, _ = strings.Cut(op, ")")
			counts[op]++
		}
	}
	t.Logf("FUSE requests for 50 writes + fsyncs: %v", counts)
	// btrfs on an ohmfs image runs nobarrier (barrier.go): each fsync's
	// superblock write is its commit, durable when acknowledged, so an
	// fsync costs WRITEs (at least the superblock's) and no FSYNC.
	if counts["FSYNC"] != 0 || counts["WRITE"] < 50 {
		t.Errorf("expected no FSYNC and at least 50 WRITEs: %v", counts)
	}
	// A few come from elsewhere (the mount's writeback loop opens its
	// root); one per flush or write would be 50 or more.
	for _, op := range []string{"SETATTR", "GETATTR", "GETXATTR"} {
		if counts[op] >= 10 {
			t.Errorf("%d %s requests: the image is not served as a direct-I/O file", counts[op], op)
		}
	}
}
