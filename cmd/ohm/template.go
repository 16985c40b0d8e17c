package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ohm/internal/datadir"
	"ohm/internal/template"
)

func init() { extraCommands = append(extraCommands, newTemplateCmd) }

func newTemplateCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "template",
		Short: "List and build the root filesystems computers start from",
	}
	cmd.PersistentFlags().StringVar(&dir, "data-dir", datadir.Default(), "data directory holding the templates (or $"+datadir.EnvVar+")")
	store := func() *template.Store { return template.NewStore(dir) }
	cmd.AddCommand(newTemplateListCmd(store), newTemplateBuildCmd(store))
	return cmd
}

func newTemplateListCmd(store func() *template.Store) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the known templates and whether they are built",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			infos, err := store().List(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(infos)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBUILT\tSIZE\tDESCRIPTION")
			for _, in := range infos {
				built, size := "no", "-"
				if in.Built {
					built = in.BuiltAt.Local().Format("2006-01-02 15:04")
					size = templateSize(in.SizeBytes)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", in.Name, built, size, in.Description)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the templates as JSON")
	return cmd
}

func newTemplateBuildCmd(store func() *template.Store) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "build NAME",
		Short: "Build a template (once; --force rebuilds it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, name := store(), args[0]
			info, err := s.Get(cmd.Context(), name)
			if err != nil {
				return err
			}
			if info.Built && !force {
				fmt.Fprintf(os.Stderr, "template %s is already built (%s); --force rebuilds it\n", name, templateSize(info.SizeBytes))
				return nil
			}
			w := newLineDisplay(os.Stderr)
			if force {
				_, err = s.Build(cmd.Context(), name, w)
			} else {
				_, err = s.Ensure(cmd.Context(), name, w)
			}
			w.Close()
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "rebuild even if already built")
	return cmd
}

// lineDisplay shows progress lines: on a terminal each line replaces the
// previous one (warnings and the last line stay), elsewhere they are
// written as they come.
type lineDisplay struct {
	mu      sync.Mutex
	f       *os.File
	tty     bool
	buf     []byte
	pending bool // a line is shown without its newline
}

func newLineDisplay(f *os.File) *lineDisplay {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return &lineDisplay{f: f, tty: err == nil}
}

func (d *lineDisplay) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = append(d.buf, p...)
	for {
		i := bytes.IndexByte(d.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(d.buf[:i])
		d.buf = d.buf[i+1:]
		d.show(line)
	}
}

func (d *lineDisplay) show(line string) {
	if !d.tty {
		fmt.Fprintln(d.f, line)
		return
	}
	width := 100
	if ws, err := unix.IoctlGetWinsize(int(d.f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 10 {
		width = int(ws.Col) - 1
	}
	keep := strings.Contains(line, "warning") || strings.Contains(line, "W: ") || strings.Contains(line, "E: ")
	if keep {
		fmt.Fprintf(d.f, "\r\033[K%s\n", line)
		d.pending = false
		return
	}
	if len(line) > width {
		line = line[:width-3] + "..."
	}
	fmt.Fprintf(d.f, "\r\033[K%s", line)
	d.pending = true
}

// Close ends the display, leaving the last line on screen.
func (d *lineDisplay) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.buf) > 0 {
		d.show(string(d.buf))
		d.buf = nil
	}
	if d.pending {
		fmt.Fprintln(d.f)
		d.pending = false
	}
}

func templateSize(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0fM", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%dK", b/1024)
}
