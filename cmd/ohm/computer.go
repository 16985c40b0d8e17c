package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"ohm/internal/units"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ohm/client"
	"ohm/internal/api/fileops"
	"ohm/internal/datadir"
)

func init() { extraCommands = append(extraCommands, newComputerCmd) }

func newComputerCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "computer",
		Aliases: []string{"computers", "c"},
		Short:   "Create, run, stop, start and delete computers",
	}
	cmd.PersistentFlags().StringVar(&dir, "data-dir", datadir.Default(), "data directory of the daemon to use (or $"+datadir.EnvVar+")")
	connect := func(ctx context.Context) (*client.Client, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the ohm binary: %w", err)
		}
		return client.Connect(ctx, dir, exe)
	}
	cmd.AddCommand(
		newComputerCreateCmd(connect),
		newComputerListCmd(connect),
		newComputerInfoCmd(connect),
		newComputerRunCmd(connect),
		newComputerShellCmd(connect),
		newComputerSimpleCmd(connect, "start", "Start a stopped computer", (*client.Client).Start),
		newComputerSimpleCmd(connect, "stop", "Stop a running computer (its workspace is flushed)", (*client.Client).Stop),
		newComputerSimpleCmd(connect, "delete", "Delete a computer: root disk, workspace and metadata", (*client.Client).Delete),
		newComputerCpCmd(connect),
		newComputerSetCmd(connect),
		newComputerExposeCmd(connect),
		newComputerUnexposeCmd(connect),
		newComputerPortsCmd(connect),
		newComputerWatchCmd(connect),
		newComputerResizeCmd(connect),
	)
	cmd.AddCommand(checkpointCmds(connect)...)
	return cmd
}

type connectFunc func(context.Context) (*client.Client, error)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseEnv turns K=V flags into a map.
func parseEnv(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	env := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid --env %q: want KEY=VALUE", kv)
		}
		env[k] = v
	}
	return env, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newComputerCreateCmd(connect connectFunc) *cobra.Command {
	var req client.CreateRequest
	var env []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a computer and start it; prints its name",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				req.Name = args[0]
			}
			var err error
			if req.Env, err = parseEnv(env); err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			progress, done := progressPrinter(os.Stderr)
			comp, err := c.Create(cmd.Context(), req, progress)
			done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), comp)
			}
			fmt.Fprintln(cmd.OutOrStdout(), comp.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Template, "template", "coding-agent", "template to start from")
	f.IntVar(&req.DiskSizeMB, "disk-size-mb", 10240, "size of the root disk in MB")
	f.Float64Var(&req.CPUs, "cpus", 0, "CPU limit, from 0.01 to the host's CPUs (default 2, or the host's CPUs if fewer)")
	f.IntVar(&req.MemoryMB, "memory-mb", 0, "memory limit in MB, from 64 to the host's memory (default 2048)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE set in every command's environment (repeatable)")
	f.BoolVar(&req.Network, "network", false, "give the computer outbound network access (the host's loopback stays out of reach)")
	addAllowFlags(f, &req.AllowHosts, &req.AllowCIDRs)
	f.BoolVar(&asJSON, "json", false, "print the computer as JSON")
	idle := idleTimeoutFlag(f, idleTimeoutHelp+idleDefaultHelp)
	cmd.PreRun = func(*cobra.Command, []string) { req.IdleTimeoutSeconds = idle() }
	return cmd
}

// progressPrinter shows template build progress on w: one updating line on
// a terminal, plain lines otherwise. done ends the display.
func progressPrinter(w *os.File) (progress func(string), done func()) {
	if !isTerminal(w) {
		return func(line string) { fmt.Fprintln(w, line) }, func() {}
	}
	shown := false
	return func(line string) {
			if len(line) > 100 {
				line = line[:97] + "..."
			}
			fmt.Fprintf(w, "\r\033[K%s", line)
			shown = true
		}, func() {
			if shown {
				fmt.Fprint(w, "\r\033[K")
			}
		}
}

func formatMB(mb int) string {
	switch {
	case mb >= 1024 && mb%1024 == 0:
		return fmt.Sprintf("%dG", mb/1024)
	case mb >= 1024:
		return fmt.Sprintf("%.1fG", float64(mb)/1024)
	}
	return fmt.Sprintf("%dM", mb)
}

func newComputerListCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List computers",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			comps, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if comps == nil {
					comps = []client.Computer{}
				}
				return printJSON(cmd.OutOrStdout(), comps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tTEMPLATE\tDISK\tCREATED")
			for _, comp := range comps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", comp.Name, comp.State, comp.Template,
					formatMB(comp.DiskSizeMB), comp.CreatedAt.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newComputerInfoCmd(connect connectFunc) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info NAME",
		Short: "Show a computer: state, template, root disk and workspace use",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			comp, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), comp)
			}
			return writeInfo(cmd.OutOrStdout(), comp)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// writeInfo prints comp as `ohm computer info` shows it: one "key: value"
// line per fact, easy to grep.
func writeInfo(w io.Writer, comp *client.Computer) error {
	tw := bufio.NewWriter(w)
	fmt.Fprintf(tw, "name: %s\n", comp.Name)
	fmt.Fprintf(tw, "state: %s\n", comp.State)
	fmt.Fprintf(tw, "template: %s\n", comp.Template)
	lim := client.Limits{CPUs: comp.CPUs, MemoryBytes: int64(comp.MemoryMB) << 20, PIDs: int64(comp.PIDs)}
	if comp.Limits != nil {
		lim = *comp.Limits
	}
	network := "none"
	if comp.Network {
		network = "outbound"
	}
	fmt.Fprintf(tw, "cpus: %g\n", lim.CPUs)
	fmt.Fprintf(tw, "memory: %s\n", units.FormatSize(uint64(lim.MemoryBytes)))
	fmt.Fprintf(tw, "pids: %d\n", lim.PIDs)
	fmt.Fprintf(tw, "network: %s\n", network)
	writeEgressInfo(tw, comp)
	writeIdle(tw, comp)
	if comp.Disk != nil {
		fmt.Fprintf(tw, "root disk: %s used of %s\n", units.FormatSize(comp.Disk.UsedBytes), units.FormatSize(comp.Disk.SizeBytes))
	} else {
		fmt.Fprintf(tw, "root disk: %s\n", formatMB(comp.DiskSizeMB))
	}
	if comp.Workspace != nil {
		if comp.Workspace.Layout == "block" {
			// btrfs does not count its files; its use is what df shows.
			fmt.Fprintf(tw, "workspace: %s used of %s (%s stored)\n", units.FormatSize(comp.Workspace.UsedBytes), units.FormatSize(comp.Workspace.Capacity), units.FormatSize(comp.Workspace.StoredBytes))
		} else {
			fmt.Fprintf(tw, "workspace: %s in %d files (%s stored)\n", units.FormatSize(comp.Workspace.UsedBytes), comp.Workspace.Files, units.FormatSize(comp.Workspace.StoredBytes))
		}
		if comp.Workspace.Incident != "" {
			fmt.Fprintf(tw, "workspace incident: %s\n", comp.Workspace.Incident)
		}
	}
	if len(comp.Env) > 0 {
		keys := make([]string, 0, len(comp.Env))
		for k := range comp.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(tw, "env: %s\n", strings.Join(keys, " "))
	}
	fmt.Fprintf(tw, "created: %s\n", comp.CreatedAt.Local().Format(time.RFC3339))
	if comp.StopReason != "" {
		when := ""
		if !comp.StoppedAt.IsZero() {
			when = comp.StoppedAt.Local().Format(time.RFC3339) + ": "
		}
		fmt.Fprintf(tw, "last stop: %s%s\n", when, comp.StopReason)
	}
	writePorts(tw, comp.Ports)
	return tw.Flush()
}

func newComputerRunCmd(connect connectFunc) *cobra.Command {
	var req client.ExecRequest
	var env []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "run NAME CMD",
		Short: "Run a command in a computer (through bash -lc), starting it first if stopped",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Command = strings.Join(args[1:], " ")
			req.TimeoutSeconds = timeout.Seconds()
			var err error
			if req.Env, err = parseEnv(env); err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			code, err := c.Exec(cmd.Context(), args[0], req, os.Stdout, os.Stderr)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCodeError{code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.User, "user", "ohm", "user to run as: ohm or root")
	f.StringVar(&req.Workdir, "workdir", "", "working directory (default: the user's home)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE for the command (repeatable)")
	f.DurationVar(&timeout, "timeout", 0, "kill the command after this long (e.g. 30s; 0: no limit)")
	return cmd
}

