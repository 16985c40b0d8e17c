package proc

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRunning(t *testing.T) {
	if !Running(os.Getpid()) {
		t.Error("this process does not run")
	}
	for _, pid := range []int{0, -1} {
		if Running(pid) {
			t.Errorf("pid %d runs", pid)
		}
	}
	// A child that exited and is not reaped yet is a zombie: it has exited.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skipf("no true(1): %v", err)
	}
	pid := cmd.Process.Pid
	// Wait for the exit without reaping (WNOWAIT).
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid: %v", err)
	}
	if Running(pid) {
		t.Errorf("zombie %d counts as running", pid)
	}
	cmd.Wait()
	if Running(pid) {
		t.Errorf("reaped %d counts as running", pid)
	}
}

func TestFind(t *testing.T) {
	me := Find(func(argv []string) bool { return len(argv) > 0 && argv[0] == os.Args[0] })
	if !slices.Contains(me, os.Getpid()) {
		t.Errorf("Find by argv[0] %q: %v, want this process %d among them", os.Args[0], me, os.Getpid())
	}
	if got := Find(func([]string) bool { return false }); len(got) != 0 {
		t.Errorf("Find of nothing: %v", got)
	}
}
