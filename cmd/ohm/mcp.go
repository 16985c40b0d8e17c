package main

import (
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"ohm/client"
	"ohm/internal/api/mcpserver"
	"ohm/internal/datadir"
)

func init() { extraCommands = append(extraCommands, newMCPCmd) }

// newMCPCmd is `ohm mcp`: a Model Context Protocol server on stdio whose
// tools drive computers through the local daemon (started if needed).
func newMCPCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve computers to AI agents as Model Context Protocol tools on stdio",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			c, err := client.Connect(cmd.Context(), dir, exe)
			if err != nil {
				return err
			}
			return mcpserver.New(c, "dev").Run(cmd.Context(), &mcp.StdioTransport{})
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", datadir.Default(), "data directory of the daemon to use (or $"+datadir.EnvVar+")")
	return cmd
}
