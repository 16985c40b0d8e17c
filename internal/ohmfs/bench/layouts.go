package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"ohm/internal/disk"
	"ohm/internal/mountinfo"
	"ohm/internal/units"
)

// BlockSpec is one block-layout column: a disk of Kind over an ohmfs
// image, with mount options added to the disk's defaults.
type BlockSpec struct {
	Kind    disk.Kind
	Options []string
}

// ParseBlockSpec parses "kind" or "kind:opt,opt" (e.g. "btrfs:nodatasum").
func ParseBlockSpec(s string) (BlockSpec, error) {
	k, opts, _ := strings.Cut(s, ":")
	kind, err := disk.ParseKind(k)
	if err != nil {
		return BlockSpec{}, err
	}
	spec := BlockSpec{Kind: kind}
	if opts != "" {
		spec.Options = strings.Split(opts, ",")
	}
	return spec, nil
}

// Name is the column's heading.
func (s BlockSpec) Name() string {
	if len(s.Options) == 0 {
		return string(s.Kind) + " on ohmfs"
	}
	return string(s.Kind) + " " + strings.Join(s.Options, ",") + " on ohmfs"
}

// RunConfig says what `ohm bench` compares.
type RunConfig struct {
	// Dir is where everything is made: one disk, so that the ratios
	// compare filesystems, not disks.
	Dir string
	// Ohm is the ohm binary that formats and mounts volumes.
	Ohm string
	// FileLayout adds the ohmfs FUSE mount column.
	FileLayout bool
	// Blocks are the block-layout columns.
	Blocks []BlockSpec
	// DiskSize is the block layouts' disk size (default 1 PiB).
	DiskSize int64
	// SpaceGuard turns the btrfs disks' space guard on, as a computer has
	// it.
	SpaceGuard bool
	// LoopMaxIOKB, if not zero, is the block layouts' loop devices'
	// max_sectors_kb (disk.Config.MaxIOKB); zero keeps what internal/disk
	// sets.
	LoopMaxIOKB int
	Options     Options
}

