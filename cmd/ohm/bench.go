package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ohm/internal/ohmfs/bench"
	"ohm/internal/units"
)

func init() { extraCommands = append(extraCommands, newBenchCmd) }

// newBenchCmd is `ohm bench DIR`: ohmfs against ext4 on DIR's disk.
func newBenchCmd() *cobra.Command {
	opts := bench.DefaultOptions()
	var seqSize, out string
	var noBuild bool
	cmd := &cobra.Command{
		Use:   "bench DIR",
		Short: "Measure a fresh ohmfs volume against ext4, both on DIR's disk",
		Long: "bench formats and mounts a fresh ohmfs volume under DIR and runs the same work there\n" +
			"and in a plain directory under DIR: a sequential write and cold read in 1 MiB blocks,\n" +
			"create/stat/unlink of small files, and a real tree (copy the Go toolchain in, build the\n" +
			"standard library, git add and commit it, delete it). It prints the ratios against the\n" +
			"targets of DESIGN.md section 6. Needs root (mounts, drop_caches).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := units.ParseSize(seqSize)
			if err != nil {
				return fmt.Errorf("--seq-size: %w", err)
			}
			opts.SeqSize = int64(n)
			if noBuild {
				opts.BuildStd = false
			}
			if opts.TreeSrc != "" && opts.BuildStd {
				if _, err := os.Stat(filepath.Join(opts.TreeSrc, "bin", "go")); err != nil {
					return fmt.Errorf("--tree %s is not a Go root (no bin/go); pass --no-build to only copy it", opts.TreeSrc)
				}
			}
			return runBench(cmd.Context(), args[0], out, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&seqSize, "seq-size", "4G", "size of the sequential write and read (e.g. 256M, 4G)")
	f.IntVar(&opts.SmallFiles, "small-files", opts.SmallFiles, "number of small files to create, stat and unlink")
	f.IntVar(&opts.SmallSize, "small-size", opts.SmallSize, "bytes per small file")
	f.StringVar(&opts.TreeSrc, "tree", opts.TreeSrc, "source tree to copy in; empty skips the tree workload")
	f.BoolVar(&noBuild, "no-build", false, "skip `go build std` in the copied tree")
	f.StringVar(&out, "out", "", "also write the report as Markdown to this file (e.g. docs/benchmarks.md)")
	return cmd
}

func runBench(ctx context.Context, dir, out string, opts bench.Options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("bench needs root: it mounts a volume and drops the kernel's caches")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench dir: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err == nil && sfs.Type != unix.EXT4_SUPER_MAGIC {
		fmt.Fprintf(os.Stderr, "bench: warning: %s is not on ext4 (statfs type %#x); the baseline is whatever it is on\n", dir, sfs.Type)
	}
	work, err := os.MkdirTemp(dir, "ohm-bench-")
	if err != nil {
		return fmt.Errorf("bench dir: %w", err)
	}
	defer os.RemoveAll(work)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ohm := func(args ...string) error {
		c := exec.CommandContext(ctx, self, args...)
		if b, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("ohm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
		}
		return nil
	}
	ext4Dir := filepath.Join(work, "ext4")
	vol := filepath.Join(work, "volume")
	mnt := filepath.Join(work, "mnt")
	for _, d := range []string{ext4Dir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := ohm("fs", "format", vol); err != nil {
		return err
	}
	if err := ohm("fs", "mount", "--background", vol, mnt); err != nil {
		return err
	}
	mounted := true
	defer func() {
		if mounted {
			if uerr := ohm("fs", "umount", mnt); uerr != nil && err == nil {
				err = uerr
			}
		}
		ohm("fs", "destroy", vol)
	}()

	log := os.Stderr
	opts.Log = log
	fmt.Fprintf(log, "bench: ext4 in %s, ohmfs volume %s mounted on %s\n", ext4Dir, vol, mnt)
	ext4 := bench.FS{Name: "ext4", Dir: ext4Dir, Cold: func(context.Context) error { return bench.DropCaches() }}
	ohmfs := bench.FS{Name: "ohmfs", Dir: mnt, Cold: func(context.Context) error {
		// Cold for ohmfs means its own block cache too: remount.
		mounted = false
		if err := ohm("fs", "umount", mnt); err != nil {
			return err
		}
		if err := bench.DropCaches(); err != nil {
			return err
		}
		if err := ohm("fs", "mount", "--background", vol, mnt); err != nil {
			return err
		}
		mounted = true
		return nil
	}}
	m := bench.Describe(dir)
	results, err := bench.Compare(ctx, ext4, ohmfs, opts)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	fmt.Println()
	bench.WriteText(os.Stdout, results)
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := bench.WriteMarkdown(f, m, opts, results); err != nil {
			f.Close()
			return fmt.Errorf("write report: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Printf("\nwrote %s\n", out)
	}
	return nil
}
