package disk

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Requests golang.org/x/sys/unix does not name, from the kernel's uapi
// headers (linux/fs.h, linux/btrfs.h, xfs_fs.h, ext4.h; values as on
// every architecture with the generic _IOC layout).
const (
	ioctlFIFREEZE = 0xc0045877 // _IOWR('X', 119, int)
	ioctlFITHAW   = 0xc0045878 // _IOWR('X', 120, int)
	ioctlFITRIM   = 0xc0185879 // _IOWR('X', 121, struct fstrim_range)

	ioctlBtrfsResize      = 0x50009403 // BTRFS_IOC_RESIZE: _IOW(0x94, 3, struct btrfs_ioctl_vol_args)
	ioctlBtrfsForgetDev   = 0x50009405 // BTRFS_IOC_FORGET_DEV: _IOW(0x94, 5, struct btrfs_ioctl_vol_args)
	ioctlBtrfsFSInfo      = 0x8400941f // BTRFS_IOC_FS_INFO: _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)
	ioctlBtrfsQuotaCtl    = 0xc0109428 // BTRFS_IOC_QUOTA_CTL: _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
	ioctlBtrfsQgroupLimit = 0x8030942b // BTRFS_IOC_QGROUP_LIMIT: _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)

	ioctlXFSGeometryV1  = 0x80705864 // XFS_IOC_FSGEOMETRY_V1: _IOR('X', 100, struct xfs_fsop_geom_v1)
	ioctlXFSGrowFSData  = 0x4010586e // XFS_IOC_FSGROWFSDATA: _IOW('X', 110, struct xfs_growfs_data)
	ioctlExt4ResizeFS   = 0x40086610 // EXT4_IOC_RESIZE_FS: _IOW('f', 16, __u64)
	btrfsQuotaCtlEnable = 1
	btrfsLimitMaxRfer   = 1 // BTRFS_QGROUP_LIMIT_MAX_RFER
)

