package main

import (
	"github.com/spf13/cobra"

	"ohm/internal/agent"
)

func init() {
	extraCommands = append(extraCommands, newAgentCmd)
}

// newAgentCmd is `ohm agent`, the init of a computer. It is hidden: the
// sandbox starts it inside the computer; nobody runs it by hand.
func newAgentCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:    "agent",
		Short:  "Run as the init of a computer (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return agent.Run(cmd.Context(), socket)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "/.ohm/run/agent.sock", "Unix socket to serve requests on")
	return cmd
}
