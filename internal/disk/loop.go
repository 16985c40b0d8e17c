package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sectorSize is the loop device's logical block size: the page size, so
// that every request the kernel filesystem sends is whole 4 KiB sectors
// (no read-modify-write of a 512-byte sector below it) and matches the
// filesystems' own block size.
const sectorSize = 4096

// loopTagPrefix starts the name every loop device this package attaches
// carries in its lo_file_name (LOOP_GET_STATUS64), followed by the
// attaching process's pid and the image's key:
//
//	ohm-disk:<pid>:<key>
//
// It is how Cleanup tells its own devices from everyone else's, even once
// their backing file is gone, and whether the process that attached one is
// still alive.
const loopTagPrefix = "ohm-disk:"

// loopDev is a bound loop device.
type loopDev struct {
	num int
	// rdev is the device number (for the device node df names).
	rdev uint64
}

func (l loopDev) path() string { return "/dev/loop" + strconv.Itoa(l.num) }

func (l loopDev) sysfs(name string) string {
	return filepath.Join("/sys/block", "loop"+strconv.Itoa(l.num), name)
}

// loopTag is the lo_file_name of a device attached by this process for
// the image with key.
func loopTag(key string) string {
	t := loopTagPrefix + strconv.Itoa(os.Getpid()) + ":" + key
	return t[:min(len(t), unix.LO_NAME_SIZE-1)]
}

// parseLoopTag splits a lo_file_name written by loopTag.
func parseLoopTag(name string) (pid int, key string, ok bool) {
	rest, ok := strings.CutPrefix(name, loopTagPrefix)
	if !ok {
		return 0, "", false
	}
	p, key, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, "", false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	return pid, key, true
}

// attachLoop binds img to a free loop device with direct I/O, 4096-byte
// sectors and autoclear, tagged with tag. It returns the open device: the
// caller keeps it open until something else holds the device (mkfs, a
// mount), because with autoclear the last close detaches it.
func attachLoop(img *os.File, tag string) (*os.File, loopDev, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, loopDev{}, fmt.Errorf("open loop control: %w", err)
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Size: sectorSize}
	cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO | unix.LO_FLAGS_AUTOCLEAR
	copy(cfg.Info.File_name[:], tag)
	// Another process may take the device between GET_FREE and
	// CONFIGURE: then CONFIGURE says EBUSY and the next free one is tried.
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, loopDev{}, fmt.Errorf("find a free loop device: %w", err)
		}
		l := loopDev{num: n}
		dev, err := openLoop(l.path())
		if err != nil {
			return nil, loopDev{}, err
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) && attempt < 64 {
			dev.Close()
			continue
		}
		if err != nil {
			dev.Close()
			return nil, loopDev{}, fmt.Errorf("attach %s to %s: %w", img.Name(), l.path(), err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(dev.Fd()), &st); err != nil {
			detachLoop(dev)
			return nil, loopDev{}, fmt.Errorf("stat %s: %w", l.path(), err)
		}
		l.rdev = st.Rdev
		// Older kernels fall back to buffered I/O silently when the
		// backing file cannot do direct I/O; this package relies on it
		// (no second page cache in the FUSE mount), so say so.
		info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
		if err == nil && info.Flags&unix.LO_FLAGS_DIRECT_IO == 0 {
			detachLoop(dev)
			return nil, loopDev{}, fmt.Errorf("attach %s: the loop device refused direct I/O on it", img.Name())
		}
		return dev, l, nil
	}
}

// openLoop opens a loop device node, waiting briefly for devtmpfs to make
// a node LOOP_CTL_GET_FREE has just created.
func openLoop(path string) (*os.File, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.ENOENT) || time.Now().After(deadline) {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// detachLoop unbinds the loop device open as dev and closes it. A device
// something still holds (a mount) is only marked for autoclear by the
// kernel and goes away when it is released.
func detachLoop(dev *os.File) error {
	err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
	cerr := dev.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev.Name(), err)
	}
	return cerr
}

// setCapacity makes the loop device pick up its backing file's new size.
func (l loopDev) setCapacity() error {
	dev, err := os.OpenFile(l.path(), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", l.path(), err)
	}
	defer dev.Close()
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("resize %s: %w", l.path(), err)
	}
	return nil
}

