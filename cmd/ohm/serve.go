package main

import (
	"log"

	"github.com/spf13/cobra"

	"ohm/internal/api"
	"ohm/internal/datadir"
)

func init() { extraCommands = append(extraCommands, newServeCmd) }

func newServeCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the ohm daemon (the CLI starts it by itself when needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			logger := log.New(cmd.ErrOrStderr(), "", log.LstdFlags)
			return api.Serve(cmd.Context(), dir, logger.Printf)
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", datadir.Default(), "data directory (or $"+datadir.EnvVar+")")
	return cmd
}
