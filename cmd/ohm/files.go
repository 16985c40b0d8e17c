package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"

	"github.com/spf13/cobra"

	"ohm/client"
	"ohm/internal/api/fileops"
)

func init() { extraCommands = append(extraCommands, newFilesCmd) }

// newFilesCmd is `ohm files OP PATH`, the file side of the API that the
// daemon runs inside a computer (as /.ohm/ohm). It is hidden: nobody runs
// it by hand.
func newFilesCmd() *cobra.Command {
	var size int64
	var limit int
	cmd := &cobra.Command{
		Use:       "files stat|list|cat|write|tar|untar PATH",
		Short:     "File operations inside a computer (internal)",
		Hidden:    true,
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"stat", "list", "cat", "write", "tar", "untar"},
		RunE: func(cmd *cobra.Command, args []string) error {
			p := args[1]
			out := bufio.NewWriterSize(os.Stdout, 256<<10)
			var err error
			switch args[0] {
			case "stat":
				err = fileops.Stat(out, p)
			case "list":
				err = fileops.List(out, p, limit)
			case "cat":
				err = fileops.Cat(out, p)
			case "write":
				err = fileops.Write(bufio.NewReaderSize(os.Stdin, 256<<10), p, size)
			case "tar":
				err = fileops.Tar(out, p)
			case "untar":
				err = fileops.Untar(bufio.NewReaderSize(os.Stdin, 256<<10), p)
			default:
				err = &fileops.Error{Code: client.CodeInvalid, Message: "unknown file operation " + args[0]}
			}
			if ferr := out.Flush(); err == nil && ferr != nil {
				err = ferr
			}
			if err != nil {
				var fe *fileops.Error
				if !errors.As(err, &fe) {
					fe = &fileops.Error{Code: client.CodeInternal, Message: err.Error()}
				}
				json.NewEncoder(os.Stderr).Encode(fe)
				return exitCodeError{1}
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&size, "size", -1, "write: the number of bytes to expect (-1: unknown)")
	cmd.Flags().IntVar(&limit, "limit", 10000, "list: at most this many entries")
	return cmd
}