// size is the loop device's size in bytes.
func (l loopDev) size() (int64, error) {
	b, err := os.ReadFile(l.sysfs("size"))
	if err != nil {
		return 0, err
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", l.sysfs("size"), err)
	}
	return sectors * 512, nil
}

// bound reports whether the loop device still has a backing file.
func (l loopDev) bound() bool {
	_, err := os.Stat(l.sysfs("loop/backing_file"))
	return err == nil
}

// waitUnbound waits until the kernel has let go of the loop device (an
// autoclear device detaches once its last user, the filesystem, is gone).
func (l loopDev) waitUnbound(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for l.bound() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// tune writes the loop device's queue settings: the largest request (so
// that big sequential I/O maps onto whole FUSE writes) and the number of
// requests in flight. Zero keeps the kernel's value.
func (l loopDev) tune(maxIOKB, queueDepth int) error {
	set := func(name string, v int) error {
		if v <= 0 {
			return nil
		}
		if err := os.WriteFile(l.sysfs("queue/"+name), []byte(strconv.Itoa(v)), 0); err != nil {
			return fmt.Errorf("set %s of %s: %w", name, l.path(), err)
		}
		return nil
	}
	if err := set("max_sectors_kb", maxIOKB); err != nil {
		return err
	}
	return set("nr_requests", queueDepth)
}

// loopState is what Cleanup and Open learn of a bound loop device.
type loopState struct {
	loopDev
	tag     string // lo_file_name
	backing string // the backing file's path as the kernel prints it
	device  uint64 // st_dev of the backing file
	inode   uint64 // st_ino of the backing file
}

// ours reports whether the device was attached by this package.
func (s loopState) ours() bool { _, _, ok := parseLoopTag(s.tag); return ok }

// boundLoops lists the bound loop devices that look like this package's
// (direct I/O, autoclear, 4096-byte sectors) and reads their tags. Other
// loop devices are not opened at all.
func boundLoops() ([]loopState, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []loopState
	for _, e := range ents {
		n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "loop"))
		if err != nil || !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		l := loopDev{num: n}
		backing, err := os.ReadFile(l.sysfs("loop/backing_file"))
		if err != nil {
			continue // not bound
		}
		if readSysfs(l.sysfs("loop/dio")) != "1" || readSysfs(l.sysfs("loop/autoclear")) != "1" ||
			readSysfs(l.sysfs("queue/logical_block_size")) != strconv.Itoa(sectorSize) {
			continue
		}
		st, err := statLoop(l)
		if err != nil {
			continue // detached meanwhile
		}
		st.backing = strings.TrimSuffix(string(backing), "\n")
		if st.ours() {
			out = append(out, st)
		}
	}
	return out, nil
}

// statLoop reads a loop device's status. Opening a device and closing it
// again detaches it if it is an autoclear device nobody else has open,
// which only ever happens to a device a crash left behind: one in use
// stays.
func statLoop(l loopDev) (loopState, error) {
	f, err := os.OpenFile(l.path(), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return loopState{}, err
	}
	defer f.Close()
	return statLoopFile(l, f)
}

func statLoopFile(l loopDev, f *os.File) (loopState, error) {
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return loopState{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return loopState{}, err
	}
	l.rdev = st.Rdev
	name := info.File_name[:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return loopState{loopDev: l, tag: string(name), device: info.Device, inode: info.Inode}, nil
}

// loopByRdev finds the loop device with device number rdev.
func loopByRdev(rdev uint64) (loopDev, bool) {
	if unix.Major(rdev) != 7 {
		// Loop devices past the first 256 minors may be given other
		// majors; this package only meets the ones it made, and those
		// come from /dev/loopN, whose number is the minor on major 7.
		return loopDev{}, false
	}
	return loopDev{num: int(unix.Minor(rdev)), rdev: rdev}, true
}

// busy reports whether something holds the loop device exclusively (a
// mounted filesystem, a running mkfs).
func (l loopDev) busy() bool {
	f, err := os.OpenFile(l.path(), os.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return errors.Is(err, unix.EBUSY)
	}
	f.Close()
	return false
}

func readSysfs(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// processAlive reports whether pid names a live process.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
