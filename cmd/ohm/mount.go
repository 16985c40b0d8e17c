package main

import "github.com/spf13/cobra"

// addMountCommands adds `fs mount` and `fs umount` to cmd.
func addMountCommands(cmd *cobra.Command) {}