// Run sets up the columns under cfg.Dir, runs the comparison and returns
// the report. Everything it made is removed, and every mount unmounted,
// before it returns.
func Run(ctx context.Context, cfg RunConfig) (rep Report, err error) {
	if os.Geteuid() != 0 {
		return rep, errors.New("bench needs root: it mounts volumes and disks and drops the kernel's caches")
	}
	if cfg.DiskSize == 0 {
		cfg.DiskSize = 1 << 50
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return rep, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rep, fmt.Errorf("bench dir: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err == nil && sfs.Type != unix.EXT4_SUPER_MAGIC {
		logf(cfg.Options, "bench: warning: %s is not on ext4 (statfs type %#x); the baseline is whatever it is on", dir, sfs.Type)
	}
	// A root-only directory: the disks' images and mountpoints must be
	// under one (internal/disk checks).
	work, err := os.MkdirTemp(dir, "run-")
	if err != nil {
		return rep, fmt.Errorf("bench dir: %w", err)
	}
	var undo []func() error
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil && err == nil {
				err = uerr
			}
		}
		os.RemoveAll(work)
	}()
	ohm := func(args ...string) error {
		c := exec.CommandContext(ctx, cfg.Ohm, args...)
		if b, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("ohm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
		}
		return nil
	}
	rep.Machine = Describe(dir)
	ext4 := filepath.Join(work, "ext4")
	if err := os.Mkdir(ext4, 0o755); err != nil {
		return rep, err
	}
	fss := []FS{{Name: "ext4", Dir: ext4, Cold: func(context.Context) error { return DropCaches() }}}
	rep.Columns = []Column{{Name: "ext4", Desc: "a directory on the disk itself (the baseline; seconds)"}}

	// volume formats and mounts a fresh volume named name.
	volume := func(name string) (vol, mnt string, err error) {
		vol, mnt = filepath.Join(work, "vol-"+name), filepath.Join(work, "ohmfs-"+name)
		if err := ohm("fs", "format", vol); err != nil {
			return "", "", err
		}
		if err := ohm("fs", "mount", "--background", vol, mnt); err != nil {
			return "", "", err
		}
		undo = append(undo, func() error {
			if !mountinfo.IsMountpoint(mnt) {
				return nil
			}
			return ohm("fs", "umount", mnt)
		})
		return vol, mnt, nil
	}
	remount := func(vol, mnt string) error {
		if err := ohm("fs", "umount", mnt); err != nil {
			return err
		}
		if err := DropCaches(); err != nil {
			return err
		}
		return ohm("fs", "mount", "--background", vol, mnt)
	}

	if cfg.FileLayout {
		vol, mnt, err := volume("file")
		if err != nil {
			return rep, err
		}
		fss = append(fss, FS{Name: "ohmfs", Dir: mnt, Stored: StoreCounter(vol),
			Cold:    func(context.Context) error { return remount(vol, mnt) },
			Targets: func() (uint32, uint64) { return fuseConn(mnt), 0 }})
		rep.Columns = append(rep.Columns, Column{Name: "ohmfs", Desc: "the file layout: a fresh ohmfs volume FUSE-mounted with `ohm fs mount`"})
	}
	for i, spec := range cfg.Blocks {
		name := fmt.Sprintf("block%d", i)
		vol, mnt, err := volume(name)
		if err != nil {
			return rep, err
		}
		dcfg := disk.Config{
			Kind:       spec.Kind,
			ImageDir:   mnt,
			Image:      "workspace.img",
			Mountpoint: filepath.Join(work, "disks", name),
			DevDir:     filepath.Join(work, "dev", name),
			MaxIOKB:    cfg.LoopMaxIOKB,
		}
		for _, d := range []string{"disks", "dev"} {
			if err := os.MkdirAll(filepath.Join(work, d), 0o700); err != nil {
				return rep, err
			}
		}
		if len(spec.Options) > 0 {
			dcfg.MountOptions = append(disk.DefaultMountOptions(spec.Kind), spec.Options...)
		}
		guard := func(d *disk.Disk) error {
			if !cfg.SpaceGuard || spec.Kind != disk.Btrfs {
				return nil
			}
			return d.GuardSpace(disk.SpaceConfig{Avail: disk.HostAvail(vol, 1<<30)})
		}
		b := &blockColumn{}
		start := time.Now()
		b.d, err = disk.Create(ctx, dcfg, cfg.DiskSize)
		if err != nil {
			return rep, err
		}
		made := time.Since(start)
		usage, _ := b.d.Usage()
		undo = append(undo, func() error { return b.d.Close(context.Background()) })
		if err := guard(b.d); err != nil {
			return rep, err
		}
		fss = append(fss, FS{Name: spec.Name(), Dir: dcfg.Mountpoint, Stored: StoreCounter(vol),
			Cold: func(ctx context.Context) error {
				if err := b.d.Close(ctx); err != nil {
					return err
				}
				if err := remount(vol, mnt); err != nil {
					return err
				}
				d, err := disk.Open(ctx, dcfg)
				if err != nil {
					return err
				}
				b.d = d
				return guard(d)
			},
			Targets: func() (uint32, uint64) { return fuseConn(mnt), b.d.DeviceNumber() }})
		desc := fmt.Sprintf("the block layout: %s on a loop device (direct I/O, 4 KiB sectors) over a %s sparse image in a fresh ohmfs volume, mounted %s; made (image, loop device, mkfs, mount) in %.2f s, df then said %s used",
			spec.Kind, units.FormatSize(uint64(cfg.DiskSize)), strings.Join(orDefault(dcfg.MountOptions, disk.DefaultMountOptions(spec.Kind)), ","),
			made.Seconds(), units.FormatSize(usage.Used))
		if cfg.SpaceGuard && spec.Kind == disk.Btrfs {
			desc += ", space guard on (btrfs quotas)"
		}
		if cfg.LoopMaxIOKB > 0 {
			desc += fmt.Sprintf(", loop device max_sectors_kb %d", cfg.LoopMaxIOKB)
		}
		rep.Columns = append(rep.Columns, Column{Name: spec.Name(), Desc: desc})
	}

	for _, fs := range fss {
		logf(cfg.Options, "bench: %s in %s", fs.Name, fs.Dir)
	}
	rep.Options = cfg.Options
	rep.Results, err = Compare(ctx, fss, cfg.Options)
	rep.Machine.LoadAfter = LoadAvg()
	if err != nil {
		return rep, fmt.Errorf("bench: %w", err)
	}
	return rep, nil
}

// blockColumn holds a block column's disk, which the cold read replaces.
type blockColumn struct{ d *disk.Disk }

func orDefault(a, b []string) []string {
	if a != nil {
		return a
	}
	return b
}

// fuseConn is the FUSE connection of the mount at mnt: the minor of its
// device number.
func fuseConn(mnt string) uint32 {
	m, ok, err := mountinfo.At(mnt)
	if err != nil || !ok {
		return 0
	}
	return m.Minor
}
