package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/meta"
	"ohm/internal/ohmfs/vfs"
	"ohm/internal/ohmfs/volume"
)

// helperEnv makes the test binary a helper process: "lock:PATH" tries to
// take an fcntl lock (tests that need a second process), "mmap:PATH" writes
// a file through a shared mapping (which must not run in the process that
// serves the mount: munmap can wait on the server while holding the
// address space lock the server needs).
const helperEnv = "OHM_FUSEFS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(freshBootEnv) != "" {
		os.Exit(runAsFreshBoot(m))
	}
	if h := os.Getenv(helperEnv); h != "" {
		kind, path, _ := strings.Cut(h, ":")
		switch kind {
		case "lock":
			os.Exit(lockHelper(path))
		case "mmap":
			if err := mmapHelper(path); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			os.Exit(0)
		}
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// runHelper runs the test binary as a helper and returns its exit code.
func runHelper(t *testing.T, kind, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+kind+":"+path)
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

const mmapSize = 1 << 20

// mmapHelper writes a pattern into a new file through a shared mapping.
func mmapHelper(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(mmapSize); err != nil {
		return err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	for i := 0; i < mmapSize; i += 4096 {
		mem[i] = byte(i / 4096)
	}
	copy(mem[mmapSize-5:], "mmap!")
	return unix.Munmap(mem)
}

// lockHelper tries a non-blocking fcntl write lock on path: exit 0 if it
// got it, 1 if another process holds it, 2 on other errors.
func lockHelper(path string) int {
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		return 2
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	err = unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EACCES):
		return 1
	}
	return 2
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// testVolume is a formatted volume and a mountpoint in a temp dir.
type testVolume struct {
	t   *testing.T
	url string
	mp  string
	vol *volume.Volume
	m   *Mounted
}

func newTestVolume(t *testing.T) *testVolume {
	requireFUSE(t)
	dir := t.TempDir()
	tv := &testVolume{t: t, url: filepath.Join(dir, "vol"), mp: filepath.Join(dir, "mnt")}
	if err := volume.Format(context.Background(), tv.url, volume.FormatOptions{}); err != nil {
		t.Fatalf("format: %v", err)
	}
	tv.mount()
	t.Cleanup(tv.unmount)
	return tv
}

func (tv *testVolume) mount() {
	tv.t.Helper()
	ctx := context.Background()
	vol, err := volume.Open(ctx, tv.url, volume.OpenOptions{Mountpoint: tv.mp})
	if err != nil {
		tv.t.Fatalf("open volume: %v", err)
	}
	m, err := Mount(ctx, vol, tv.mp, Options{Debug: os.Getenv("OHM_FUSE_DEBUG") != ""})
	if err != nil {
		vol.Close(ctx)
		tv.t.Fatalf("mount: %v", err)
	}
	tv.vol, tv.m = vol, m
}

func (tv *testVolume) unmount() {
	tv.t.Helper()
	if tv.m == nil {
		return
	}
	ctx := context.Background()
	if err := tv.m.Close(ctx); err != nil {
		tv.t.Errorf("unmount: %v", err)
	}
	if err := tv.vol.Close(ctx); err != nil {
		tv.t.Errorf("close volume: %v", err)
	}
	tv.m, tv.vol = nil, nil
}

func (tv *testVolume) remount() {
	tv.t.Helper()
	tv.unmount()
	tv.mount()
}

func (tv *testVolume) path(name string) string { return filepath.Join(tv.mp, name) }

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadWriteStat(t *testing.T) {
	tv := newTestVolume(t)
	data := bytes.Repeat([]byte("ohmfs!"), 100_000) // 600 kB: more than one write
	p := tv.path("f")
	mustWrite(t, p, data)
	if got := mustRead(t, p); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(data))
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(data)) || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		t.Fatalf("stat: size %d mode %o nlink %d", st.Size, st.Mode, st.Nlink)
	}
	if st.Blocks*512 < int64(len(data)) {
		t.Errorf("st_blocks %d does not cover %d bytes", st.Blocks, len(data))
	}

	// Overwrite in the middle, append, truncate.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	data = append(data, "tail"...)
	if got := mustRead(t, p); !bytes.Equal(got, data) {
		t.Fatalf("after O_APPEND: %d bytes, want %d", len(got), len(data))
	}
	if err := os.Truncate(p, 10); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p); string(got) != string(data[:10]) {
		t.Fatalf("after truncate: %q", got)
	}

	// A missing name is a (cached) negative entry; creating it must still
	// be seen at once.
	q := tv.path("later")
	if _, err := os.Stat(q); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	mustWrite(t, q, []byte("x"))
	if _, err := os.Stat(q); err != nil {
		t.Fatalf("stat after create: %v", err)
	}

	// Directories and listing.
	if err := os.MkdirAll(tv.path("d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		mustWrite(t, tv.path("d/"+n), []byte(n))
	}
	ents, err := os.ReadDir(tv.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, ","); got != "a,b,c,e" {
		t.Fatalf("listing: %s", got)
	}
	if err := os.Remove(tv.path("d/e")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tv.path("d")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("rmdir of a non-empty dir: %v", err)
	}
}

