package vfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"ohm/internal/ohmfs/meta"
)

const crashEnv = "OHM_VFS_CRASH_DIR"

func syncedContent(k int) []byte {
	return randBytes(1000+(k%1000000)*37777%(3*meta.ChunkSize), uint64(k)+1000)
}

// TestCrashChild is the writer that TestCrash kills; it runs only in the
// child process.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("runs only as TestCrash's child process")
	}
	ctx := context.Background()
	_, err := os.Stat(dir + "/meta.db")
	v := openVolume(t, dir, os.IsNotExist(err))
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{CommitInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := strconv.Atoi(os.Getenv("OHM_VFS_CRASH_BASE"))
	r := rand.New(rand.NewPCG(uint64(base), 2))
	for k := base; ; k++ {
		// Unsynced noise: big and small writes, overwrites, truncates,
		// unlinks (some while open), renames.
		name := fmt.Sprintf("n%d", r.IntN(8))
		tmp := fmt.Sprintf("t%d", k)
		a, fh, err := fs.Create(ctx, root, meta.RootIno, tmp, 0o644, syscall.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		n := r.IntN(2 * meta.ChunkSize)
		if _, err := fs.Write(ctx, a.Ino, fh, int64(r.IntN(meta.ChunkSize)), randBytes(n, uint64(k))); err != nil {
			t.Fatal(err)
		}
		if r.IntN(3) == 0 {
			sz := uint64(r.IntN(n + 1))
			if _, err := fs.SetAttr(ctx, a.Ino, meta.SetAttr{Size: &sz}); err != nil {
				t.Fatal(err)
			}
		}
		if err := fs.Rename(ctx, meta.RootIno, tmp, meta.RootIno, name, 0); err != nil {
			t.Fatal(err)
		}
		if r.IntN(4) == 0 {
			if err := fs.Unlink(ctx, meta.RootIno, name); err != nil {
				t.Fatal(err)
			}
		}
		if r.IntN(2) == 0 {
			fs.Release(ctx, a.Ino, fh)
		}
		// The fsynced file.
		sa, sfh, err := fs.Create(ctx, root, meta.RootIno, fmt.Sprintf("s%d", k), 0o644, syscall.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		data := syncedContent(k)
		if _, err := fs.Write(ctx, sa.Ino, sfh, 0, data); err != nil {
			t.Fatal(err)
		}
		if err := fs.Fsync(ctx, sa.Ino, sfh, false); err != nil {
			t.Fatal(err)
		}
		fs.Release(ctx, sa.Ino, sfh)
		fmt.Printf("synced %d\n", k)
	}
}

// TestCrash kills a writer with SIGKILL at random moments and checks that
// the volume is consistent and every fsynced file is exact.
func TestCrash(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("child")
	}
	if testing.Short() {
		t.Skip("crash test is slow")
	}
	dir := t.TempDir()
	synced := map[int]bool{}
	base := 0
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, "OHM_VFS_CRASH_BASE="+strconv.Itoa(base))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan int, 1000)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var k int
				if _, err := fmt.Sscanf(sc.Text(), "synced %d", &k); err == nil {
					lines <- k
				} else {
					t.Logf("child: %s", sc.Text())
				}
			}
			close(lines)
		}()
		// Wait for the first fsync, then kill at a random later moment.
		select {
		case k, ok := <-lines:
			if !ok {
				t.Fatal("child exited without syncing anything")
			}
			synced[k] = true
		case <-time.After(60 * time.Second):
			t.Fatal("child made no progress")
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		cmd.Process.Kill()
		for k := range lines {
			synced[k] = true
		}
		cmd.Wait()
		base = (round + 1) * 1000000 // names past the last fsync may exist
		verifyVolume(t, dir, synced, round)
	}
}

func verifyVolume(t *testing.T, dir string, synced map[int]bool, round int) {
	t.Helper()
	ctx := context.Background()
	v := openVolume(t, dir, false)
	defer v.meta.Close(ctx)
	checkClean(t, v)
	err := v.meta.ReferencedBlocks(ctx, func(id uint64) error {
		if _, err := v.bs.Get(ctx, id); err != nil {
			return fmt.Errorf("referenced block %d: %w", id, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	fs, err := New(ctx, v.meta, v.bs, 1<<50, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close(ctx)
	for k := range synced {
		a, err := fs.Lookup(ctx, meta.RootIno, fmt.Sprintf("s%d", k))
		if err != nil {
			t.Fatalf("round %d: fsynced file s%d: %v", round, k, err)
		}
		fh, err := fs.Open(ctx, a.Ino, syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, fs, a.Ino, fh); !bytes.Equal(got, syncedContent(k)) {
			t.Fatalf("round %d: fsynced file s%d differs (%d bytes)", round, k, len(got))
		}
		fs.Release(ctx, a.Ino, fh)
	}
	if o, _ := v.meta.Orphans(ctx); len(o) != 0 {
		t.Errorf("orphans left after New: %v", o)
	}
	t.Logf("round %d: %d fsynced files verified", round, len(synced))
}
