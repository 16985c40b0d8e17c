package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"ohm/internal/mountinfo"
)

// ext4ResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64): grow a
// mounted ext4 to a number of blocks.
const ext4ResizeFS = 0x40086610

// GrowDisk grows the local root disk image of spec (StateDir/root.img, the
// layout of computers made before the root disk lived in the volume) to
// sizeMB. While it is mounted, the loop device picks up the new size
// (LOOP_SET_CAPACITY) and ext4 grows online; otherwise the next start
// grows the filesystem once it is mounted (mountDisk). Shrinking is
// refused.
func GrowDisk(ctx context.Context, spec Spec, sizeMB int) error {
	if spec.DiskMounted {
		return fmt.Errorf("grow the root disk of %s: it is not a local image", spec.Name)
	}
	p := spec.paths()
	img, err := os.OpenFile(p.image, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("grow the root disk of %s: %w", spec.Name, err)
	}
	defer img.Close()
	fi, err := img.Stat()
	if err != nil {
		return fmt.Errorf("grow the root disk of %s: %w", spec.Name, err)
	}
	size := int64(sizeMB) << 20
	if size < fi.Size() {
		return fmt.Errorf("the root disk of %s is %d MB and can only grow, not shrink to %d MB", spec.Name, fi.Size()>>20, sizeMB)
	}
	if size > fi.Size() {
		if err := img.Truncate(size); err != nil {
			return fmt.Errorf("grow the root disk image of %s: %w", spec.Name, err)
		}
	}
	if !mountinfo.IsMountpoint(p.disk) {
		return nil // mountDisk grows it
	}
	dev, err := loopOf(p.disk)
	if err != nil {
		return fmt.Errorf("grow the root disk of %s: %w", spec.Name, err)
	}
	if err := setCapacity(dev); err != nil {
		return fmt.Errorf("grow the root disk of %s: %w", spec.Name, err)
	}
	devSize, err := blockDevSize(dev)
	if err != nil {
		return fmt.Errorf("grow the root disk of %s: %w", spec.Name, err)
	}
	return GrowMountedExt4(p.disk, devSize)
}

// ErrGrowAtStart is returned (wrapped) when a mounted ext4 cannot grow
// while mounted because the kernel refuses (online resizing needs
// CAP_SYS_RESOURCE, which some hosts' root lacks): its image has grown,
// and the filesystem grows at the next start (GrowExt4Image).
var ErrGrowAtStart = errors.New("the filesystem grows at the next start")

// GrowMountedExt4 grows the ext4 mounted at dir to size bytes if it is
// smaller (EXT4_IOC_RESIZE_FS, what resize2fs does online).
func GrowMountedExt4(dir string, size int64) error {
	err := growExt4(dir, size)
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: %w (online growth of ext4 needs CAP_SYS_RESOURCE)", ErrGrowAtStart, err)
	}
	return err
}

// GrowExt4Image grows the ext4 in the unmounted image at path to the
// image's size, if it is smaller: e2fsck -f -p (resize2fs wants a checked
// filesystem), then resize2fs. A filesystem e2fsck cannot fix by itself
// is left as it is, at its old size, and the error says so.
func GrowExt4Image(ctx context.Context, path string) error {
	fsSize, err := ext4Size(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fsSize >= fi.Size() {
		return nil
	}
	cmd, err := hostCommand(ctx, "e2fsck", "-f", "-p", path)
	if err != nil {
		return err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		var exit *exec.ExitError
		// 1: errors fixed; anything above needs a person.
		if !errors.As(err, &exit) || exit.ExitCode() > 1 {
			return fmt.Errorf("grow root disk: e2fsck: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	cmd, err = hostCommand(ctx, "resize2fs", path)
	if err != nil {
		return err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("grow root disk: resize2fs: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ext4Size reads the size of the ext4 in the image at path from its
// superblock (blocks count times block size).
func ext4Size(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, fmt.Errorf("read the superblock of %s: %w", path, err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, fmt.Errorf("%s holds no ext4", path)
	}
	blocks := uint64(le.Uint32(sb[0x4:]))
	if le.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
	}
	logBlock := le.Uint32(sb[0x18:])
	if logBlock > 6 {
		return 0, fmt.Errorf("%s: implausible ext4 block size", path)
	}
	return int64(blocks << (10 + logBlock)), nil
}

// growExt4 grows the ext4 mounted at dir to size bytes, if it is smaller.
func growExt4(dir string, size int64) error {
	root, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root disk: %w", err)
	}
	defer root.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(root.Fd()), &st); err != nil {
		return fmt.Errorf("root disk: statfs: %w", err)
	}
	blocks := uint64(size) / uint64(st.Bsize)
	if blocks <= st.Blocks {
		return nil // minixdf: Blocks is the filesystem's whole size
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, root.Fd(), ext4ResizeFS, uintptr(unsafe.Pointer(&blocks))); errno != 0 {
		return fmt.Errorf("grow the root disk's ext4 to %d MB: %w", size>>20, errno)
	}
	return nil
}

// loopOf is the loop device mounted at dir (as mount(8) -o loop made it).
func loopOf(dir string) (string, error) {
	m, ok, err := mountinfo.At(dir)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("nothing mounted at %s", dir)
	}
	src := m.Source
	if !strings.HasPrefix(src, "/dev/loop") {
		return "", fmt.Errorf("%s is mounted from %s, not a loop device", dir, src)
	}
	return src, nil
}

func setCapacity(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("resize %s: %w", dev, err)
	}
	return nil
}

func blockDevSize(dev string) (int64, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, fmt.Errorf("size of %s: %w", dev, errno)
	}
	return int64(size), nil
}
