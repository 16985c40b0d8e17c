package disk

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"ohm/internal/hostbin"
)

// Kind names a kernel filesystem a disk can carry.
type Kind string

// The filesystems a disk can carry. Btrfs is the workspace's (1 PiB
// sparse: df is exact, mkfs takes under a second, it grows online and
// snapshots); ext4 suits a bounded disk such as the root disk; XFS is
// here for measurements (docs/block-layout.md says why it is not the
// workspace's).
const (
	Btrfs Kind = "btrfs"
	XFS   Kind = "xfs"
	Ext4  Kind = "ext4"
)

// ParseKind parses a filesystem name.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case Btrfs, XFS, Ext4:
		return k, nil
	}
	return "", fmt.Errorf("%q is not a disk filesystem (btrfs, xfs or ext4)", s)
}

// MinSize is the smallest btrfs or XFS disk Create makes: below it
// mkfs.btrfs and mkfs.xfs refuse.
const MinSize = 320 << 20

// MinExt4Size is the smallest ext4 disk Create makes (a computer's root
// disk may be as small as 16 MiB).
const MinExt4Size = 16 << 20

// minSize is the smallest disk of kind k.
func minSize(k Kind) int64 {
	if k == Ext4 {
		return MinExt4Size
	}
	return MinSize
}

// DefaultMountOptions are the mount options a disk of kind gets when
// Config.MountOptions is nil, as measured for docs/block-layout.md:
//
//   - noatime: reads never become metadata writes (and flushes).
//   - btrfs ssd: a loop device over a FUSE file may be reported as
//     rotational on other kernels, and btrfs would then lay out data for a
//     spinning disk.
//   - btrfs discard=async: freed extents are discarded in the background,
//     in batches, and reach ohmfs as punched holes in the image (space
//     given back). Synchronous discards would sit in every commit.
//   - btrfs space_cache=v2: the free space tree, the default, kept explicit.
//   - btrfs commit=5 and ext4's default commit interval: without fsync,
//     metadata is written within 5 s, as on a local ext4.
func DefaultMountOptions(k Kind) []string {
	switch k {
	case Btrfs:
		return []string{"noatime", "ssd", "discard=async", "space_cache=v2", "commit=5"}
	case XFS:
		return []string{"noatime", "logbsize=256k"}
	case Ext4:
		return []string{"noatime"}
	}
	return nil
}

// mkfsArgs are the arguments of kind's mkfs for a device: never a discard
// pass (over FUSE a 1 PiB discard takes minutes), btrfs's metadata single
// (not DUP: ohmfs keeps the copies), XFS without reflink and the free
// inode btree (their per-allocation-group reservations show as terabytes
// used in df on a 1 PiB disk), ext4 with lazy inode tables.
func mkfsArgs(k Kind, label, device string) []string {
	var args []string
	switch k {
	case Btrfs:
		args = []string{"-q", "--nodiscard", "--metadata", "single", "--data", "single"}
		if label != "" {
			args = append(args, "--label", label)
		}
	case XFS:
		args = []string{"-q", "-K", "-m", "reflink=0,finobt=0"}
		if label != "" {
			args = append(args, "-L", label)
		}
	case Ext4:
		args = []string{"-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"}
		if label != "" {
			args = append(args, "-L", label)
		}
	}
	return append(args, device)
}

// tool finds a system program by name, by absolute path in
// hostbin.TrustedDirs and only if root alone can change it and its
// directory (hostbin.Path): mkfs runs as root, and a PATH entry or a
// program someone else could write must not choose what runs.
func tool(name string) (string, error) {
	p, err := hostbin.Path(name)
	if err == nil {
		return p, nil
	}
	pkg := map[string]string{"mkfs.btrfs": "btrfs-progs", "mkfs.xfs": "xfsprogs", "mkfs.ext4": "e2fsprogs"}[name]
	if pkg != "" {
		return "", fmt.Errorf("%s is not installed (Debian package %s): %w", name, pkg, err)
	}
	return "", fmt.Errorf("%s is not installed: %w", name, err)
}

// ErrNotInstalled is returned (wrapped) when the tools for a Kind are
// missing.
var ErrNotInstalled = errors.New("filesystem tools not installed")

// Available reports whether kind's mkfs is installed.
func Available(k Kind) error {
	if _, err := tool("mkfs." + string(k)); err != nil {
		return fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	return nil
}

// mkfs makes a kind filesystem on device.
func mkfs(ctx context.Context, k Kind, label, device string) error {
	bin, err := tool("mkfs." + string(k))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	cmd := exec.CommandContext(ctx, bin, mkfsArgs(k, label, device)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.%s %s: %v: %s", k, device, err, strings.TrimSpace(string(out)))
	}
	return nil
}
