package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
)

func init() { build.Version = version }

func lintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lint [PATH…]",
		Short: "Check policy files and folders (default policies/)",
		Long: "Lint reads every policy file under the given files and folders (default policies/)\n" +
			"and prints every problem as file:line:col: message. It exits 1 when there is any.\n" +
			"Warnings (file:line:col: warning: …) point at what is allowed but rarely meant, such as a\n" +
			"quoted number a call's number never equals; they do not fail the lint.",
		RunE: func(cmd *cobra.Command, args []string) error {
			sources, err := policy.ReadSources(args)
			if err != nil {
				return err
			}
			set, diags := policy.Load(sources)
			for _, d := range diags {
				fmt.Fprintln(cmd.OutOrStdout(), d)
			}
			if len(diags) > 0 {
				return problemError{fmt.Errorf("%d problem(s) in %d file(s)", len(diags), len(sources))}
			}
			warnings := policy.Warnings(set)
			for _, w := range warnings {
				fmt.Fprintln(cmd.OutOrStdout(), w)
			}
			if len(warnings) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d policy file(s), no problems, %d warning(s)\n", len(sources), len(warnings))
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d policy file(s), no problems\n", len(sources))
			return nil
		},
	}
}

// lintFailure prints a build's lint diagnostics and returns the exit-1 error.
func lintFailure(cmd *cobra.Command, err error) error {
	var le *build.LintError
	if errors.As(err, &le) {
		for _, d := range le.Diagnostics {
			fmt.Fprintln(cmd.ErrOrStderr(), d)
		}
		return problemError{fmt.Errorf("%d lint problem(s); run 'toolgate lint' for the list", len(le.Diagnostics))}
	}
	return err
}

func regoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rego [PATH…]",
		Short: "Print the Rego generated from the policies",
		RunE: func(cmd *cobra.Command, args []string) error {
			sources, err := policy.ReadSources(args)
			if err != nil {
				return err
			}
			rego, _, err := build.Rego(sources)
			if err != nil {
				return lintFailure(cmd, err)
			}
			_, err = cmd.OutOrStdout().Write(rego)
			return err
		},
	}
}

func buildCmd() *cobra.Command {
	var out, revision string
	c := &cobra.Command{
		Use:   "build [PATH…] -o FILE",
		Short: "Lint, compile and write the policy bundle (.tar.gz); prints its digest",
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{errors.New("build needs -o FILE")}
			}
			sources, err := policy.ReadSources(args)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("revision") {
				revision = gitRevision(args, sources)
			}
			b, _, err := build.Build(cmd.Context(), repoRelative(sources, args), build.Options{Revision: revision})
			if err != nil {
				return lintFailure(cmd, err)
			}
			var buf bytes.Buffer
			if err := bundles.Write(&buf, b); err != nil {
				return err
			}
			if err := writeFileAtomic(out, buf.Bytes()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), bundles.Digest(buf.Bytes()))
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	c.Flags().StringVar(&revision, "revision", "", "git commit to record as the bundle's revision (default: the commit checked out where the policies are, -dirty when they hold uncommitted changes)")
	return c
}

// writeFileAtomic writes through a temporary file and a rename, so a
// reader never sees half a bundle.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// readInput reads a file, or stdin for "-".
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<20))
	}
	return os.ReadFile(name)
}

// buildInProcess lints and compiles policies for commands that evaluate
// them right away (test, and the proxy's --policy development path).
func buildInProcess(ctx context.Context, cmd *cobra.Command, paths []string) (*bundles.Bundle, *policy.Set, error) {
	sources, err := policy.ReadSources(paths)
	if err != nil {
		return nil, nil, err
	}
	b, set, err := build.Build(ctx, sources, build.Options{})
	if err != nil {
		return nil, nil, lintFailure(cmd, err)
	}
	return b, set, nil
}
