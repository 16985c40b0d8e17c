package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"ohm/internal/ohmfs/bench"
	"ohm/internal/units"
)

func init() { extraCommands = append(extraCommands, newBenchCmd) }

// newBenchCmd is `ohm bench DIR`: agent work on ext4, the ohmfs file
// layout and the block layout, all on DIR's disk.
func newBenchCmd() *cobra.Command {
	opts := bench.DefaultOptions()
	var seqSize, out, inputs, module, goroot, diskSize string
	var blocks []string
	var quick, noFile, noGuard bool
	var loopMaxIOKB int
	cmd := &cobra.Command{
		Use:   "bench DIR",
		Short: "Measure agent work on ext4, an ohmfs mount and a disk over ohmfs, all on DIR's disk",
		Long: "bench runs the same work in a plain directory under DIR (ext4, the baseline), in a fresh\n" +
			"ohmfs volume mounted with `ohm fs mount` (the file layout), and in a kernel filesystem on a\n" +
			"loop device over an image in a fresh ohmfs volume (the block layout, btrfs unless --block\n" +
			"says otherwise): a 2 GiB write + fsync and cold read, 20,000 small files, then an agent's\n" +
			"work: untar the Go tree, git clone a real repository, edit 300 files and commit, npm ci with\n" +
			"a warm cache, go build a real module with GOCACHE in the directory, 1,000 SQLite commits,\n" +
			"rm -rf. It prints each step's time over ext4's, the write amplification of the ohmfs\n" +
			"layouts, and the FUSE requests per SQLite commit.\n\n" +
			"The inputs are prepared once in --inputs (default DIR/inputs) and reused: the Go tree as a\n" +
			"tarball, a repository made of Kubernetes releases (Go module proxy), an npm cache filled from\n" +
			"the registry for the lockfile bench carries, and --module with its dependencies. Needs root.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := units.ParseSize(seqSize)
			if err != nil {
				return fmt.Errorf("--seq-size: %w", err)
			}
			opts.SeqSize = int64(n)
			if quick {
				opts.SeqSize, opts.SmallFiles, opts.SQLiteCommits, opts.EditFiles = 256<<20, 2000, 100, 30
			}
			cfg := bench.RunConfig{Dir: args[0], FileLayout: !noFile, SpaceGuard: !noGuard, LoopMaxIOKB: loopMaxIOKB}
			if diskSize != "" {
				n, err := units.ParseSize(diskSize)
				if err != nil {
					return fmt.Errorf("--disk-size: %w", err)
				}
				cfg.DiskSize = int64(n)
			}
			for _, b := range blocks {
				if b == "none" {
					continue
				}
				spec, err := bench.ParseBlockSpec(b)
				if err != nil {
					return fmt.Errorf("--block: %w", err)
				}
				cfg.Blocks = append(cfg.Blocks, spec)
			}
			if cfg.Ohm, err = os.Executable(); err != nil {
				return err
			}
			if inputs == "" {
				inputs = filepath.Join(args[0], "inputs")
			}
			opts.Log = os.Stderr
			log := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
			opts.Inputs, err = bench.PrepareInputs(cmd.Context(), inputs, bench.PrepareOptions{GoRoot: goroot, Module: module, Log: log})
			if err != nil {
				return fmt.Errorf("prepare the inputs: %w", err)
			}
			cfg.Options = opts
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Println()
			bench.WriteText(os.Stdout, rep.Columns, rep.Results)
			if out == "" {
				return nil
			}
			if err := bench.WriteMarkdownFile(out, rep); err != nil {
				return err
			}
			fmt.Printf("\nwrote %s\n", out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&seqSize, "seq-size", "2G", "size of the sequential write and read (e.g. 256M, 2G)")
	f.IntVar(&opts.SmallFiles, "small-files", opts.SmallFiles, "number of small files to create, stat and unlink")
	f.IntVar(&opts.SmallSize, "small-size", opts.SmallSize, "bytes per small file")
	f.IntVar(&opts.SQLiteCommits, "sqlite-commits", opts.SQLiteCommits, "SQLite transactions of one insert each; 0 skips the step")
	f.StringSliceVar(&blocks, "block", []string{"btrfs"}, "block-layout columns: btrfs, xfs or ext4, with extra mount options after a colon (btrfs:nodatasum); none for no block column")
	f.BoolVar(&noFile, "no-file-layout", false, "leave out the ohmfs file layout column")
	f.BoolVar(&noGuard, "no-space-guard", false, "run the btrfs disks without their space guard (btrfs quotas)")
	f.StringVar(&diskSize, "disk-size", "", "size of the block layouts' disks (default 1P)")
	f.IntVar(&loopMaxIOKB, "loop-max-io-kb", 0, "max_sectors_kb of the block layouts' loop devices (0 keeps internal/disk's)")
	f.StringVar(&inputs, "inputs", "", "directory of the prepared inputs (default DIR/inputs)")
	f.StringVar(&module, "module", "", "a Go module to build in the go build step (e.g. this repository); empty skips the step")
	f.StringVar(&goroot, "goroot", "/usr/local/go", "the Go toolchain whose tree is untarred and which builds the module")
	f.StringSliceVar(&opts.Only, "only", nil, "run only these parts: seq, small, untar, clone, npm, build, sqlite")
	f.BoolVar(&quick, "quick", false, "small sizes, for a quick check that everything runs")
	f.StringVar(&out, "out", "", "also write the report as Markdown to this file (e.g. docs/benchmarks.md), keeping what it holds after its hand-written marker")
	return cmd
}
