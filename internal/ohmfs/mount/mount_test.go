package mount

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/ohmfs/volume"
	"ohm/internal/proc"
)

// serveEnv makes the test binary a serving process: Serve of the Config
// (JSON) in the variable, readiness on descriptor 3.
const serveEnv = "OHM_MOUNT_TEST_SERVE"

func TestMain(m *testing.M) {
	if s := os.Getenv(serveEnv); s != "" {
		var c Config
		if err := json.Unmarshal([]byte(s), &c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := Serve(context.Background(), c, os.NewFile(3, "ready")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
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

// newVolume formats a file volume and returns a Config for it at a fresh
// mountpoint.
func newVolume(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	c := Config{Volume: filepath.Join(dir, "vol"), Mountpoint: filepath.Join(dir, "mnt")}
	if err := volume.Format(context.Background(), c.Volume, volume.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// serveProcess runs Serve of c in a child process and returns it once it
// reports the mount ready.
func serveProcess(t *testing.T, c Config) *exec.Cmd {
	t.Helper()
	spec, _ := json.Marshal(c)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+string(spec))
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if _, ok, _ := fusefs.MountedAt(c.Mountpoint); ok {
			fusefs.Detach(c.Mountpoint)
		}
	})
	line, _ := bufio.NewReader(r).ReadString('\n')
	if strings.TrimSpace(line) != readyOK {
		t.Fatalf("serving process: %q", line)
	}
	return cmd
}

// TestServeUnmount: Unmount returns once the serving process has made
// everything durable and exited, and the record it left is gone.
func TestServeUnmount(t *testing.T) {
	requireFUSE(t)
	c := newVolume(t)
	cmd := serveProcess(t, c)
	rec, ok := readRecord(c.Mountpoint)
	if !ok || rec.PID != cmd.Process.Pid || rec.Volume != c.Volume {
		t.Fatalf("record of the mount = %+v, %v; want pid %d", rec, ok, cmd.Process.Pid)
	}
	data := strings.Repeat("durable ", 100000)
	if err := os.WriteFile(filepath.Join(c.Mountpoint, "f"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symlink to the mount is not followed.
	link := filepath.Join(filepath.Dir(c.Mountpoint), "link")
	if err := os.Symlink(c.Mountpoint, link); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(context.Background(), link, time.Minute); !errors.Is(err, fusefs.ErrSymlink) {
		t.Fatalf("Unmount through a symlink = %v, want ErrSymlink", err)
	}
	if _, ok, _ := fusefs.MountedAt(c.Mountpoint); !ok {
		t.Fatal("Unmount through a symlink unmounted")
	}
	if err := Unmount(context.Background(), c.Mountpoint, time.Minute); err != nil {
		t.Fatal(err)
	}
	if proc.Running(cmd.Process.Pid) {
		t.Fatal("Unmount returned while the serving process was still running")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serving process: %v", err)
	}
	if _, err := os.Stat(recordPath(c.Mountpoint)); !os.IsNotExist(err) {
		t.Errorf("record after unmount: %v", err)
	}
	if r, err := volume.FsckVolume(context.Background(), c.Volume, volume.FsckOptions{}); err != nil || len(r.Problems) > 0 {
		t.Fatalf("fsck after unmount: %+v, %v", r, err)
	}
	// What was written is in the volume, not only in a cache.
	cmd = serveProcess(t, c)
	if b, err := os.ReadFile(filepath.Join(c.Mountpoint, "f")); err != nil || string(b) != data {
		t.Fatalf("after a remount: %d bytes, %v; want %d", len(b), err, len(data))
	}
	if err := Unmount(context.Background(), c.Mountpoint, time.Minute); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

func TestUnmountErrors(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	for _, tt := range []struct{ path, want string }{
		{dir, "is not mounted"},
		{"/proc", "is not an ohmfs mount"},
	} {
		err := Unmount(context.Background(), tt.path, time.Second)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Unmount(%s) = %v, want %q", tt.path, err, tt.want)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	for _, tt := range []struct {
		c    Config
		want string
	}{
		{Config{Mountpoint: "/mnt"}, "no volume"},
		{Config{Volume: "v", Mountpoint: "mnt"}, "not an absolute path"},
		{Config{Volume: "v", Mountpoint: "/mnt", Fsync: "never"}, "--fsync"},
		{Config{Volume: "v", Mountpoint: "/mnt", CacheBytes: -1}, "negative"},
	} {
		if err := tt.c.check(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("check(%+v) = %v, want %q", tt.c, err, tt.want)
		}
	}
	if err := (Config{Volume: "v", Mountpoint: "/mnt"}).check(); err != nil {
		t.Errorf("check of a good config: %v", err)
	}
}
