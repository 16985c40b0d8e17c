package fusefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

// ControlDir is where the kernel's FUSE control filesystem (fusectl) is
// mounted: one directory per live FUSE connection, named by the minor
// number of the mount's device, with an abort file in each.
const ControlDir = "/sys/fs/fuse/connections"

// EnsureControl mounts fusectl at ControlDir unless it is mounted there
// already. Nothing mounts it at boot on every machine (systemd does, a
// minimal init does not), so whatever needs it mounts it first. It is
// safe against other processes doing the same at the same moment: the
// kernel refuses a second mount of the same filesystem on the same place
// (EBUSY), which counts as success.
func EnsureControl() error {
	if ok, err := controlMounted(); err == nil && ok {
		return nil
	}
	err := unix.Mount("fusectl", ControlDir, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount fusectl at %s: %w", ControlDir, err)
	}
	return nil
}

func controlMounted() (bool, error) {
	ms, err := mountinfo.Stack(ControlDir)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.FSType == "fusectl" {
			return true, nil
		}
	}
	return false, nil
}

// AbortConnection aborts FUSE connection conn (the minor number of its
// mount's device): every request in flight and every later one fails
// with ENOTCONN, and the kernel lets go of the server. fusectl is mounted
// first if it is not. A connection that has ended already is no error.
func AbortConnection(conn int) error {
	p := filepath.Join(ControlDir, strconv.Itoa(conn), "abort")
	err := writeAbort(p)
	if errors.Is(err, fs.ErrNotExist) {
		if ok, merr := controlMounted(); merr != nil || !ok {
			if err := EnsureControl(); err != nil {
				return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
			}
			err = writeAbort(p)
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	return nil
}

func writeAbort(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("1"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Detach ends the FUSE mount at path whatever state its server is in:
// the connection is aborted (so that nothing waits on a dead or stuck
// server any more) and the mount detached. It is for cleaning up after a
// server that died; a live mount is unmounted with Close.
func Detach(path string) error {
	fstype, ok, err := MountedAt(path)
	if err != nil || !ok {
		return err
	}
	var errs []error
	if strings.HasPrefix(fstype, "fuse") {
		// The root's attributes would come from the server; the
		// mount table has the device without asking it.
		if m, ok, err := mountinfo.At(path); err == nil && ok {
			if err := AbortConnection(int(m.Minor)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
	}
	return errors.Join(errs...)
}
