package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/compiler/policytest"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

func testCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "test [PATH…]",
		Short: "Run the *_test.yaml policy tests against the compiled bundle",
		Long: "Test compiles the policies under the given paths (default policies/) into a bundle,\n" +
			"loads it in the same Wasm runtime the proxy uses, and runs every *_test.yaml case.\n" +
			"A *_test.yaml file named as a path is run against the policies under the other\n" +
			"paths, or, with none, under policies/ (else the test files' own folders).\n" +
			"It prints one line per failing case and ends with \"N passed, N failed\".",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			files, err := policytest.Find(args)
			if err != nil {
				return err
			}
			if len(files) == 0 {
				return problemError{fmt.Errorf("no policy tests (*_test.yaml) under %v", args)}
			}
			// A test file that cannot be read counts as one failed case,
			// reported on its own line: the output still ends with the
			// summary line (policy.md §7).
			var tests []*policytest.File
			var broken []string
			for _, f := range files {
				data, err := os.ReadFile(f)
				var tf *policytest.File
				if err == nil {
					tf, err = policytest.Parse(f, data)
				}
				if err != nil {
					// One line: the error names the file (yaml's may span lines).
					msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
					broken = append(broken, "FAIL "+msg)
					continue
				}
				tests = append(tests, tf)
			}
			b, set, err := buildInProcess(ctx, cmd, policyPaths(args))
			if err != nil {
				return err
			}
			mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, opawasm.BundleOptions(&b.Manifest)...)
			if err != nil {
				return fmt.Errorf("loading the compiled bundle: %w", err)
			}
			defer mod.Close()
			var servers []string
			for _, s := range set.Servers {
				servers = append(servers, s.Name)
			}
			results, err := policytest.Run(ctx, tests, servers, mod.Eval)
			if err != nil {
				return problemError{err}
			}
			for _, b := range broken {
				fmt.Fprintln(cmd.OutOrStdout(), b)
			}
			for _, r := range results {
				if r.Failed {
					fmt.Fprintln(cmd.OutOrStdout(), r)
				}
			}
			_, failed := policytest.Summary(results)
			failed += len(broken)
			fmt.Fprintf(cmd.OutOrStdout(), "%d passed, %d failed\n", len(results)+len(broken)-failed, failed)
			if failed > 0 {
				return problemError{}
			}
			return nil
		},
	}
}

func evalCmd() *cobra.Command {
	var bundlePath, inputPath string
	c := &cobra.Command{
		Use:   "eval --bundle FILE --input FILE|-",
		Short: "Print the decision JSON of a bundle for one input",
		Long: "Eval loads a bundle in the proxy's Wasm runtime and prints the decision (policy.md §6)\n" +
			"for one decision input, read from a file or from stdin with -.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if bundlePath == "" || inputPath == "" {
				return usageError{fmt.Errorf("eval needs --bundle FILE and --input FILE|-")}
			}
			ctx := cmd.Context()
			raw, err := os.ReadFile(bundlePath)
			if err != nil {
				return err
			}
			b, err := bundles.ReadBytes(raw, bundles.Limits{})
			if err != nil {
				return problemError{fmt.Errorf("loading %s: %w", bundlePath, err)}
			}
			data, err := readInput(cmd, inputPath)
			if err != nil {
				return err
			}
			in, err := bundles.ParseInput(data)
			if err != nil {
				return problemError{err}
			}
			mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, opawasm.BundleOptions(&b.Manifest)...)
			if err != nil {
				return problemError{fmt.Errorf("loading %s: %w", bundlePath, err)}
			}
			defer mod.Close()
			d, err := mod.Eval(ctx, in)
			if err != nil {
				return problemError{fmt.Errorf("no decision (a proxy would deny this call): %w", err)}
			}
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(d); err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out.Bytes())
			return err
		},
	}
	c.Flags().StringVar(&bundlePath, "bundle", "", "bundle file (.tar.gz) built by toolgate build")
	c.Flags().StringVar(&inputPath, "input", "", "decision input JSON file, or - for stdin")
	return c
}

// policyPaths returns the paths toolgate test compiles policies from: the
// given ones that are not test files; when every one is a test file, the
// default policies/ folder, or when there is none, the test files' folders.
func policyPaths(args []string) []string {
	var paths, testDirs []string
	for _, a := range args {
		if info, err := os.Stat(a); err == nil && !info.IsDir() && policy.IsTestFile(info.Name()) {
			testDirs = append(testDirs, filepath.Dir(a))
			continue
		}
		paths = append(paths, a)
	}
	if len(paths) > 0 || len(testDirs) == 0 {
		return paths
	}
	if info, err := os.Stat("policies"); err == nil && info.IsDir() {
		return nil // the default
	}
	slices.Sort(testDirs)
	return slices.Compact(testDirs)
}
