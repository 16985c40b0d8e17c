package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ohm/client"
)

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
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a computer, running or not",
		Long: `Change a computer, running or not; what no flag names stays as it is.

--allow-host and --allow-cidr replace the computer's allowed host names or
address ranges (a running computer follows at once); --allow-host '' or
--allow-cidr '' clears that list. With both lists empty a networked computer
reaches anywhere but the host.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.SetRequest
			// Egress flags.
			if cmd.Flags().Changed("allow-host") {
				l := clearable(hosts)
				req.AllowHosts = &l
			}
			if cmd.Flags().Changed("allow-cidr") {
				l := clearable(cidrs)
				req.AllowCIDRs = &l
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
