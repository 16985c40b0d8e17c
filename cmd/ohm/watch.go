package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"ohm/client"
)

func newComputerWatchCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch NAME [PATH]",
		Short: "Print the changes to files under PATH (default /home/ohm) of a running computer",
		Long: `Print one line per change under PATH (in the computer; /home/ohm, the
default, or below it) while the computer runs: created, modified, deleted,
and moved (old path -> new path); directories end in "/". Bursts are
coalesced per path within a short window. The computer is never held up:
if this reader falls behind, events are dropped and an "overflow" line says
so (list PATH again to catch up). The watch ends when the computer stops.

Watching is not activity: a watch does not keep a computer from being
stopped as idle. It needs a computer whose workspace is in the block
layout (every computer made by this version).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := ""
			if len(args) == 2 {
				p = args[1]
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			w, err := c.Watch(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			defer w.Close()
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			for {
				ev, err := w.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil // interrupted: the watch is simply over
					}
					return err
				}
				if asJSON {
					if err := enc.Encode(ev); err != nil {
						return err
					}
					continue
				}
				if line := watchLine(ev); line != "" {
					fmt.Fprintln(out, line)
				}
				if ev.Type == client.WatchEnded {
					fmt.Fprintf(cmd.ErrOrStderr(), "watch of %s ended: %s\n", args[0], ev.Reason)
				}
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the events as NDJSON (one JSON object per line)")
	return cmd
}

// watchLine is the line `ohm computer watch` prints for ev, "" for none.
func watchLine(ev client.WatchEvent) string {
	slash := func(p string) string {
		if ev.Dir && p != "/" {
			return p + "/"
		}
		return p
	}
	switch ev.Type {
	case client.WatchWatching, client.WatchEnded:
		return ""
	case client.WatchMoved:
		return fmt.Sprintf("%-8s %s -> %s", ev.Type, slash(ev.OldPath), slash(ev.Path))
	case client.WatchOverflow:
		n := "some"
		if ev.Dropped > 0 {
			n = fmt.Sprint(ev.Dropped)
		}
		return fmt.Sprintf("%-8s %s: %s events dropped (%s); list it again to catch up", ev.Type, ev.Path, n, ev.Reason)
	default:
		return fmt.Sprintf("%-8s %s", ev.Type, slash(ev.Path))
	}
}