func TestRenameLinkSymlink(t *testing.T) {
	tv := newTestVolume(t)
	if err := os.Mkdir(tv.path("d1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tv.path("d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, tv.path("d1/a"), []byte("A"))
	mustWrite(t, tv.path("d2/b"), []byte("B"))

	// Hard link across directories.
	if err := os.Link(tv.path("d1/a"), tv.path("d2/a-link")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(tv.path("d1/a"), &st); err != nil || st.Nlink != 2 {
		t.Fatalf("nlink after link: %d, %v", st.Nlink, err)
	}

	// Rename over an existing file, across directories.
	if err := os.Rename(tv.path("d1/a"), tv.path("d2/b")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, tv.path("d2/b")); string(got) != "A" {
		t.Fatalf("after rename over: %q", got)
	}
	if _, err := os.Stat(tv.path("d1/a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old name after rename: %v", err)
	}
	if err := unix.Stat(tv.path("d2/a-link"), &st); err != nil || st.Nlink != 2 {
		t.Fatalf("nlink after rename: %d, %v", st.Nlink, err)
	}

	// renameat2 flags.
	mustWrite(t, tv.path("x"), []byte("X"))
	mustWrite(t, tv.path("y"), []byte("Y"))
	if err := unix.Renameat2(unix.AT_FDCWD, tv.path("x"), unix.AT_FDCWD, tv.path("y"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("RENAME_NOREPLACE over a file: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tv.path("x"), unix.AT_FDCWD, tv.path("y"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	if string(mustRead(t, tv.path("x"))) != "Y" || string(mustRead(t, tv.path("y"))) != "X" {
		t.Fatal("RENAME_EXCHANGE did not swap")
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tv.path("x"), unix.AT_FDCWD, tv.path("z"), unix.RENAME_WHITEOUT); err == nil {
		t.Fatal("RENAME_WHITEOUT succeeded")
	}

	// Symlinks.
	if err := os.Symlink("d2/b", tv.path("s")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(tv.path("s")); err != nil || target != "d2/b" {
		t.Fatalf("readlink: %q, %v", target, err)
	}
	if got := mustRead(t, tv.path("s")); string(got) != "A" {
		t.Fatalf("read through symlink: %q", got)
	}

	// Unlink of an open file: readable until closed.
	f, err := os.Open(tv.path("d2/b"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(tv.path("d2/b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tv.path("d2/a-link")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "A" {
		t.Fatalf("read of an unlinked open file: %q, %v", buf[:n], err)
	}
}

func TestXattr(t *testing.T) {
	tv := newTestVolume(t)
	p := tv.path("f")
	mustWrite(t, p, nil)
	if err := unix.Setxattr(p, "user.color", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.shape", []byte("round"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.color", []byte("red"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("XATTR_CREATE over an existing xattr: %v", err)
	}
	// Size probing with an empty buffer, then a buffer too small.
	if n, err := unix.Getxattr(p, "user.color", nil); err != nil || n != 4 {
		t.Fatalf("getxattr size probe: %d, %v", n, err)
	}
	if _, err := unix.Getxattr(p, "user.color", make([]byte, 2)); !errors.Is(err, unix.ERANGE) {
		t.Fatalf("getxattr into a small buffer: %v", err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(p, "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Fatalf("getxattr: %q, %v", buf[:n], err)
	}
	if _, err := unix.Getxattr(p, "user.none", buf); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("getxattr of a missing xattr: %v", err)
	}
	n, err := unix.Listxattr(p, nil)
	if err != nil || n != len("user.color\x00user.shape\x00") {
		t.Fatalf("listxattr size probe: %d, %v", n, err)
	}
	if _, err := unix.Listxattr(p, make([]byte, 3)); !errors.Is(err, unix.ERANGE) {
		t.Fatalf("listxattr into a small buffer: %v", err)
	}
	n, err = unix.Listxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	if strings.Join(names, ",") != "user.color,user.shape" && strings.Join(names, ",") != "user.shape,user.color" {
		t.Fatalf("listxattr: %q", names)
	}
	if err := unix.Removexattr(p, "user.color"); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(p, "user.color", buf); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("getxattr after remove: %v", err)
	}
}

func TestLocks(t *testing.T) {
	tv := newTestVolume(t)
	p := tv.path("lock")
	mustWrite(t, p, []byte("x"))

	// flock between two open file descriptions.
	f1, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second flock: %v", err)
	}
	unix.Flock(int(f1.Fd()), unix.LOCK_UN)
	if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock after unlock: %v", err)
	}
	unix.Flock(int(f2.Fd()), unix.LOCK_UN)

	// fcntl record locks between two processes.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	helper := func() int { return runHelper(t, "lock", p) }
	if code := helper(); code != 1 {
		t.Fatalf("another process locking a locked file: exit %d, want 1 (held)", code)
	}
	lk.Type = unix.F_UNLCK
	if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if code := helper(); code != 0 {
		t.Fatalf("another process locking an unlocked file: exit %d, want 0", code)
	}
}

func TestMmapSurvivesRemount(t *testing.T) {
	tv := newTestVolume(t)
	p := tv.path("m")
	const size = mmapSize
	if code := runHelper(t, "mmap", p); code != 0 {
		t.Fatalf("mmap helper: exit %d", code)
	}

	tv.remount()
	got := mustRead(t, p)
	if len(got) != size {
		t.Fatalf("size after remount: %d", len(got))
	}
	for i := 0; i < size-5; i += 4096 {
		if got[i] != byte(i/4096) {
			t.Fatalf("byte %d after remount: %d, want %d", i, got[i], byte(i/4096))
		}
	}
	if string(got[size-5:]) != "mmap!" {
		t.Fatalf("tail after remount: %q", got[size-5:])
	}
}

func TestStatfsAndMountinfo(t *testing.T) {
	tv := newTestVolume(t)
	var st unix.Statfs_t
	if err := unix.Statfs(tv.mp, &st); err != nil {
		t.Fatal(err)
	}
	size := uint64(st.Blocks) * uint64(st.Bsize)
	if size != volume.DefaultCapacity {
		t.Errorf("statfs size %d, want %d", size, uint64(volume.DefaultCapacity))
	}
	if st.Bavail == 0 || st.Bavail > st.Blocks || st.Namelen != 255 || st.Files == 0 || st.Ffree == 0 {
		t.Errorf("statfs: %+v", st)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 10 || fields[4] != tv.mp {
			continue
		}
		found = true
		var fstype, source string
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				fstype, source = fields[i+1], fields[i+2]
			}
		}
		if fstype != "fuse.ohmfs" || source != "ohmfs" {
			t.Errorf("mountinfo: type %q source %q, want fuse.ohmfs ohmfs", fstype, source)
		}
		for _, opt := range []string{"nosuid", "nodev"} {
			if !strings.Contains(fields[5], opt) {
				t.Errorf("mount options %s lack %s", fields[5], opt)
			}
		}
		if !strings.Contains(line, "allow_other") || !strings.Contains(line, "default_permissions") {
			t.Errorf("mount lacks allow_other or default_permissions: %s", line)
		}
	}
	if !found {
		t.Fatalf("%s not in mountinfo", tv.mp)
	}
}

func TestMountBusy(t *testing.T) {
	tv := newTestVolume(t)
	ctx := context.Background()

	// The same volume again: the single-writer lock refuses it.
	if vol, err := volume.Open(ctx, tv.url, volume.OpenOptions{}); !errors.Is(err, volume.ErrBusy) {
		if err == nil {
			vol.Close(ctx)
		}
		t.Fatalf("second open of a mounted volume: %v, want ErrBusy", err)
	}

	// Another volume on the same mountpoint: refused, one line.
	other := filepath.Join(t.TempDir(), "other")
	if err := volume.Format(ctx, other, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	vol, err := volume.Open(ctx, other, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close(ctx)
	m, err := Mount(ctx, vol, tv.mp, Options{Debug: os.Getenv("OHM_FUSE_DEBUG") != ""})
	if err == nil {
		m.Close(ctx)
		t.Fatal("mount over a mounted mountpoint succeeded")
	}
	if !errors.Is(err, ErrBusy) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("mount over a mounted mountpoint: %q, want a one-line ErrBusy", err)
	}
}

func TestUnmountFlushes(t *testing.T) {
	tv := newTestVolume(t)
	big := bytes.Repeat([]byte{7}, 9<<20) // several chunks, in the page cache
	mustWrite(t, tv.path("big"), big)
	mustWrite(t, tv.path("small"), []byte("no fsync"))

	// Written through a descriptor that is closed, never fsynced.
	f, err := os.OpenFile(tv.path("open"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tv.remount()
	if got := mustRead(t, tv.path("big")); !bytes.Equal(got, big) {
		t.Fatalf("big file after remount: %d bytes", len(got))
	}
	if got := mustRead(t, tv.path("small")); string(got) != "no fsync" {
		t.Fatalf("small file after remount: %q", got)
	}
	if got := mustRead(t, tv.path("open")); string(got) != "still open" {
		t.Fatalf("open file after remount: %q", got)
	}

	// An administrator's plain umount: the mount sees it and closes
	// cleanly, losing nothing.
	mustWrite(t, tv.path("admin"), []byte("plain umount"))
	if err := unix.Unmount(tv.mp, 0); err != nil {
		t.Fatal(err)
	}
	<-tv.m.Done()
	tv.remount()
	if got := mustRead(t, tv.path("admin")); string(got) != "plain umount" {
		t.Fatalf("after a plain umount: %q", got)
	}
}

func TestSyncLoopWritesBack(t *testing.T) {
	// A file left open with dirty pages in the writeback cache must reach
	// vfs without close or fsync: vfs.Sync then makes it durable, and a
	// crash-free remount shows it. (The crash suite tests the 1 s bound.)
	tv := newTestVolume(t)
	f, err := os.OpenFile(tv.path("held"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("dirty page")); err != nil {
		t.Fatal(err)
	}
	// The writeback helper's syncfs (every 500 ms) is what pushes the
	// page: vfs must see it without anything else happening.
	deadline := time.Now().Add(20 * time.Second)
	for {
		a, err := tv.m.FS().Lookup(context.Background(), meta.RootIno, "held")
		if err != nil {
			t.Fatal(err)
		}
		if a.Size == uint64(len("dirty page")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vfs sees size %d 20 s after the write, want %d: the writeback helper did not push the page", a.Size, len("dirty page"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBlocksAfterFsyncOfOpenFile checks that fstat of a file still open
// after fsync counts the bytes it holds: the kernel would otherwise serve
// st_blocks 0 from the attributes it cached at create.
func TestBlocksAfterFsyncOfOpenFile(t *testing.T) {
	tv := newTestVolume(t)
	f, err := os.Create(tv.path("open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12) // not all zeros: zeros are stored as holes
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < int64(len(data)) {
		t.Fatalf("fstat after fsync: st_blocks %d does not cover %d bytes", st.Blocks, len(data))
	}
}

// TestReserveRefusesNewFiles checks the mount's wiring of the host-disk
// reserve: with a reserve larger than the host's free space, nothing new
// may be created, and the refusal is ENOSPC.
func TestReserveRefusesNewFiles(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	url, mp := filepath.Join(dir, "vol"), filepath.Join(dir, "mnt")
	ctx := context.Background()
	if err := volume.Format(ctx, url, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	vol, err := volume.Open(ctx, url, volume.OpenOptions{Mountpoint: mp})
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close(ctx)
	m, err := Mount(ctx, vol, mp, Options{VFS: vfs.Config{Reserve: 1 << 60}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("create with the host below the reserve: %v, want ENOSPC", err)
	}
	if err := os.Mkdir(filepath.Join(mp, "d"), 0o755); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("mkdir with the host below the reserve: %v, want ENOSPC", err)
	}
}

// TestReadahead checks that the mount raises the kernel's readahead past
// the 128 KiB FUSE gets at init, so cold sequential reads take fewer round
// trips.
func TestReadahead(t *testing.T) {
	tv := newTestVolume(t)
	var st unix.Stat_t
	if err := unix.Stat(tv.mp, &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		t.Skipf("no bdi in sysfs: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(readAheadKB) {
		t.Fatalf("read_ahead_kb is %s, want %d", got, readAheadKB)
	}
}
