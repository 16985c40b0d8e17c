package main

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
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

// addAllowFlags adds the egress allow-list flags of create.
func addAllowFlags(f *pflag.FlagSet, hosts, cidrs *[]string) {
	f.StringArrayVar(hosts, "allow-host", nil, "limit the network to this host name: exact (pypi.org) or *.example.org for the names under it (repeatable; implies --network)")
	f.StringArrayVar(cidrs, "allow-cidr", nil, "limit the network to this address range, e.g. 198.51.100.0/24 (repeatable; implies --network)")
}

// addSetAllowFlags adds the egress allow-list flags of set.
func addSetAllowFlags(f *pflag.FlagSet, hosts, cidrs *[]string) {
	f.StringArrayVar(hosts, "allow-host", nil, "replace the allowed host names: exact (pypi.org) or *.example.org (repeatable; '' clears the list)")
	f.StringArrayVar(cidrs, "allow-cidr", nil, "replace the allowed address ranges, e.g. 198.51.100.0/24 (repeatable; '' clears the list)")
}

func newComputerSetCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	// Egress: each list given replaces the computer's.
	var hosts, cidrs []string
	var idle func() *float64
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Change settings of a computer, running or stopped",
		Long: `Change settings of a computer, running or stopped. Only the settings
given change; bad input changes nothing.

  ohm computer set NAME --idle-timeout 2h    stop after 2 hours unused
  ohm computer set NAME --idle-timeout 0     never stop for idleness
  ohm computer set NAME --allow-host pypi.org --allow-host '*.pythonhosted.org'

--allow-host and --allow-cidr replace the computer's allowed host names or
address ranges (a running computer follows at once); --allow-host '' or
--allow-cidr '' clears that list. With both lists empty a networked computer
reaches anywhere but the host.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := client.SetRequest{IdleTimeoutSeconds: idle()}
			if cmd.Flags().Changed("allow-host") {
				l := clearable(hosts)
				req.AllowHosts = &l
			}
			if cmd.Flags().Changed("allow-cidr") {
				l := clearable(cidrs)
				req.AllowCIDRs = &l
			}
			if reflect.ValueOf(req).IsZero() {
				return errors.New("nothing to set: give --idle-timeout, --allow-host or --allow-cidr (see ohm computer set --help)")
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
			return writeInfo(cmd.OutOrStdout(), comp)
		},
	}
	f := cmd.Flags()
	idle = idleTimeoutFlag(f, idleTimeoutHelp)
	addSetAllowFlags(f, &hosts, &cidrs)
	f.BoolVar(&asJSON, "json", false, "print the computer as JSON")
	return cmd
}

// clearable is a list flag's values, with a lone empty value meaning the
// empty list.
func clearable(vals []string) []string {
	if len(vals) == 1 && strings.TrimSpace(vals[0]) == "" {
		return []string{}
	}
	return vals
}

// writeEgressInfo prints the allow lists of comp (info).
func writeEgressInfo(w io.Writer, comp *client.Computer) {
	if !comp.Network {
		return
	}
	if len(comp.AllowHosts) == 0 && len(comp.AllowCIDRs) == 0 {
		fmt.Fprintln(w, "egress: anywhere but the host")
		return
	}
	fmt.Fprintln(w, "egress: allowed hosts and ranges only")
	none := func(l []string) string {
		if len(l) == 0 {
			return "(none)"
		}
		return strings.Join(l, " ")
	}
	fmt.Fprintf(w, "allowed hosts: %s\n", none(comp.AllowHosts))
	fmt.Fprintf(w, "allowed cidrs: %s\n", none(comp.AllowCIDRs))
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

// writeIdle prints comp's idle timeout line, as info shows it.
func writeIdle(w io.Writer, comp *client.Computer) error {
	_, err := fmt.Fprintf(w, "idle timeout: %s\n", idleLine(comp))
	return err
}
