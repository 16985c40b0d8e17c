package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ohm/client"
)

// noListener says why an exposed port has no URL.
const noListener = "the daemon serves no TCP listener, so the preview has no URL yet: run the daemon with `ohm serve --listen 127.0.0.1:7070`"

// parsePort reads a PORT argument.
func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("invalid port %q: it must be a number between 1 and 65535", s)
	}
	return p, nil
}

func newComputerExposeCmd(connect connectFunc) *cobra.Command {
	var public, asJSON bool
	cmd := &cobra.Command{
		Use:   "expose NAME PORT",
		Short: "Expose a port of a computer at a preview URL (HTTP and WebSocket); prints the URL",
		Long: `Expose a TCP port of a computer at a preview URL on the daemon's TCP
listener (ohm serve --listen), http://<port>-<name>.localhost:<listener port>/.
Requests to it reach a server listening on 0.0.0.0 or 127.0.0.1 inside the
computer, network or not; a stopped computer is started by the first one.
The URL carries the port's share token, which the browser then keeps as a
cookie for that host; a request with the API token as a bearer header passes
too. With --public anyone who can reach the listener can open it. Exposing
an exposed port again changes only --public: the URL stays the same.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePort(args[1])
			if err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p, err := c.Expose(cmd.Context(), args[0], port, public)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			if p.URL == "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "ohm: port %d of %s is exposed, but %s\n", p.Port, args[0], noListener)
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), p.URL)
			return nil
		},
	}
	cmd.Flags().BoolVar(&public, "public", false, "open the preview to anyone who can reach the daemon's listener, without a token")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the exposed port as JSON")
	return cmd
}

func newComputerUnexposeCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "unexpose NAME PORT",
		Short: "Remove the preview URL of a port of a computer",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePort(args[1])
			if err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p, err := c.Unexpose(cmd.Context(), args[0], port)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the port that was exposed as JSON")
	return cmd
}

func newComputerPortsCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ports NAME",
		Short: "List the exposed ports of a computer with their preview URLs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ports, err := c.Ports(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				if ports == nil {
					ports = []client.Port{}
				}
				return printJSON(cmd.OutOrStdout(), ports)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PORT\tACCESS\tURL")
			for _, p := range ports {
				fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Port, access(p), orNone(p.URL))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func access(p client.Port) string {
	if p.Public {
		return "public"
	}
	return "token"
}

func orNone(u string) string {
	if u == "" {
		return "(none: the daemon has no --listen)"
	}
	return u
}

// writePorts adds the exposed ports to `ohm computer info`.
func writePorts(w io.Writer, ports []client.Port) {
	for _, p := range ports {
		fmt.Fprintf(w, "port %d: %s (%s)\n", p.Port, orNone(p.URL), access(p))
	}
}
