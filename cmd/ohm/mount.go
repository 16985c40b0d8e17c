package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/fusefs"
	"ohm/internal/ohmfs/volume"
	"ohm/internal/units"
)

// addMountCommands adds `fs mount` and `fs umount` to cmd.
func addMountCommands(cmd *cobra.Command) {
	cmd.AddCommand(newMountCmd(), newUmountCmd())
}

// mountRunDir holds one small JSON file per live mount, naming the process
// that serves it, so that `ohm fs umount MOUNTPOINT` can wait for it.
const mountRunDir = "/run/ohm/mounts"

// mountRecord is what a mount process leaves in mountRunDir.
type mountRecord struct {
	PID        int    `json:"pid"`
	Volume     string `json:"volume"`
	Mountpoint string `json:"mountpoint"`
}

func mountRecordPath(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(mountRunDir, hex.EncodeToString(sum[:8])+".json")
}

type mountFlags struct {
	background bool
	cacheSize  string
	cpuProfile string
	readyFD    int
	debug      bool
	noWBCache  bool
	cacheDir   string
	fsync      string
	reserve    string
	// reserveBytes is reserve parsed.
	reserveBytes uint64
}

// Values of --fsync.
const (
	fsyncLocal   = "local"
	fsyncReplica = "replica"
)

func newMountCmd() *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount VOLUME MOUNTPOINT",
		Short: "Mount a volume (in the foreground unless --background)",
		Long: "Mount serves the volume at MOUNTPOINT (created if missing) until it is unmounted\n" +
			"(ohm fs umount, or umount) or the process gets SIGTERM or SIGINT; either way\n" +
			"everything written is made durable first.\n\n" +
			"Durability: fsync returns once the change is in the volume's metadata database\n" +
			"and its data in the object store (--fsync=local, the default). The metadata\n" +
			"replica (Litestream, shipped every second) then trails by at most about 1 s\n" +
			"while its target answers: that is what a host loss can cost of fsynced work.\n" +
			"--fsync=replica also waits until the replica has the change, so fsynced work\n" +
			"survives the loss of the host. Writes without fsync are durable within 1 s.\n\n" +
			"S3 volumes (s3://bucket/prefix) keep their metadata database in --cache-dir\n" +
			"and restore it from the replica when it is missing. If the volume's lease is\n" +
			"lost (another host took the volume over), the mount stops at once without\n" +
			"writing anything more, and the process exits non-zero. See docs/durability.md.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cacheBytes, err := units.ParseSize(f.cacheSize)
			if err != nil {
				return fmt.Errorf("--cache-size: %w", err)
			}
			if f.reserveBytes, err = units.ParseSize(f.reserve); err != nil {
				return fmt.Errorf("--reserve: %w", err)
			}
			mp, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			if f.fsync != fsyncLocal && f.fsync != fsyncReplica {
				return fmt.Errorf("--fsync: %q is not local or replica", f.fsync)
			}
			if f.background {
				return mountBackground(args[0], mp, f)
			}
			return mountForeground(cmd.Context(), args[0], mp, int64(cacheBytes), f)
		},
	}
	cmd.Flags().BoolVar(&f.background, "background", false, "return once the mount is ready, serving it from a detached process")
	cmd.Flags().StringVar(&f.cacheSize, "cache-size", "256M", "memory for cached data blocks (e.g. 256M, 1G)")
	cmd.Flags().StringVar(&f.reserve, "reserve", "1G", "host disk space the workspace leaves free: writes that would use it fail with ENOSPC")
	cmd.Flags().StringVar(&f.cacheDir, "cache-dir", "", "S3 volumes: local directory for the metadata database (default "+volume.DefaultCacheRoot+"/<uuid>)")
	cmd.Flags().StringVar(&f.fsync, "fsync", fsyncLocal, "what fsync waits for: local (metadata database and object store) or replica (also the off-host metadata replica)")
	cmd.Flags().StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the mount process to this file")
	cmd.Flags().IntVar(&f.readyFD, "ready-fd", -1, "file descriptor to report readiness on")
	cmd.Flags().BoolVar(&f.debug, "debug", false, "log every FUSE request")
	cmd.Flags().BoolVar(&f.noWBCache, "no-writeback-cache", false, "send every write to the daemon (for measurements)")
	for _, name := range []string{"cpuprofile", "ready-fd", "debug", "no-writeback-cache"} {
		cmd.Flags().MarkHidden(name)
	}
	return cmd
}

