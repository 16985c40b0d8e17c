package main

import "github.com/spf13/cobra"

func newFSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fs",
		Short: "Manage ohmfs workspace volumes",
	}
	addMountCommands(cmd)
	return cmd
}
