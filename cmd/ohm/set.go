package main

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ohm/client"
	"ohm/internal/computer"
)

// idleTimeoutHelp explains --idle-timeout, on create and set.
const idleTimeoutHelp = "stop the computer after this long (e.g. 30m, 2h) without exec, shell, file or port traffic " +
	"(a running command counts, however quiet); the next run or request starts it again; 0: never"

// idleDefaultHelp says create's default and why.
var idleDefaultHelp = fmt.Sprintf(" (default %s: longer than an agent's pauses between steps, "+
	"short enough that a forgotten computer frees its memory and CPU within the hour)",
	computer.FormatDuration(computer.DefaultIdleTimeout))

// idleTimeoutFlag adds --idle-timeout to fs, with usage help; the
// returned function gives its value in seconds for the API, nil when it
// was not given (the server's default, or no change).
func idleTimeoutFlag(fs *pflag.FlagSet, help string) func() *float64 {
	var d time.Duration
	fs.DurationVar(&d, "idle-timeout", 0, help)
	return func() *float64 {
		if !fs.Changed("idle-timeout") {
			return nil
		}
		return client.Seconds(d)
	}
}

func newComputerSetCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	var req client.SetRequest
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Change settings of a computer, running or stopped",
		Long: `Change settings of a computer, running or stopped. Only the settings
given change; bad input changes nothing.

  ohm computer set NAME --idle-timeout 2h    stop after 2 hours unused
  ohm computer set NAME --idle-timeout 0     never stop for idleness`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reflect.ValueOf(req).IsZero() {
				return errors.New("nothing to set: give --idle-timeout (see ohm computer set --help)")
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			comp, err := c.Set(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), comp)
			}
			return writeIdle(cmd.OutOrStdout(), comp)
		},
	}
	idle := idleTimeoutFlag(cmd.Flags(), idleTimeoutHelp)
	cmd.PreRun = func(*cobra.Command, []string) { req.IdleTimeoutSeconds = idle() }
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the computer as JSON")
	return cmd
}

// writeIdle prints comp's idle timeout line, as info shows it.
func writeIdle(w io.Writer, comp *client.Computer) error {
	_, err := fmt.Fprintf(w, "idle timeout: %s\n", idleLine(comp))
	return err
}

// idleLine says comp's idle timeout and where its countdown is.
func idleLine(comp *client.Computer) string {
	if comp.IdleTimeoutSeconds <= 0 {
		return "off (never stops for idleness)"
	}
	s := computer.FormatDuration(time.Duration(comp.IdleTimeoutSeconds * float64(time.Second)))
	switch {
	case !comp.IdleStopAt.IsZero():
		s += fmt.Sprintf(" (stops at %s unless used)", comp.IdleStopAt.Local().Format(time.RFC3339))
	case comp.ActiveSessions > 0:
		s += fmt.Sprintf(" (busy: %d open sessions)", comp.ActiveSessions)
	}
	return s
}
