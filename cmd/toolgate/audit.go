package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/runtime/audit"
)

func auditCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Work with proxy audit logs",
		Args:  wrapArgs(cobra.NoArgs), // an unknown subcommand is bad usage (exit 2)
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	verify := &cobra.Command{
		Use:   "verify FILE...",
		Short: "Check an audit log's hash chain; exit 1 naming the first broken line",
		Long: `Check an audit log's hash chain, across its rotated files.

With one FILE, the log at FILE is checked with its rotated files (FILE.000001,
FILE.000002, …, oldest first, then FILE). With several, the files given are
checked as one chain: files of one log (FILE and FILE.NNNNNN, as FILE* lists
them) in chain order, files of several names in the order given.

A break is reported as FILE:LINE with what is wrong there; the exit status is
1. An intact chain prints the hash of its last line: keep it elsewhere, and a
later verify shows the log was not cut short before that line.`,
		Args: wrapArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			files := args
			if len(args) == 1 {
				var err error
				if files, err = audit.Files(args[0]); err != nil {
					return problemError{err}
				}
				if len(files) == 0 {
					return usageError{fmt.Errorf("no audit log at %s (nor rotated files %s.NNNNNN)", args[0], args[0])}
				}
			} else {
				files = audit.ChainOrder(files)
				for _, f := range files {
					if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
						return usageError{fmt.Errorf("no audit log file %s", f)}
					} else if err != nil {
						return problemError{err}
					}
				}
			}
			n, head, err := audit.VerifyFiles(files)
			if err != nil {
				var ce *audit.ChainError
				if errors.As(err, &ce) {
					return problemError{fmt.Errorf("%w\nThe chain is broken there: compare the file with a backup or the copy your log shipper holds.", err)}
				}
				return problemError{err}
			}
			out := cmd.OutOrStdout()
			if len(files) == 1 {
				fmt.Fprintf(out, "%s: %d line(s), chain intact\n", files[0], n)
			} else {
				fmt.Fprintf(out, "%s to %s: %d line(s) in %d files, chain intact\n", files[0], files[len(files)-1], n, len(files))
			}
			fmt.Fprintf(out, "last line sha256 %s\n", head)
			return nil
		},
	}
	c.AddCommand(verify)
	return c
}
