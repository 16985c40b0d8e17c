package proc

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

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

// leaderExitEnv makes the test binary a process whose first thread exits
// while another thread lives on until its stdin closes.
const leaderExitEnv = "OHM_PROC_TEST_LEADER_EXIT"

func init() {
	if os.Getenv(leaderExitEnv) == "" {
		return
	}
	// The main goroutine stays on the first thread, which exits alone
	// (exit, not exit_group); the goroutine below runs on another thread.
	runtime.LockOSThread()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	os.Stdout.WriteString("ready\n")
	for {
		unix.RawSyscall(unix.SYS_EXIT, 0, 0, 0)
	}
}

// TestRunningLeaderExited: a process whose first thread has exited but
// whose other threads still run is running (it still holds its files).
func TestRunningLeaderExited(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), leaderExitEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("the child did not start: %v", err)
	}
	pid := cmd.Process.Pid
	// Wait, with a deadline, until the first thread shows as a zombie.
	deadline := time.Now().Add(30 * time.Second)
	for runningByStat(pid) {
		if time.Now().After(deadline) {
			t.Fatal("the child's first thread did not exit in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !Running(pid) {
		t.Error("a process with a live thread counts as exited")
	}
	stdin.Close()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid: %v", err)
	}
	if Running(pid) {
		t.Error("an exited process counts as running")
	}
}
