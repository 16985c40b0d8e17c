// Package disktest holds what the crash and host-loss suites check of a
// kernel filesystem on an ohmfs device image: that the disk is mounted as
// a computer's workspace is, the filesystem's own check, letting go of a
// disk whose storage died, and the log of files a workload fsynced,
// checked against what the disk holds after a crash.
package disktest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	"ohm/internal/ohmfs/vfs"
)

// RequireFlushRule fails t unless the disk at cfg is mounted the way a
// workspace runs on ohmfs: btrfs without flushes (nobarrier), its
// superblocks named as the image's durable ranges. Without this check a
// change that made internal/disk fall back to barriers would leave the
// crash tests testing a configuration production no longer runs.
func RequireFlushRule(t *testing.T, cfg disk.Config) {
	t.Helper()
	img := filepath.Join(cfg.ImageDir, cfg.Image)
	buf := make([]byte, 256)
	n, err := unix.Getxattr(img, vfs.XattrDurableRanges, buf)
	if err != nil || n == 0 {
		t.Fatalf("%s has no %s (%v): the disk is not mounted as a workspace is", img, vfs.XattrDurableRanges, err)
	}
	opts := MountOptions(cfg.Mountpoint)
	if !slices.Contains(strings.Split(opts, ","), "nobarrier") {
		t.Fatalf("the disk at %s is mounted %q, without nobarrier: not as a workspace is", cfg.Mountpoint, opts)
	}
}

// MountOptions returns the options /proc/self/mounts gives for the
// filesystem mounted at dir (the topmost one).
func MountOptions(dir string) string {
	b, _ := os.ReadFile("/proc/self/mounts")
	opts := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == dir {
			opts = f[3]
		}
	}
	return opts
}

// BtrfsCheck runs btrfs's own read-only check on the image, a file in the
// (unmounted) disk's ohmfs mount.
func BtrfsCheck(t *testing.T, img, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "btrfs", "check", "--readonly", img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: %s: %v\n%s", when, strings.Join(cmd.Args, " "), err, out)
	}
}

// DropDisk lets go of a disk whose storage was killed under it, as a
// computer's workspace does (BlockWorkspace.closeDisk with dead): the
// filesystem is detached, not flushed, and Close's error (nothing can be
// written any more) is expected.
func DropDisk(d *disk.Disk) {
	if d == nil {
		return
	}
	unix.Unmount(d.Mountpoint(), unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.Close(ctx)
}

// Entry is a file a workload fsynced, as its log line has it: the path
// relative to the directory the log is checked against, size and sha256.
type Entry struct {
	Path string
	Size int64
	Sum  string
}

// ReadLog reads a workload's log of fsynced files ("path size sha256"
// lines); a missing log is empty, and a line cut short when the workload
// was killed is skipped.
func ReadLog(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) != 3 {
			continue
		}
		size, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, Entry{fields[0], size, fields[2]})
	}
	return out, s.Err()
}

// HashFile returns the sha256 (hex) and size of the file at path.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// CheckSynced checks every file the logs say was fsynced, relative to
// dir: each must hold what was fsynced.
func CheckSynced(t *testing.T, dir string, logs []string, when string) {
	t.Helper()
	n := 0
	for _, l := range logs {
		entries, err := ReadLog(l)
		if err != nil {
			t.Fatalf("read log %s: %v", l, err)
		}
		for _, e := range entries {
			n++
			sum, size, err := HashFile(filepath.Join(dir, e.Path))
			if err != nil {
				t.Errorf("%s: fsynced file %s: %v", when, e.Path, err)
				continue
			}
			if sum != e.Sum || size != e.Size {
				t.Errorf("%s: fsynced file %s has %d bytes (sha256 %s), want %d bytes (%s)", when, e.Path, size, sum[:12], e.Size, e.Sum[:12])
			}
		}
	}
	t.Logf("%s: %d fsynced files checked", when, n)
}
