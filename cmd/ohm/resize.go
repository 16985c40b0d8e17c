package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newComputerResizeCmd(connect connectFunc) *cobra.Command {
	var sizeMB int
	cmd := &cobra.Command{
		Use:   "resize NAME --disk-size-mb N",
		Short: "Grow a computer's root disk (online when it runs; a root disk never shrinks)",
		Long: `Grow the root disk of computer NAME to N MB. A running computer grows at
once: df -h / inside shows the new size when the command returns. A stopped
one grows at its next start. A size smaller than the current one is refused,
and so is growth the host could not give with every root disk filled (as at
create).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("disk-size-mb") {
				return errors.New("--disk-size-mb is required: the root disk's new size in MB")
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.Resize(cmd.Context(), args[0], sizeMB); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: root disk %s\n", args[0], formatMB(sizeMB))
			return nil
		},
	}
	cmd.Flags().IntVar(&sizeMB, "disk-size-mb", 0, "the root disk's new size in MB")
	return cmd
}
