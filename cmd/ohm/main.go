// Command ohm gives AI agents Linux computers with a durable, elastic
// workspace filesystem. It only parses flags and calls into internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitCodeError makes ohm exit with code without printing anything more, as
// `ohm computer run` does with the command's exit code.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "ohm",
		Short:         "Linux computers for AI agents, with a durable, elastic workspace",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newFSCmd())
	for _, add := range extraCommands {
		root.AddCommand(add())
	}
	return root
}

// extraCommands are the top-level commands registered by the other files of
// this package (computer, template, serve, ...), so that each file owns its
// commands.
var extraCommands []func() *cobra.Command

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	var ec exitCodeError
	if errors.As(err, &ec) {
		os.Exit(ec.code)
	}
	fmt.Fprintf(os.Stderr, "ohm: %v\n", err)
	os.Exit(1)
}