func ioctlPtr(f *os.File, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// freeze suspends writes to the filesystem open as root and makes it
// consistent on its device (FIFREEZE); thaw resumes them.
func freeze(root *os.File) error {
	var zero int32
	return ioctlPtr(root, ioctlFIFREEZE, unsafe.Pointer(&zero))
}

func thaw(root *os.File) error {
	var zero int32
	return ioctlPtr(root, ioctlFITHAW, unsafe.Pointer(&zero))
}

// fstrimRange is struct fstrim_range.
type fstrimRange struct {
	Start, Len, MinLen uint64
}

// trim discards the free space of [start, start+length) (FITRIM) and
// returns how many bytes the filesystem discarded.
func trim(root *os.File, start, length, minLen uint64) (uint64, error) {
	r := fstrimRange{Start: start, Len: length, MinLen: minLen}
	if err := ioctlPtr(root, ioctlFITRIM, unsafe.Pointer(&r)); err != nil {
		return 0, err
	}
	return r.Len, nil
}

// btrfsVolArgs is struct btrfs_ioctl_vol_args.
type btrfsVolArgs struct {
	Fd   int64
	Name [4088]byte
}

// btrfsResizeMax grows btrfs device 1 of the filesystem open as root to
// the whole device.
func btrfsResizeMax(root *os.File) error {
	var a btrfsVolArgs
	copy(a.Name[:], "1:max")
	return ioctlPtr(root, ioctlBtrfsResize, unsafe.Pointer(&a))
}

// btrfsForget makes btrfs forget the scanned device at path (or every
// device no mounted filesystem uses, for ""), so that its list of known
// devices does not keep a detached loop device's name.
func btrfsForget(path string) error {
	ctl, err := os.OpenFile("/dev/btrfs-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	var a btrfsVolArgs
	copy(a.Name[:], path)
	return ioctlPtr(ctl, ioctlBtrfsForgetDev, unsafe.Pointer(&a))
}

// btrfsFSInfo is the start of struct btrfs_ioctl_fs_info_args.
type btrfsFSInfo struct {
	MaxID, NumDevices uint64
	FSID              [16]byte
	NodeSize          uint32
	SectorSize        uint32
	CloneAlignment    uint32
	CsumType          uint16
	CsumSize          uint16
	Flags             uint64
	Generation        uint64
	MetadataUUID      [16]byte
	_                 [944]byte
}

// btrfsFSID returns the filesystem id btrfs names its sysfs directory by.
func btrfsFSID(root *os.File) (string, error) {
	var info btrfsFSInfo
	if err := ioctlPtr(root, ioctlBtrfsFSInfo, unsafe.Pointer(&info)); err != nil {
		return "", fmt.Errorf("btrfs fs info: %w", err)
	}
	u := info.FSID
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// btrfsQuotaCtlArgs is struct btrfs_ioctl_quota_ctl_args.
type btrfsQuotaCtlArgs struct {
	Cmd, Status uint64
}

// btrfsEnableQuota turns qgroup accounting on (a no-op when it is on).
func btrfsEnableQuota(root *os.File) error {
	a := btrfsQuotaCtlArgs{Cmd: btrfsQuotaCtlEnable}
	if err := ioctlPtr(root, ioctlBtrfsQuotaCtl, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("enable btrfs quotas: %w", err)
	}
	return nil
}

// btrfsQgroupLimitArgs is struct btrfs_ioctl_qgroup_limit_args.
type btrfsQgroupLimitArgs struct {
	QgroupID                                uint64
	Flags, MaxRfer, MaxExcl, RsvRfer, RsvEx uint64
}

// btrfsLimitReferenced sets the referenced-bytes limit of the qgroup of
// the subvolume open as root (qgroup id 0 means that one). max 0 lifts it.
func btrfsLimitReferenced(root *os.File, max uint64) error {
	if max == 0 {
		max = ^uint64(0) // what btrfs calls no limit
	}
	a := btrfsQgroupLimitArgs{Flags: btrfsLimitMaxRfer, MaxRfer: max}
	return ioctlPtr(root, ioctlBtrfsQgroupLimit, unsafe.Pointer(&a))
}

// xfsGeomV1 is the start of struct xfs_fsop_geom_v1.
type xfsGeomV1 struct {
	BlockSize, RTExtSize, AGBlocks, AGCount, LogBlocks, SectSize, InodeSize, IMaxPct uint32
	DataBlocks, RTBlocks, RTExtents, LogStart                                        uint64
	UUID                                                                             [16]byte
	SUnit, SWidth                                                                    uint32
	Version                                                                          int32
	Flags, LogSectSize, RTSectSize, DirBlockSize                                     uint32
	_                                                                                uint32
}

// xfsGrowData is struct xfs_growfs_data.
type xfsGrowData struct {
	NewBlocks uint64
	IMaxPct   uint32
	_         uint32
}

// xfsGrow grows the XFS filesystem open as root to size bytes.
func xfsGrow(root *os.File, size int64) error {
	var g xfsGeomV1
	if err := ioctlPtr(root, ioctlXFSGeometryV1, unsafe.Pointer(&g)); err != nil {
		return fmt.Errorf("xfs geometry: %w", err)
	}
	d := xfsGrowData{NewBlocks: uint64(size) / uint64(g.BlockSize), IMaxPct: g.IMaxPct}
	if d.NewBlocks <= g.DataBlocks {
		return nil
	}
	return ioctlPtr(root, ioctlXFSGrowFSData, unsafe.Pointer(&d))
}

// ext4Grow grows the ext4 filesystem open as root to size bytes.
func ext4Grow(root *os.File, size int64) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(root.Fd()), &st); err != nil {
		return err
	}
	blocks := uint64(size) / uint64(st.Bsize)
	return ioctlPtr(root, ioctlExt4ResizeFS, unsafe.Pointer(&blocks))
}
