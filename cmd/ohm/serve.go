package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"ohm/internal/api"
	"ohm/internal/datadir"
)

// storeEnv is the environment variable that gives `ohm serve --store` its
// default, so that a daemon the CLI starts by itself gets it too.
const storeEnv = "OHM_STORE"

func init() { extraCommands = append(extraCommands, newServeCmd, newTokenCmd) }

func newServeCmd() *cobra.Command {
	var cfg api.Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the ohm daemon (the CLI starts it by itself when needed)",
		Long: `Run the ohm daemon. It answers the API on the root-only Unix socket
<data-dir>/ohm.sock. With --listen it also serves TCP, where every request
needs the bearer token that ` + "`ohm token`" + ` prints. The same tools as ` + "`ohm mcp`" + `
are served at /mcp over MCP's streamable HTTP transport (on TCP behind the
same token). Logs are JSON lines on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), nil))
			return api.ServeConfig(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", datadir.Default(), "data directory (or $"+datadir.EnvVar+")")
	f.StringVar(&cfg.Listen, "listen", "", "also serve TCP on this address (e.g. 127.0.0.1:7070), with bearer token auth")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM) for --listen")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key (PEM) for --listen")
	f.StringVar(&cfg.Store, "store", os.Getenv(storeEnv), "put new computers' volumes (both their disks) under this S3 prefix, s3://bucket/prefix, so that they survive the loss of the host; credentials and endpoint from AWS_* (or $"+storeEnv+")")
	f.StringVar(&cfg.PreviewDomain, "preview-domain", api.DefaultPreviewDomain, "domain of preview URLs on --listen: <port>-<name>.<domain> must resolve to this daemon")
	return cmd
}

// newTokenCmd is `ohm token`: the bearer token TCP clients need.
func newTokenCmd() *cobra.Command {
	var dir string
	var rotate bool
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print the API token TCP clients need (--rotate replaces it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var tok string
			var err error
			if rotate {
				tok, err = api.RotateToken(dir)
			} else {
				tok, err = api.LoadToken(dir)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", datadir.Default(), "data directory of the daemon (or $"+datadir.EnvVar+")")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the token with a new one (the old one stops working at once)")
	return cmd
}