func newComputerShellCmd(connect connectFunc) *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:   "shell NAME",
		Short: "Open an interactive shell in a computer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			// No command: the daemon runs the template's login shell.
			req := client.ExecRequest{User: user}
			fd := int(os.Stdin.Fd())
			var resize chan client.WindowSize
			if isTerminal(os.Stdin) {
				req.TTY = true
				if ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ); err == nil {
					req.Rows, req.Cols = ws.Row, ws.Col
				}
				restore, err := makeRaw(fd)
				if err != nil {
					return err
				}
				defer restore()
				resize = make(chan client.WindowSize, 1)
				sig := make(chan os.Signal, 1)
				signal.Notify(sig, syscall.SIGWINCH)
				defer signal.Stop(sig)
				go func() {
					for range sig {
						if ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ); err == nil {
							select {
							case resize <- client.WindowSize{Rows: ws.Row, Cols: ws.Col}:
							default:
							}
						}
					}
				}()
			}
			// The shell ends the session; Ctrl-C goes to it, not to us.
			ctx := context.WithoutCancel(cmd.Context())
			code, err := c.Interactive(ctx, args[0], req, os.Stdin, os.Stdout, os.Stderr, resize)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCodeError{code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "ohm", "user to run as: ohm or root")
	return cmd
}

// makeRaw puts the terminal fd in raw mode (as cfmakeraw does) and returns
// what restores it.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func newComputerSimpleCmd(connect connectFunc, verb, short string, op func(*client.Client, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			return op(c, cmd.Context(), args[0])
		},
	}
}

// splitRemote splits NAME:/path; ok is false for a host path.
func splitRemote(s string) (name, p string, ok bool) {
	name, p, ok = strings.Cut(s, ":")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return name, p, true
}

func newComputerCpCmd(connect connectFunc) *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file or directory between the host and a computer (NAME:/path on one side)",
		Long: `Copy a file or a directory (recursively, as a tar stream) between the host
and a computer. NAME:/path names a path in computer NAME; a relative path
there is under /home/ohm. As with cp -r, copying onto an existing
directory puts the source inside it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcName, srcPath, srcRemote := splitRemote(args[0])
			dstName, dstPath, dstRemote := splitRemote(args[1])
			if srcRemote == dstRemote {
				return errors.New("cp needs NAME:/path on exactly one side")
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			if dstRemote {
				return cpToComputer(cmd.Context(), c, args[0], dstName, remotePath(dstPath), user)
			}
			return cpFromComputer(cmd.Context(), c, srcName, remotePath(srcPath), args[1], user)
		},
	}
	cmd.Flags().StringVar(&user, "user", "ohm", "user to read or write as inside the computer: ohm or root")
	return cmd
}

// remotePath makes a path in a computer absolute (relative to /home/ohm),
// keeping a trailing slash.
func remotePath(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	joined := path.Join("/home/ohm", p)
	if strings.HasSuffix(p, "/") {
		joined += "/"
	}
	return joined
}

func cpToComputer(ctx context.Context, c *client.Client, src, name, dst, user string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	// Onto an existing directory (or a path ending in /): inside it.
	if strings.HasSuffix(dst, "/") {
		dst = path.Join(dst, filepath.Base(src))
	} else if fi, err := c.Stat(ctx, name, dst, user); err == nil && fi.Type == "dir" {
		dst = path.Join(dst, filepath.Base(src))
	}
	if !st.IsDir() {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.PutFile(ctx, name, dst, user, f)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(fileops.Tar(pw, src)) }()
	err = c.PutTar(ctx, name, dst, user, pr)
	pr.CloseWithError(errors.New("upload ended"))
	return err
}

func cpFromComputer(ctx context.Context, c *client.Client, name, src, dst, user string) error {
	fi, err := c.Stat(ctx, name, src, user)
	if err != nil {
		return err
	}
	if st, err := os.Stat(dst); err == nil && st.IsDir() {
		dst = filepath.Join(dst, path.Base(src))
	}
	if fi.Type == "dir" {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := fileops.Untar(pr, dst)
			pr.CloseWithError(errors.New("extraction ended"))
			done <- err
		}()
		err := c.GetTar(ctx, name, src, user, pw)
		pw.CloseWithError(err)
		if uerr := <-done; err == nil && uerr != nil {
			err = uerr
		}
		return err
	}
	tmp := dst + ".ohm-cp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = c.GetFile(ctx, name, src, user, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
