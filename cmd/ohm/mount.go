package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"ohm/internal/ohmfs/mount"
	"ohm/internal/ohmfs/volume"
	"ohm/internal/units"
)

// addMountCommands adds `fs mount` and `fs umount` to cmd.
func addMountCommands(cmd *cobra.Command) {
	cmd.AddCommand(newMountCmd(), newUmountCmd())
}

func newMountCmd() *cobra.Command {
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
			"writing anything more, and the process exits non-zero. See docs/durability.md.\n\n" +
			"The mount is served by a child process; if it dies (killed, crashed), another\n" +
			"takes the same FUSE connection over within about a second, and the processes\n" +
			"using the mount only wait. See docs/fuse-restart.md.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := mountConfig(cmd, args)
			if err != nil {
				return err
			}
			if background, _ := cmd.Flags().GetBool("background"); background {
				return mount.Start(cmd.Context(), c)
			}
			var ready io.WriteCloser // an interface: a nil *os.File in it would not be nil
			if fd, _ := cmd.Flags().GetInt("ready-fd"); fd >= 0 {
				ready = os.NewFile(uintptr(fd), "ready")
			}
			return mount.Serve(cmd.Context(), c, ready)
		},
	}
	f := cmd.Flags()
	f.Bool("background", false, "return once the mount is ready, serving it from a detached process")
	f.String("cache-size", "256M", "memory for cached data blocks (e.g. 256M, 1G)")
	f.String("reserve", "1G", "host disk space the workspace leaves free: writes that would use it fail with ENOSPC")
	f.String("cache-dir", "", "S3 volumes: local directory for the metadata database (default "+volume.DefaultCacheRoot+"/<uuid>)")
	f.String("fsync", mount.FsyncLocal, "what fsync waits for: local (metadata database and object store) or replica (also the off-host metadata replica)")
	f.String("cpuprofile", "", "write a CPU profile of the mount process to this file")
	f.Int("ready-fd", -1, "file descriptor to report readiness on")
	f.Bool("debug", false, "log every FUSE request")
	f.Bool("no-writeback-cache", false, "send every write to the daemon (for measurements)")
	for _, name := range []string{"cpuprofile", "ready-fd", "debug", "no-writeback-cache"} {
		f.MarkHidden(name)
	}
	return cmd
}

// mountConfig is the mount.Config that cmd's flags and args (VOLUME
// MOUNTPOINT) ask for.
func mountConfig(cmd *cobra.Command, args []string) (mount.Config, error) {
	f := cmd.Flags()
	var c mount.Config
	if len(args) != 2 {
		return c, fmt.Errorf("want VOLUME MOUNTPOINT, got %d arguments", len(args))
	}
	cacheSize, _ := f.GetString("cache-size")
	n, err := units.ParseSize(cacheSize)
	if err != nil {
		return c, fmt.Errorf("--cache-size: %w", err)
	}
	c.CacheBytes = int64(n)
	reserve, _ := f.GetString("reserve")
	if c.Reserve, err = units.ParseSize(reserve); err != nil {
		return c, fmt.Errorf("--reserve: %w", err)
	}
	c.Volume = args[0]
	if c.Mountpoint, err = filepath.Abs(args[1]); err != nil {
		return c, err
	}
	c.CacheDir, _ = f.GetString("cache-dir")
	c.Fsync, _ = f.GetString("fsync")
	c.CPUProfile, _ = f.GetString("cpuprofile")
	c.Debug, _ = f.GetBool("debug")
	c.NoWritebackCache, _ = f.GetBool("no-writeback-cache")
	return c, nil
}

func newUmountCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Flush and unmount a mounted volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mount.Unmount(cmd.Context(), args[0], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the mount process to finish flushing")
	return cmd
}
