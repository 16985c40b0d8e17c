package volume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ohm/internal/ohmfs/blockstore"
	"ohm/internal/ohmfs/meta"
)

func newVolume(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := Format(context.Background(), dir, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func open(t *testing.T, dir string) *Volume {
	t.Helper()
	v, err := Open(context.Background(), dir, OpenOptions{Mountpoint: "/mnt/test"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func closeVol(t *testing.T, v *Volume) {
	t.Helper()
	if err := v.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFormatOpenInspect(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a", "vol")
	if err := Format(ctx, "file://"+dir, FormatOptions{Capacity: 500 << 30}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "ohmfs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	if len(id.UUID) != 32 || id.Capacity != 500<<30 || id.FormatVersion != 1 || id.Created.IsZero() {
		t.Fatalf("ohmfs.json = %s", b)
	}

	v := open(t, dir)
	if v.UUID != id.UUID || v.Capacity != 500<<30 {
		t.Errorf("opened volume: uuid %s capacity %d", v.UUID, v.Capacity)
	}
	for key, want := range map[string]string{"uuid": id.UUID, "capacity": "536870912000", "chunk_size": "4194304", "format_version": "1"} {
		if got, err := v.Meta.Setting(ctx, key); err != nil || got != want {
			t.Errorf("setting %s = %q, %v; want %q", key, got, err, want)
		}
	}
	root, err := v.Meta.GetAttr(ctx, meta.RootIno)
	if err != nil {
		t.Fatal(err)
	}
	if root.Uid != 0 || root.Gid != 0 || root.Mode != syscall.S_IFDIR|0o755 {
		t.Errorf("root: uid %d gid %d mode %o", root.Uid, root.Gid, root.Mode)
	}
	writeFile(t, v, "f", []byte("hello, world"))

	st, err := Inspect(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mounted || st.Holder == nil || st.Holder.PID != os.Getpid() || st.Holder.Mountpoint != "/mnt/test" {
		t.Errorf("status of an open volume: mounted %v holder %+v", st.Mounted, st.Holder)
	}
	closeVol(t, v)

	st, err = Inspect(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Status{URL: dir, UUID: id.UUID, Capacity: 500 << 30, Files: 2, UsedBytes: 12, Blocks: 1, StoredBytes: 16 + 12}
	if st.Replica == nil || st.Replica.LagSeconds != 0 || st.Replica.Position == 0 || st.Replica.LastError != "" {
		t.Errorf("replica status after close = %+v", st.Replica)
	}
	st.Replica = nil
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("status = %+v\nwant     %+v", st, want)
	}

	// Defaults.
	dir2 := newVolume(t)
	if st, err := Inspect(ctx, dir2); err != nil || st.Capacity != DefaultCapacity || st.Files != 1 {
		t.Errorf("fresh volume status = %+v, %v", st, err)
	}
}

// writeFile makes a file at the volume's root whose content is one block.
func writeFile(t *testing.T, v *Volume, name string, data []byte) (meta.Ino, uint64) {
	t.Helper()
	ctx := context.Background()
	a, err := v.Meta.Mknod(ctx, meta.RootIno, name, syscall.S_IFREG|0o644, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a.Ino, setContent(t, v, a.Ino, data)
}

// setContent replaces the content of ino with one new block.
func setContent(t *testing.T, v *Volume, ino meta.Ino, data []byte) uint64 {
	t.Helper()
	ctx := context.Background()
	id, err := v.Meta.NewBlockID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Blocks.Put(ctx, id, data); err != nil {
		t.Fatal(err)
	}
	u := meta.FileUpdate{Chunks: []meta.Chunk{{Index: 0, Len: uint32(len(data)), BlockID: id}}, Size: uint64(len(data))}
	if _, err := v.Meta.UpdateFile(ctx, ino, u); err != nil {
		t.Fatal(err)
	}
	if err := v.Meta.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFormatRefuses(t *testing.T) {
	ctx := context.Background()
	vol := newVolume(t)
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url, want string
	}{
		{vol, "already holds an ohmfs volume"},
		{foreign, "is not empty and not an ohmfs volume"},
		{file, "not a directory"},
		{"s3://", "names no bucket"},
		{"", "empty path"},
	}
	for _, tt := range tests {
		err := Format(ctx, tt.url, FormatOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Format(%q) = %v, want an error containing %q", tt.url, err, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); err != nil {
		t.Error("Format touched a foreign directory")
	}
	if _, err := Inspect(ctx, vol); err != nil {
		t.Errorf("the refused Format damaged the volume: %v", err)
	}

	// An existing empty directory is fine.
	empty := t.TempDir()
	if err := Format(ctx, empty, FormatOptions{}); err != nil {
		t.Errorf("Format of an empty directory: %v", err)
	}
}

func TestNotVolume(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "missing")
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{missing, foreign} {
		ops := map[string]func() error{
			"Open":    func() error { _, err := Open(ctx, url, OpenOptions{}); return err },
			"Inspect": func() error { _, err := Inspect(ctx, url); return err },
			"Fsck":    func() error { _, err := Fsck(ctx, url); return err },
			"GC":      func() error { _, err := GC(ctx, url, 0); return err },
			"Destroy": func() error { return Destroy(ctx, url) },
		}
		for name, op := range ops {
			err := op()
			if !errors.Is(err, ErrNotVolume) || !strings.Contains(err.Error(), url) {
				t.Errorf("%s(%s) = %v, want ErrNotVolume naming the path", name, url, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); err != nil {
		t.Error("an operation on a foreign directory touched it")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Error("an operation on a missing path created it")
	}
	if got := fmt.Sprint(Destroy(ctx, foreign)); got != foreign+": not an ohmfs volume (no ohmfs.json)" {
		t.Errorf("message: %s", got)
	}
}

func TestUUIDMismatch(t *testing.T) {
	ctx := context.Background()
	a, b := newVolume(t), newVolume(t)
	// Swap in another volume's metadata.
	if err := os.RemoveAll(filepath.Join(a, "meta")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(b, "meta"), filepath.Join(a, "meta")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, a, OpenOptions{}); !errors.Is(err, ErrNotVolume) {
		t.Fatalf("Open with another volume's metadata = %v, want ErrNotVolume", err)
	}
	// The failed Open released its lock.
	lock, err := acquire(a, filepath.Join(a, lockName), Holder{})
	if err != nil {
		t.Fatalf("lock still held after a failed Open: %v", err)
	}
	lock.release()
}

func TestBusy(t *testing.T) {
	ctx := context.Background()
	dir := newVolume(t)
	v := open(t, dir)

	// A second open file description of the lock file conflicts, even in
	// the same process: that is flock's semantics on Linux.
	_, err := Open(ctx, dir, OpenOptions{Mountpoint: "/elsewhere"})
	want := fmt.Sprintf("volume %s is already mounted at /mnt/test by pid %d", dir, os.Getpid())
	if !errors.Is(err, ErrBusy) || err.Error() != want {
		t.Fatalf("second Open = %v\nwant %s", err, want)
	}
	var be *BusyError
	if !errors.As(err, &be) || be.Holder == nil || be.Holder.Mountpoint != "/mnt/test" {
		t.Errorf("BusyError = %+v", be)
	}
	if _, err := Fsck(ctx, dir); !errors.Is(err, ErrBusy) {
		t.Errorf("Fsck of an open volume = %v, want ErrBusy", err)
	}
	if _, err := GC(ctx, dir, 0); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "collects its own garbage while mounted") {
		t.Errorf("GC of an open volume = %v, want ErrBusy", err)
	}
	if err := Destroy(ctx, dir); !errors.Is(err, ErrBusy) {
		t.Errorf("Destroy of an open volume = %v, want ErrBusy", err)
	}
	closeVol(t, v)
	if err := v.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}

	v = open(t, dir)
	closeVol(t, v)
	if st, err := Inspect(ctx, dir); err != nil || st.Mounted || st.Holder != nil {
		t.Errorf("status after Close: %+v, %v", st, err)
	}
}

// TestStaleHolder holds the lock from another process, then kills it with
// SIGKILL: the kernel drops the lock and the volume opens again.
func TestStaleHolder(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("needs the flock command (util-linux)")
	}
	ctx := context.Background()
	dir := newVolume(t)
	lockPath := filepath.Join(dir, lockName)
	if err := os.WriteFile(lockPath, []byte(`{"pid":4242,"mountpoint":"/mnt/y","since":"2026-01-01T00:00:00Z"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("flock", "--exclusive", "--no-fork", lockPath, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Wait until the child holds the lock.
	for {
		if h, _, _ := held(lockPath); h {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err := Open(ctx, dir, OpenOptions{})
	if want := fmt.Sprintf("volume %s is already mounted at /mnt/y by pid 4242", dir); err == nil || err.Error() != want {
		t.Fatalf("Open = %v, want %s", err, want)
	}
	st, err := Inspect(ctx, dir)
	if err != nil || !st.Mounted || st.Holder.PID != 4242 {
		t.Fatalf("Inspect = %+v, %v", st, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	v := open(t, dir)
	closeVol(t, v)
}

func TestFsck(t *testing.T) {
	ctx := context.Background()
	dir := newVolume(t)
	if problems, err := Fsck(ctx, dir); err != nil || len(problems) != 0 {
		t.Fatalf("fresh volume: Fsck = %v, %v", problems, err)
	}
	v := open(t, dir)
	_, good := writeFile(t, v, "good", bytes.Repeat([]byte("ohm "), 1000))
	_, gone := writeFile(t, v, "gone", []byte("soon missing"))
	_, bad := writeFile(t, v, "bad", bytes.Repeat([]byte("x"), 5000))
	// An unreferenced block is gc's business, not a problem.
	if err := v.Blocks.Put(ctx, 1<<40, []byte("stray")); err != nil {
		t.Fatal(err)
	}
	closeVol(t, v)

	r, err := FsckVolume(ctx, dir, FsckOptions{Deep: true})
	if err != nil || len(r.Problems) != 0 || r.ReferencedBlocks != 3 || r.UnreferencedBlocks != 1 {
		t.Fatalf("healthy volume: FsckVolume = %+v, %v", r, err)
	}

	if err := os.Remove(filepath.Join(dir, blockstore.Key(gone))); err != nil {
		t.Fatal(err)
	}
	corrupt(t, filepath.Join(dir, blockstore.Key(bad)))

	r, err = FsckVolume(ctx, dir, FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Detail, fmt.Sprintf("block %d", gone)) || !strings.Contains(r.Problems[0].Detail, "missing") {
		t.Errorf("shallow fsck problems = %+v, want the missing block %d", r.Problems, gone)
	}
	r, err = FsckVolume(ctx, dir, FsckOptions{Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 2 || !strings.Contains(r.Problems[1].Detail+r.Problems[0].Detail, fmt.Sprintf("block %d", bad)) {
		t.Errorf("deep fsck problems = %+v, want the missing block %d and the corrupt %d", r.Problems, gone, bad)
	}
	_ = good
}

// corrupt flips a byte in the middle of the file at path.
func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	dir := newVolume(t)
	v := open(t, dir)
	ino, first := writeFile(t, v, "f", []byte("version 1"))
	second := setContent(t, v, ino, []byte("version 2")) // frees first
	// Crash leftovers: blocks written but never referenced, old and young.
	oldStray, youngStray := uint64(1<<40), uint64(1<<40+1)
	for _, id := range []uint64{oldStray, youngStray} {
		if err := v.Blocks.Put(ctx, id, []byte("stray")); err != nil {
			t.Fatal(err)
		}
	}
	// An orphan: unlinked while open, then the mount died.
	orphan, orphanBlock := writeFile(t, v, "orphan", []byte("unlinked while open"))
	if _, err := v.Meta.Unlink(ctx, meta.RootIno, "orphan"); err != nil {
		t.Fatal(err)
	}
	closeVol(t, v)

	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, blockstore.Key(oldStray)), past, past); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "blocks", "00", ".tmp-crashed")
	if err := os.WriteFile(tmp, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, past, past); err != nil {
		t.Fatal(err)
	}

	// With a 10 minute grace: only the old stray and the temp file go; the
	// freed blocks (just freed) and the young stray stay.
	res, err := GC(ctx, dir, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := GCResult{DeletedBlocks: 1, DeletedBytes: 16 + 5, KeptYoung: 3, PurgedOrphans: 1, TempFiles: 1}
	if res != want {
		t.Errorf("GC(10m) = %+v, want %+v", res, want)
	}
	_ = orphan
	if exists(t, dir, oldStray) || !exists(t, dir, youngStray) || !exists(t, dir, first) || !exists(t, dir, orphanBlock) {
		t.Errorf("after GC(10m): old stray %v young stray %v freed %v orphan's %v",
			exists(t, dir, oldStray), exists(t, dir, youngStray), exists(t, dir, first), exists(t, dir, orphanBlock))
	}
	if st, err := Inspect(ctx, dir); err != nil || st.FreedBlocks != 2 || st.Files != 2 {
		t.Errorf("status after GC(10m) = %+v, %v", st, err)
	}

	// With no grace, every unreferenced block goes.
	res, err = GC(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.DeletedBlocks != 3 || res.KeptYoung != 0 {
		t.Errorf("GC(0) = %+v, want 3 deleted", res)
	}
	if !exists(t, dir, second) {
		t.Fatal("GC deleted a referenced block")
	}
	st, err := Inspect(ctx, dir)
	if err != nil || st.FreedBlocks != 0 || st.Blocks != 1 {
		t.Errorf("status after GC(0) = %+v, %v", st, err)
	}
	if problems, err := Fsck(ctx, dir); err != nil || len(problems) != 0 {
		t.Errorf("Fsck after GC = %v, %v", problems, err)
	}
}

func exists(t *testing.T, dir string, id uint64) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(dir, blockstore.Key(id)))
	return err == nil
}

func TestDestroy(t *testing.T) {
	ctx := context.Background()
	dir := newVolume(t)
	v := open(t, dir)
	writeFile(t, v, "f", []byte("data"))
	closeVol(t, v)
	if err := Destroy(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("volume directory survived Destroy: %v", err)
	}
	if err := Destroy(ctx, dir); !errors.Is(err, ErrNotVolume) {
		t.Errorf("second Destroy = %v, want ErrNotVolume", err)
	}
	// The path can be formatted again.
	if err := Format(ctx, dir, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestAfterCrash kills a process that has the volume open (with committed
// and uncommitted changes) and checks that status, fsck, gc and open all
// work on what it left.
func TestAfterCrash(t *testing.T) {
	if dir := os.Getenv("OHM_TEST_CRASH_VOLUME"); dir != "" {
		crashHelper(dir)
		return
	}
	ctx := context.Background()
	dir := newVolume(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAfterCrash$")
	cmd.Env = append(os.Environ(), "OHM_TEST_CRASH_VOLUME="+dir)
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "meta", "meta.db-wal")); err != nil {
		t.Logf("no WAL left behind: %v", err)
	}
	st, err := Inspect(ctx, dir)
	if err != nil {
		t.Fatalf("Inspect after a crash: %v", err)
	}
	if st.Mounted || st.Files != 2 || st.UsedBytes != 9 {
		t.Errorf("status after a crash = %+v, want the committed file only", st)
	}
	if problems, err := Fsck(ctx, dir); err != nil || len(problems) != 0 {
		t.Errorf("Fsck after a crash = %v, %v", problems, err)
	}
	if _, err := GC(ctx, dir, 0); err != nil {
		t.Errorf("GC after a crash: %v", err)
	}
	v := open(t, dir)
	if _, err := v.Meta.Lookup(ctx, meta.RootIno, "uncommitted"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("uncommitted file after a crash: %v", err)
	}
	closeVol(t, v)
}

func crashHelper(dir string) {
	ctx := context.Background()
	v, err := Open(ctx, dir, OpenOptions{Mountpoint: "/mnt/crash"})
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	a, err := v.Meta.Mknod(ctx, meta.RootIno, "committed", syscall.S_IFREG|0o644, 0, 0, 0)
	var id uint64
	if err == nil {
		id, err = v.Meta.NewBlockID(ctx)
	}
	if err == nil {
		err = v.Blocks.Put(ctx, id, []byte("committed"))
	}
	if err == nil {
		_, err = v.Meta.UpdateFile(ctx, a.Ino, meta.FileUpdate{Chunks: []meta.Chunk{{Index: 0, Len: 9, BlockID: id}}, Size: 9})
	}
	if err == nil {
		err = v.Meta.Commit(ctx)
	}
	if err == nil {
		_, err = v.Meta.Mknod(ctx, meta.RootIno, "uncommitted", syscall.S_IFREG|0o644, 0, 0, 0)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
