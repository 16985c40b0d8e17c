package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ohm/internal/ohmfs/volume"
	"ohm/internal/units"
)

func newFSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fs",
		Short: "Manage ohmfs workspace volumes",
	}
	cmd.AddCommand(newFSFormatCmd(), newFSStatusCmd(), newFSFsckCmd(), newFSGCCmd(), newFSDestroyCmd())
	addMountCommands(cmd)
	return cmd
}

func newFSFormatCmd() *cobra.Command {
	var capacity string
	cmd := &cobra.Command{
		Use:   "format VOLUME",
		Short: "Create a new, empty volume (a directory path, or file://path)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := units.ParseSize(capacity)
			if err != nil {
				return fmt.Errorf("--capacity: %w", err)
			}
			if c == 0 {
				return fmt.Errorf("--capacity: must be more than 0")
			}
			if err := volume.Format(cmd.Context(), args[0], volume.FormatOptions{Capacity: c}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "formatted %s (capacity %s)\n", args[0], units.FormatSize(c))
			return nil
		},
	}
	cmd.Flags().StringVar(&capacity, "capacity", units.FormatSize(volume.DefaultCapacity), "size the volume reports to df (e.g. 500G, 1T, 1P, or bytes)")
	return cmd
}

func newFSStatusCmd() *cobra.Command {
	var asJSON bool
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "status VOLUME",
		Short: "Show a volume's usage and who has it mounted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := volume.InspectWith(cmd.Context(), args[0], volume.OpenOptions{CacheDir: cacheDir})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return fsJSON(out, st)
			}
			state := "not mounted"
			if st.Mounted {
				state = "in use"
				if h := st.Holder; h != nil {
					switch {
					case h.Mountpoint != "":
						state = fmt.Sprintf("mounted at %s by pid %d", h.Mountpoint, h.PID)
					case h.Command != "":
						state = fmt.Sprintf("in use by pid %d (%s)", h.PID, h.Command)
					default:
						state = fmt.Sprintf("in use by pid %d", h.PID)
					}
					if !h.Since.IsZero() {
						state += ", since " + h.Since.Local().Format(time.DateTime)
					}
				}
			}
			blocks := fmt.Sprintf("%d (%s stored)", st.Blocks, units.FormatSize(st.StoredBytes))
			if st.FreedBlocks > 0 {
				blocks += fmt.Sprintf(", %d freed waiting for gc", st.FreedBlocks)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "volume:\t%s\n", st.URL)
			fmt.Fprintf(tw, "uuid:\t%s\n", st.UUID)
			fmt.Fprintf(tw, "state:\t%s\n", state)
			fmt.Fprintf(tw, "capacity:\t%s\n", units.FormatSize(st.Capacity))
			fmt.Fprintf(tw, "used:\t%s\n", units.FormatSize(st.UsedBytes))
			fmt.Fprintf(tw, "files:\t%d\n", st.Files)
			fmt.Fprintf(tw, "blocks:\t%s\n", blocks)
			if io := st.IO; io.Written > 0 {
				fmt.Fprintf(tw, "io:\t%s written, %s uploaded (%.2fx)\n", units.FormatSize(io.Written), units.FormatSize(io.Uploaded), float64(io.Uploaded)/float64(io.Written))
			}
			if r := st.Replica; r != nil {
				rs := fmt.Sprintf("%s, position %d, lag %.1fs", r.Target, r.Position, r.LagSeconds)
				if r.LastError != "" {
					rs += ", last error: " + r.LastError
				}
				fmt.Fprintf(tw, "replica:\t%s\n", rs)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "S3 volumes: the local metadata cache of the mount (default /var/lib/ohm/cache/<uuid>)")
	return cmd
}

// fsckJSON is what `ohm fs fsck --json` prints.
type fsckJSON struct {
	Clean              bool          `json:"clean"`
	Problems           []problemJSON `json:"problems"`
	ReferencedBlocks   uint64        `json:"referenced_blocks"`
	UnreferencedBlocks uint64        `json:"unreferenced_blocks"`
}

type problemJSON struct {
	Ino    uint64 `json:"ino,omitempty"`
	Detail string `json:"detail"`
}

func newFSFsckCmd() *cobra.Command {
	var asJSON, deep bool
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "fsck VOLUME",
		Short: "Check an unmounted volume; exits 1 if it finds problems",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := volume.FsckVolume(cmd.Context(), args[0], volume.FsckOptions{Deep: deep, CacheDir: cacheDir})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				j := fsckJSON{
					Clean:              len(r.Problems) == 0,
					Problems:           []problemJSON{},
					ReferencedBlocks:   r.ReferencedBlocks,
					UnreferencedBlocks: r.UnreferencedBlocks,
				}
				for _, p := range r.Problems {
					j.Problems = append(j.Problems, problemJSON{Ino: uint64(p.Ino), Detail: p.Detail})
				}
				if err := fsJSON(out, j); err != nil {
					return err
				}
				if !j.Clean {
					return exitCodeError{1}
				}
				return nil
			}
			if len(r.Problems) == 0 {
				fmt.Fprintln(out, "clean")
				if r.UnreferencedBlocks > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "note: %d unreferenced blocks (not a problem; ohm fs gc frees them)\n", r.UnreferencedBlocks)
				}
				return nil
			}
			for _, p := range r.Problems {
				if p.Ino != 0 {
					fmt.Fprintf(out, "inode %d: %s\n", p.Ino, p.Detail)
				} else {
					fmt.Fprintln(out, p.Detail)
				}
			}
			return fmt.Errorf("fsck %s: %d problem(s) found", args[0], len(r.Problems))
		},
	}
	cmd.Flags().BoolVar(&deep, "deep", false, "also read every block and verify its checksum")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "S3 volumes: the local metadata cache (default /var/lib/ohm/cache/<uuid>)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newFSGCCmd() *cobra.Command {
	var asJSON bool
	var grace time.Duration
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "gc VOLUME",
		Short: "Delete blocks nothing references (of an unmounted volume)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace < 0 {
				return fmt.Errorf("--grace: must not be negative")
			}
			res, err := volume.GCWith(cmd.Context(), args[0], volume.GCOptions{Grace: grace, CacheDir: cacheDir})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return fsJSON(out, res)
			}
			fmt.Fprintf(out, "deleted %d blocks (%s)", res.DeletedBlocks, units.FormatSize(res.DeletedBytes))
			if res.KeptYoung > 0 {
				fmt.Fprintf(out, "; kept %d unreferenced blocks younger than %s", res.KeptYoung, grace)
			}
			if res.PurgedOrphans > 0 {
				fmt.Fprintf(out, "; purged %d orphaned files", res.PurgedOrphans)
			}
			if res.TempFiles > 0 {
				fmt.Fprintf(out, "; removed %d temp files", res.TempFiles)
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 10*time.Minute, "keep unreferenced blocks younger than this")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "S3 volumes: the local metadata cache (default /var/lib/ohm/cache/<uuid>)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newFSDestroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy VOLUME",
		Short: "Remove an unmounted volume and all its data",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := volume.Destroy(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "destroyed %s\n", args[0])
			return nil
		},
	}
}

func fsJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