// mountForeground serves the volume until it is unmounted or ctx is
// cancelled (SIGINT, SIGTERM), then flushes, unmounts and closes it.
func mountForeground(ctx context.Context, url, mp string, cacheBytes int64, f mountFlags) (err error) {
	var ready *os.File
	if f.readyFD >= 0 {
		ready = os.NewFile(uintptr(f.readyFD), "ready")
		defer func() {
			if err != nil {
				fmt.Fprintf(ready, "error: %v\n", err)
			}
			ready.Close()
		}()
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}

	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", mp, err)
	}
	if real, err := filepath.EvalSymlinks(mp); err == nil {
		mp = real
	}
	if fstype, ok, err := fusefs.MountedAt(mp); err == nil && ok {
		return fmt.Errorf("mount %s: %w (%s already mounted there)", mp, fusefs.ErrBusy, fstype)
	}

	// The volume and the mount outlive ctx, which ends on SIGTERM: that
	// is when they must still flush.
	bg := context.WithoutCancel(ctx)
	vol, err := volume.Open(bg, url, volume.OpenOptions{Mountpoint: mp, CacheBytes: cacheBytes, CacheDir: f.cacheDir})
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	fopts := fusefs.Options{Debug: f.debug, NoWritebackCache: f.noWBCache, Logger: logger}
	fopts.VFS.Reserve = f.reserveBytes
	if f.fsync == fsyncReplica {
		// vfs has committed the change locally when this runs: Flush
		// ships everything committed so far.
		fopts.AfterFsync = vol.Replica.Flush
	}
	m, err := fusefs.Mount(bg, vol, mp, fopts)
	if err != nil {
		vol.Close(bg)
		return err
	}
	rec := mountRecord{PID: os.Getpid(), Volume: url, Mountpoint: mp}
	recPath := mountRecordPath(mp)
	if err := writeMountRecord(recPath, rec); err != nil {
		logger.Printf("ohm: %v (ohm fs umount will not wait for this process)", err)
	}
	defer os.Remove(recPath)
	logger.Printf("ohm: serving %s at %s (pid %d)", url, mp, os.Getpid())
	if ready != nil {
		fmt.Fprintln(ready, "ready")
		ready.Close()
		ready = nil
	}

	// A hangup (the terminal going away) must not kill a mount.
	signal.Ignore(syscall.SIGHUP)
	select {
	case <-m.Done():
		logger.Printf("ohm: %s was unmounted; closing the volume", mp)
	case <-ctx.Done():
		logger.Printf("ohm: signalled; flushing and unmounting %s", mp)
	case <-vol.LeaseLost: // nil (never) for a file volume
		// Another host may own the volume now: write nothing more, not
		// even the last commit. The local lock goes with the process.
		if err := m.Abort(); err != nil {
			logger.Printf("ohm: %v", err)
		}
		return fmt.Errorf("lost the lease of %s (another host took it over, or it could not be renewed in time): stopped serving %s without writing anything more", url, mp)
	}
	var errs []error
	if err := m.Close(bg); err != nil {
		errs = append(errs, err)
	}
	if err := vol.Close(bg); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	logger.Printf("ohm: %s closed cleanly", url)
	return nil
}

func writeMountRecord(path string, rec mountRecord) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// mountBackground runs the mount in a detached child (its own session,
// output to a log file) and returns once the child reports the mount ready
// or fails.
func mountBackground(url, mp string, f mountFlags) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := mountLogPath(url)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("mount log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()

	args := []string{"fs", "mount", url, mp, "--cache-size", f.cacheSize, "--reserve", f.reserve, "--ready-fd", "3"}
	if f.cpuProfile != "" {
		args = append(args, "--cpuprofile", f.cpuProfile)
	}
	if f.debug {
		args = append(args, "--debug")
	}
	if f.noWBCache {
		args = append(args, "--no-writeback-cache")
	}
	if f.cacheDir != "" {
		args = append(args, "--cache-dir", f.cacheDir)
	}
	args = append(args, "--fsync", f.fsync)
	cmd := exec.Command(exe, args...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start mount process: %w", err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ready":
		return cmd.Process.Release()
	case strings.HasPrefix(line, "error: "):
		cmd.Wait()
		return errors.New(strings.TrimPrefix(line, "error: "))
	default:
		cmd.Wait()
		return fmt.Errorf("mount process exited without mounting %s (see %s)", mp, logPath)
	}
}

// mountLogPath is where a background mount logs: beside a file volume, or
// under /var/log/ohm for others.
func mountLogPath(url string) string {
	dir := strings.TrimPrefix(url, "file://")
	if !strings.Contains(dir, "://") {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return filepath.Join(dir, "mount.log")
		}
	}
	logDir := "/var/log/ohm"
	os.MkdirAll(logDir, 0o755)
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(logDir, "mount-"+hex.EncodeToString(sum[:6])+".log")
}

func newUmountCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Flush and unmount a mounted volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return umount(cmd.Context(), args[0], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the mount process to finish flushing")
	return cmd
}

// umount unmounts mp and waits until the process that served it has made
// everything durable and exited. The kernel writes every dirty page back
// to that process before the unmount completes, and the process commits
// and closes the volume when it sees the mount go.
func umount(ctx context.Context, mountpoint string, timeout time.Duration) error {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(mp); err == nil {
		mp = real
	}
	fstype, ok, err := fusefs.MountedAt(mp)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not mounted", mp)
	}
	if fstype != "fuse."+fusefs.FSName {
		return fmt.Errorf("%s is not an ohmfs mount (it is %s)", mp, fstype)
	}
	pid := 0
	if b, err := os.ReadFile(mountRecordPath(mp)); err == nil {
		var rec mountRecord
		if json.Unmarshal(b, &rec) == nil && rec.Mountpoint == mp && processAlive(rec.PID) {
			pid = rec.PID
		}
	}
	if err := unmountRetryingBusy(ctx, mp); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: it is busy (a process has a file or its working directory there)", mp)
		}
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	if pid == 0 {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("unmounted %s, but its mount process %d is still flushing after %v", mp, pid, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// processAlive reports whether pid is a live process (not a zombie).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// unmountRetryingBusy unmounts mp, trying again for a second while it is
// busy: the mount's own writeback loop opens its root twice a second, and
// a process that has just exited may still be letting go of its files.
// Only a mountpoint that stays busy is an error for the user.
func unmountRetryingBusy(ctx context.Context, mp string) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Unmount(mp, 0)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
