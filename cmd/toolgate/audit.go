package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/runtime/audit"
)

func auditCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Work with proxy audit logs",
	}
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check an audit log's hash chain; exit 1 naming the first broken line",
		Args:  wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := audit.Verify(f)
			if err != nil {
				return problemError{fmt.Errorf("%s: %w", args[0], err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d line(s), chain intact\n", args[0], n)
			return nil
		},
	}
	c.AddCommand(verify)
	return c
}
