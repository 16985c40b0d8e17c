package meta

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crash simulates a crash of db's process: it copies the database and its
// WAL as they are on disk now, with the write transaction still open, and
// returns the copy's path. The copy is what a restart after power loss
// would find (the shared-memory index is rebuilt from the WAL).
func crash(t testing.TB, db *DB, path string) string {
	t.Helper()
	dir := t.TempDir()
	dst := filepath.Join(dir, "meta.db")
	for _, suffix := range []string{"", "-wal"} {
		in, err := os.Open(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(dst + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	return dst
}

func TestCrashPrefixCopy(t *testing.T) {
	db, path := newTestDB(t)
	d := mkdir(t, db, RootIno, "d")
	for i := range 50 {
		mkfile(t, db, d.Ino, fmt.Sprintf("c%d", i))
	}
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// A large uncommitted tail, enough to spill pages into the WAL.
	for i := range 3000 {
		mkfile(t, db, d.Ino, fmt.Sprintf("u%d-%s", i, strings.Repeat("x", 100)))
	}
	db.Unlink(ctx, d.Ino, "c0")
	db2, err := Open(ctx, crash(t, db, path), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close(ctx)
	verifyPrefix(t, db2)
}

// verifyPrefix checks a database left by the crash tests: the 50 committed
// files are there, nothing uncommitted is, and Check is clean.
func verifyPrefix(t *testing.T, db *DB) {
	t.Helper()
	d := mustLookup(t, db, RootIno, "d")
	n := 0
	db.ReadDir(ctx, d.Ino, 0, false, func(e DirEntry) bool {
		if !strings.HasPrefix(e.Name, "c") {
			t.Errorf("uncommitted entry %q survived the crash", e.Name)
		}
		n++
		return true
	})
	if n != 50 {
		t.Errorf("%d committed entries after the crash, want 50", n)
	}
	if u := usage(t, db); u.Inodes != 52 {
		t.Errorf("usage after crash = %+v, want 52 inodes", u)
	}
	checkClean(t, db)
	// The volume keeps working: new inodes and cookies do not collide.
	mkfile(t, db, d.Ino, "after")
	checkClean(t, db)
}

// TestCrashPrefixKill runs the writer in a child process (this test binary
// again) and kills it with SIGKILL while it holds an uncommitted tail.
func TestCrashPrefixKill(t *testing.T) {
	if p := os.Getenv("OHM_META_CRASH_CHILD"); p != "" {
		crashChild(p)
		return
	}
	path := filepath.Join(t.TempDir(), "meta.db")
	if err := Create(ctx, path, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashPrefixKill$")
	cmd.Env = append(os.Environ(), "OHM_META_CRASH_CHILD="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	verifyPrefix(t, db)
}

func crashChild(path string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	db, err := Open(ctx, path, Options{})
	if err != nil {
		fail(err)
	}
	d, err := db.Mknod(ctx, RootIno, "d", syscall.S_IFDIR|0o755, 0, 0, 0)
	if err != nil {
		fail(err)
	}
	for i := range 50 {
		if _, err := db.Mknod(ctx, d.Ino, fmt.Sprintf("c%d", i), syscall.S_IFREG|0o644, 0, 0, 0); err != nil {
			fail(err)
		}
	}
	if err := db.Commit(ctx); err != nil {
		fail(err)
	}
	for i := range 3000 {
		if _, err := db.Mknod(ctx, d.Ino, fmt.Sprintf("u%d-%s", i, strings.Repeat("x", 100)), syscall.S_IFREG|0o644, 0, 0, 0); err != nil {
			fail(err)
		}
	}
	if _, err := db.Unlink(ctx, d.Ino, "c0"); err != nil {
		fail(err)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour) // wait for SIGKILL
}
