package disk

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
	"ohm/internal/ohmfs/vfs"
)

// smallHost mounts a fresh ext4 of size bytes (on a loop device over a
// file in a temp dir) and returns its mountpoint: a host disk that fills
// up quickly.
func smallHost(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "host.img")
	mp := filepath.Join(dir, "host")
	if err := os.Mkdir(mp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mp).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// The volume's last files close shortly after its unmount.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := unix.Unmount(mp, 0)
			if err == nil {
				return
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				out, _ := exec.Command("fuser", "-vm", mp).CombinedOutput()
				t.Errorf("umount %s: %v\n%s", mp, err, out)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	if err := os.Chmod(mp, 0o700); err != nil {
		t.Fatal(err)
	}
	return mp
}

// TestSpaceGuard fills a btrfs disk ten times the size of the 400 MiB host
// filesystem its ohmfs volume sits on. (A 4 GiB disk, not a 1 PiB one: the
// guard works the same, and the first FITRIM of a 1 PiB btrfs discards its
// whole unallocated space, which ohmfs takes minutes to punch today.) With the guard, the writer gets EDQUOT before
// ohmfs has to refuse a write of the image (which btrfs would take as an
// I/O error and go read-only), the filesystem stays writable and clean,
// and once files are deleted and ohmfs has their space back, writes work
// again.
func TestSpaceGuard(t *testing.T) {
	requireDisks(t, Btrfs)
	if _, err := os.Stat("/usr/sbin/mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 for the small host filesystem")
	}
	host := smallHost(t, 400<<20)
	const reserve = 32 << 20
	e := newEnv(t, envOptions{base: host, vfs: vfs.Config{
		Reserve: reserve,
		// Freed blocks go as soon as a collection runs, so that the
		// test sees the space of deleted files come back without
		// waiting ohmfs's grace period; the test runs that collection
		// itself.
		GCGrace: -1,
	}})
	ctx := context.Background()
	cfg := e.config(Btrfs, "workspace")
	d := e.create(cfg, 4<<30)
	var guardErrs []error
	if err := d.GuardSpace(SpaceConfig{
		Avail:    HostAvail(host, reserve),
		Margin:   48 << 20,
		Interval: 50 * time.Millisecond,
		OnError:  func(err error) { guardErrs = append(guardErrs, err) },
	}); err != nil {
		t.Fatalf("guard: %v", err)
	}
	st, ok := d.SpaceStatus()
	if !ok || st.Limit == 0 || st.Limit > 400<<20 {
		t.Fatalf("space status %+v", st)
	}
	t.Logf("start: %+v", st)

	buf := make([]byte, 1<<20)
	rand.Read(buf)
	write := func(name string, mib int) error {
		f, err := os.Create(filepath.Join(cfg.Mountpoint, name))
		if err != nil {
			return err
		}
		for range mib {
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	var files []string
	var full error
	for i := range 100 {
		name := fmt.Sprintf("f%02d", i)
		if err := write(name, 8); err != nil {
			full = err
			break
		}
		files = append(files, name)
	}
	if full == nil {
		t.Fatal("wrote 800 MiB to a disk on a 400 MiB host")
	}
	st, _ = d.SpaceStatus()
	t.Logf("full after %d files of 8 MiB: %v; %+v", len(files), full, st)
	if !errors.Is(full, syscall.EDQUOT) {
		t.Errorf("writing past the host's space: %v, want EDQUOT", full)
	}
	m, ok, err := mountinfo.At(cfg.Mountpoint)
	if err != nil || !ok {
		t.Fatalf("mount gone: %v", err)
	}
	if strings.Contains(","+m.SuperOpts+",", ",ro,") {
		t.Fatalf("the filesystem went read-only: %s", m.SuperOpts)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Mountpoint, files[0])); err != nil || len(b) != 8<<20 {
		t.Errorf("read back a file: %d bytes, %v", len(b), err)
	}

	// Delete most files; their extents are discarded (Trim, rather than
	// btrfs's async discard, which waits two minutes), ohmfs frees the
	// blocks, and the guard lets writes through again.
	for _, f := range files[:len(files)-2] {
		if err := os.Remove(filepath.Join(cfg.Mountpoint, f)); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := d.root()
	unix.Syncfs(int(root.Fd()))
	root.Close()
	start := time.Now()
	trimmed, err := d.Trim(ctx, 0, 4<<30)
	if err != nil {
		t.Fatalf("trim: %v", err)
	}
	t.Logf("trimmed %d bytes in %v", trimmed, time.Since(start))
	// The discards are punched holes in the image's write-ahead log
	// now. Fold the log into the store (the holes free the packs that
	// held the files, and the log's recycled segments go too, the host
	// being short of space) and collect the freed packs, as ohmfs's
	// commit and gc loops would within their intervals.
	start = time.Now()
	fs := e.m.FS()
	if err := fs.Sync(ctx); err != nil {
		t.Fatalf("sync the volume: %v", err)
	}
	res, err := fs.GC(ctx)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	avail := HostAvail(host, reserve)
	a, err := avail()
	t.Logf("fold and gc in %v: deleted %d packs; host avail %d, %v", time.Since(start), res.DeletedBlocks, a, err)
	if err != nil || a <= 200<<20 {
		out, _ := exec.Command("du", "-a", e.root).CombinedOutput()
		t.Fatalf("ohmfs kept the space of the deleted files: %d bytes avail, %v\n%s", a, err, out)
	}
	// btrfs accounts the deleted files' extents to the quota group only
	// once their inodes are evicted, which for files just written is the
	// cleaner thread's delayed work after a commit: until then raising
	// the limit of the full disk fails (ErrLimitHeld without
	// CAP_SYS_RESOURCE, as on machines that drop it from root). The guard
	// tries again at every check; so does this.
	// On a loaded machine (make test runs packages in parallel) that
	// delayed work has taken over 30 s: the wait is long, and what the
	// quota group holds is logged as it changes, for a failure to show
	// whether the accounting moved at all.
	var lastRef uint64
	for began, deadline := time.Now(), time.Now().Add(2*time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if root, err := d.root(); err == nil {
			unix.Syncfs(int(root.Fd()))
			root.Close()
		}
		err := d.CheckSpace()
		if err == nil {
			t.Logf("the guard let writes through %v after the deletes", time.Since(began).Round(time.Millisecond))
			break
		}
		if st, ok := d.SpaceStatus(); ok && st.Referenced != lastRef {
			lastRef = st.Referenced
			t.Logf("%v after the deletes: the quota group holds %d bytes (limit %d)", time.Since(began).Round(time.Millisecond), st.Referenced, st.Limit)
		}
		if time.Now().After(deadline) {
			t.Fatalf("2 minutes after the deletes: %v", err)
		}
	}
	st, _ = d.SpaceStatus()
	t.Logf("after deleting: %+v", st)
	if err := write("again", 64); err != nil {
		t.Errorf("write after deleting files: %v", err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, err := range guardErrs {
		// Without CAP_SYS_RESOURCE (some CI sandboxes) the guard cannot
		// raise the limit of a full quota until files are deleted; the
		// writes above show that it does raise it then.
		if errors.Is(err, ErrLimitHeld) && !hasCap(unix.CAP_SYS_RESOURCE) {
			t.Logf("guard (no CAP_SYS_RESOURCE here): %v", err)
			continue
		}
		t.Errorf("guard error: %v", err)
	}
	// btrfs's own check finds nothing wrong with the image.
	start = time.Now()
	defer func() { t.Logf("btrfs check: %v", time.Since(start)) }()
	if btrfs, err := tool("btrfs"); err == nil {
		out, err := exec.Command(btrfs, "check", "--readonly", filepath.Join(cfg.ImageDir, cfg.Image)).CombinedOutput()
		if err != nil {
			t.Errorf("btrfs check: %v\n%s", err, out)
		}
	}
}
