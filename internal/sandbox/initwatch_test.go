package sandbox

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestExitReason(t *testing.T) {
	// Wait statuses as the kernel encodes them: signal in the low 7 bits,
	// exit code in the next 8.
	for _, tc := range []struct {
		ws   syscall.WaitStatus
		oom  bool
		want string
	}{
		{syscall.WaitStatus(syscall.SIGKILL), true, "init was killed (out of memory)"},
		{syscall.WaitStatus(syscall.SIGKILL), false, "init was killed by signal SIGKILL"},
		{syscall.WaitStatus(syscall.SIGTERM), true, "init was killed by signal SIGTERM"},
		{syscall.WaitStatus(0), false, "init exited with status 0"},
		{syscall.WaitStatus(2 << 8), false, "init exited with status 2"},
		{syscall.WaitStatus(1 << 8), true, "init exited with status 1 after the out-of-memory killer acted"},
	} {
		if got := exitReason(tc.ws, tc.oom); got != tc.want {
			t.Errorf("exitReason(%#x, oom %v) = %q, want %q", int(tc.ws), tc.oom, got, tc.want)
		}
	}
}

func TestReadOOMKills(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// cgroup v1's memory.oom_control and v2's memory.events.
	v1 := write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
	v2 := write("memory.events", "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n")
	for path, want := range map[string]int64{v1: 3, v2: 2} {
		if got, err := readOOMKills(path); err != nil || got != want {
			t.Errorf("readOOMKills(%s) = %d, %v; want %d", filepath.Base(path), got, err, want)
		}
	}
	if _, err := readOOMKills(write("old", "oom_kill_disable 0\nunder_oom 0\n")); err == nil {
		t.Error("a file without oom_kill: no error")
	}
	if _, err := readOOMKills(""); err == nil {
		t.Error("no file: no error")
	}
}
