package mount

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/fusefs"
)

// Unmount unmounts the ohmfs mount at mountpoint and waits, up to
// timeout, until the process that served it has made everything durable
// and exited. The kernel writes every dirty page back to that process
// before the unmount completes, and the process commits and closes the
// volume when it sees the mount go.
func Unmount(ctx context.Context, mountpoint string, timeout time.Duration) error {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	// Never resolved through a symlink: the mountpoint may be in a
	// directory something less trusted can write (see fusefs).
	fstype, ok, err := fusefs.MountedAt(mp)
	if err != nil {
		return fmt.Errorf("unmount %w", err)
	}
	if !ok {
		return fmt.Errorf("%s is not mounted", mp)
	}
	if fstype != "fuse."+fusefs.FSName {
		return fmt.Errorf("%s is not an ohmfs mount (it is %s)", mp, fstype)
	}
	rec, hasRec := readRecord(mp)
	if err := unmountRetryingBusy(ctx, mp); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: it is busy (a process has a file or its working directory there)", mp)
		}
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	if !hasRec {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for rec.alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("unmounted %s, but its mount process %d (server %d) is still flushing after %v", mp, rec.PID, rec.Server, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// unmountRetryingBusy unmounts mp, trying again for a second while it is
// busy: the mount's own writeback helper opens its root twice a second,
// and a process that has just exited may still be letting go of its
// files. Only a mountpoint that stays busy is an error for the user.
func unmountRetryingBusy(ctx context.Context, mp string) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Unmount(mp, unix.UMOUNT_NOFOLLOW)
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
