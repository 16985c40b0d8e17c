package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ohm/client"
	"ohm/internal/units"
)

// notSaved is what every checkpoint command says about what a checkpoint
// holds (docs/checkpoints.md).
const notSaved = "A checkpoint holds the computer's disks: its workspace as metadata only (no data is copied), and its root disk (a sparse copy while it is a local image). Memory and processes are not checkpointed: a restored or forked computer boots fresh on the saved disks."

// checkpointCmds are the commands of checkpoints, restore and fork.
func checkpointCmds(connect connectFunc) []*cobra.Command {
	return []*cobra.Command{
		newCheckpointCmd(connect),
		newCheckpointsCmd(connect),
		newRestoreCmd(connect),
		newForkCmd(connect),
	}
}

func newCheckpointCmd(connect connectFunc) *cobra.Command {
	var label string
	cmd := &cobra.Command{
		Use:   "checkpoint NAME",
		Short: "Checkpoint a computer's disks and print the checkpoint's id",
		Long: "Checkpoint the disks of computer NAME, running or stopped, and print the checkpoint's id. " +
			"A running computer keeps running: its filesystems are frozen only for the moment their images are cloned.\n\n" + notSaved,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ck, err := c.Checkpoint(cmd.Context(), args[0], label)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), ck.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "a note saying what the checkpoint is")
	cmd.AddCommand(&cobra.Command{
		Use:   "delete NAME CHECKPOINT",
		Short: "Delete a checkpoint of a computer",
		Long:  "Delete checkpoint CHECKPOINT of computer NAME. Its blocks are freed once nothing else (the disks, other checkpoints) uses them.",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			return c.DeleteCheckpoint(cmd.Context(), args[0], args[1])
		},
	})
	return cmd
}

func newCheckpointsCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "checkpoints NAME",
		Short: "List a computer's checkpoints",
		Long:  "List the checkpoints of computer NAME, oldest first: id, label, time and the bytes each one alone holds (what deleting it gives back).\n\n" + notSaved,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			cs, err := c.Checkpoints(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				if cs == nil {
					cs = []client.Checkpoint{}
				}
				return printJSON(cmd.OutOrStdout(), cs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tLABEL\tCREATED\tOWN BYTES")
			for _, ck := range cs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ck.ID, ck.Label, ck.CreatedAt.Local().Format("2006-01-02 15:04:05"), units.FormatSize(ck.Bytes))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newRestoreCmd(connect connectFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "restore NAME CHECKPOINT",
		Short: "Put a computer's disks back to a checkpoint",
		Long: "Put the disks of computer NAME back to checkpoint CHECKPOINT. A running computer is stopped first and started again " +
			"after, for you: its processes restart. A stopped computer stays stopped. Later checkpoints stay.\n\n" + notSaved,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			_, err = c.Restore(cmd.Context(), args[0], args[1])
			return err
		},
	}
}

func newForkCmd(connect connectFunc) *cobra.Command {
	var checkpoint string
	cmd := &cobra.Command{
		Use:   "fork NAME [NEW]",
		Short: "Make and start a copy of a computer and print its name",
		Long: "Make computer NEW (a free friendly name if not given) with the disks of computer NAME, at CHECKPOINT or as they are now, " +
			"start it and print its name. The two share their blocks: nothing is copied, and writes in one never show in the other. " +
			"The fork has NAME's template and limits, and no checkpoints.\n\n" + notSaved,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			req := client.ForkRequest{Checkpoint: checkpoint}
			if len(args) == 2 {
				req.Name = args[1]
			}
			comp, err := c.Fork(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), comp.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&checkpoint, "checkpoint", "", "fork from this checkpoint (default: the disks as they are now)")
	return cmd
}
