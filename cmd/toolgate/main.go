// Command toolgate is the one binary: it turns flags into options and wires
// the compiler (lint, test, rego, build) and the runtime (eval, proxy)
// together. Logic lives in the packages.
//
// Exit codes: 0 success, 1 a problem found (lint errors, failed tests, a
// bad bundle), 2 bad usage.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// usageError marks an error the user made on the command line (exit 2).
type usageError struct{ error }

// problemError marks a command that ran and found problems (exit 1); its
// details are already printed.
type problemError struct{ error }

func main() {
	root := newRoot()
	err := root.Execute()
	if err == nil {
		return
	}
	var ue usageError
	var pe problemError
	switch {
	case errors.As(err, &pe):
		if pe.error != nil && pe.Error() != "" {
			fmt.Fprintln(os.Stderr, "toolgate:", pe.Error())
		}
		os.Exit(1)
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "toolgate:", ue.Error())
		fmt.Fprintln(os.Stderr, "Run 'toolgate --help' for usage.")
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "toolgate:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "toolgate",
		Short:         "Git-reviewed, signed policies for MCP tool calls",
		Long:          "toolgate compiles PolicyLayer v1 policies to a signed Wasm bundle and enforces it on every MCP tools/call.",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(lintCmd(), regoCmd(), buildCmd(), testCmd(), evalCmd(),
		keygenCmd(), pushCmd(), signCmd(), verifyCmd(), pullCmd(), pinCmd(), rollbackCmd(),
		proxyCmd(), auditCmd(), grantsCmd(), approvalsCmd())
	// Unknown subcommands and bad argument counts are usage errors.
	for _, c := range root.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	return root
}

func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	if check == nil {
		return nil
	}
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
