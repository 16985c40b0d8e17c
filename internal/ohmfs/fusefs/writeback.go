package fusefs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The writeback loop makes the kernel write the dirty pages of its
// writeback cache back to the server every interval (syncfs). Left alone
// the kernel may hold them for up to 30 s (vm.dirty_expire_centisecs),
// which the durability contract (docs/durability.md) does not allow.
//
// It runs in a helper process, never in the process that serves the
// mount: a process must not make calls into its own mount that wait for
// an answer. Killed in the middle of one, its thread would wait forever
// for the answer only the dead process could give, the process could not
// finish dying, and the mount and the volume's lock would stay held until
// someone aborted the connection.
//
// The helper is this same executable started again with writebackEnv set:
// the init below turns it into the helper before main runs, in the ohm
// binary and in test binaries alike, so that no caller can forget to wire
// it up.

// writebackEnv carries a helper's job (writebackJob as JSON).
const writebackEnv = "OHMFS_WRITEBACK_HELPER"

// writebackJob is what a helper is told.
type writebackJob struct {
	Mountpoint string        `json:"mountpoint"`
	Dev        uint64        `json:"dev"` // the mount's st_dev: anything else at the path is not ours
	Interval   time.Duration `json:"interval"`
	Parent     int           `json:"parent"`
}

func init() {
	if s := os.Getenv(writebackEnv); s != "" {
		os.Exit(runWritebackHelper(s))
	}
}

func runWritebackHelper(spec string) int {
	var job writebackJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil || job.Interval <= 0 {
		fmt.Fprintf(os.Stderr, "ohmfs writeback helper: bad job %q\n", spec)
		return 2
	}
	t := time.NewTicker(job.Interval)
	defer t.Stop()
	for range t.C {
		// Pdeathsig follows the thread that started us; the parent's
		// pid is the surer sign that the server is gone.
		if os.Getppid() != job.Parent {
			return 0
		}
		if err := syncMount(job.Mountpoint, job.Dev); err != nil {
			return 0 // unmounted, or the connection ended
		}
	}
	return 0
}

// syncMount writes back the kernel's dirty pages of the mount at
// mountpoint, whose device is dev. The root is opened anew each time, so
// that no open file of ours keeps an administrator's umount from
// succeeding; without following symlinks, and only if it is still that
// mount.
func syncMount(mountpoint string, dev uint64) error {
	fd, err := unix.Openat2(unix.AT_FDCWD, mountpoint, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Dev != dev {
		return errors.New("no longer mounted")
	}
	return unix.Syncfs(fd)
}

// startWriteback runs the writeback loop for the mount at mountpoint
// (device dev) in a helper process, and returns how to stop it. The helper
// dies with this process.
func startWriteback(mountpoint string, dev uint64, interval time.Duration) (stop func(), err error) {
	job, err := json.Marshal(writebackJob{Mountpoint: mountpoint, Dev: dev, Interval: interval, Parent: os.Getpid()})
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{"ohmfs-writeback", mountpoint},
		Env:         append(os.Environ(), writebackEnv+"="+string(job)),
		Stdout:      os.Stderr,
		Stderr:      os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	// Pdeathsig follows the thread that started the helper, and Go ends
	// a thread whose goroutine exits locked to it: the helper is started
	// from a thread kept, locked to the goroutine that waits for it, for
	// as long as the helper runs.
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start the writeback helper: %w", err)
	}
	return func() {
		cmd.Process.Kill()
		<-exited
	}, nil
}
