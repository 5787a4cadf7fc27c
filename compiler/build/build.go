// Package build is the compiler's back end (what CI runs): it takes policy
// sources through lint and Rego generation, compiles the Rego to Wasm with
// OPA's compile package (the only place OPA's compiler is used), and
// assembles the bundle of architecture.md.
package build

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	opabundle "github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/compiler/regogen"
)

// Version is the compiler version stamped into bundles; cmd/toolgate sets
// it from the build.
var Version = "dev"

// ErrLint is returned (wrapped in a *LintError) when the policies have problems.
var ErrLint = errors.New("policies have lint errors")

// LintError carries every diagnostic that stopped a build.
type LintError struct{ Diagnostics []policy.Diagnostic }

func (e *LintError) Error() string {
	return fmt.Sprintf("%d lint error(s), first: %s", len(e.Diagnostics), e.Diagnostics[0])
}

func (e *LintError) Unwrap() error { return ErrLint }

// Options are a build's settings.
type Options struct {
	// Revision is the git commit the sources come from; "" leaves it empty.
	Revision string
}

// Rego lints sources and returns the generated Rego.
func Rego(sources []policy.Source) ([]byte, *policy.Set, error) {
	set, diags := policy.Load(sources)
	if len(diags) > 0 {
		return nil, set, &LintError{diags}
	}
	return regogen.Generate(set, "compiler: toolgate "+Version), set, nil
}

// Build lints sources, generates Rego, compiles it to Wasm and returns the
// bundle. The same sources and options always give the same bundle bytes.
func Build(ctx context.Context, sources []policy.Source, opts Options) (*bundles.Bundle, *policy.Set, error) {
	rego, set, err := Rego(sources)
	if err != nil {
		return nil, set, err
	}
	wasm, err := CompileWasm(ctx, rego)
	if err != nil {
		return nil, set, err
	}
	b := &bundles.Bundle{
		Manifest: bundles.Manifest{
			Revision: opts.Revision,
			Roots:    []string{"toolgate"},
			Wasm:     []bundles.WasmResolver{{Entrypoint: bundles.Entrypoint, Module: bundles.WasmFile}},
			Metadata: bundles.Metadata{Compiler: "toolgate " + Version},
		},
		Wasm: wasm,
		Data: regogen.Data(set),
		Rego: rego,
	}
	b.Manifest.Metadata.Approvers = regogen.ApproversByRule(set)
	for _, s := range sources {
		b.Sources = append(b.Sources, bundles.File{Path: s.Path, Data: s.Data})
		b.Manifest.Metadata.Sources = append(b.Manifest.Metadata.Sources, bundles.SourceDigest{Path: s.Path, SHA256: bundles.SHA256Hex(s.Data)})
	}
	sort.Slice(b.Manifest.Metadata.Sources, func(i, j int) bool {
		return b.Manifest.Metadata.Sources[i].Path < b.Manifest.Metadata.Sources[j].Path
	})
	for _, s := range set.Servers {
		b.Manifest.Metadata.Servers = append(b.Manifest.Metadata.Servers, s.Name)
	}
	annotations := ReadsAnnotations(set)
	b.Manifest.Metadata.Reads = &bundles.Reads{Arguments: ArgumentPaths(set), Annotations: &annotations}
	counters := regogen.CounterTable(set)
	if counters == nil {
		counters = []bundles.Reservation{}
	}
	b.Manifest.Metadata.Compact = &bundles.Compact{Entrypoint: bundles.CompactEntrypoint, Counters: counters, Cuts: regogen.StateCuts(set, counters)}
	return b, set, nil
}

// eachPathRead calls f with every path a rule of set reads: in
// conditions, in when, and its increment_from.
func eachPathRead(set *policy.Set, f func(path string)) {
	for _, file := range set.Files {
		for _, t := range file.Tools {
			for _, r := range t.Rules {
				for _, c := range r.Conditions {
					f(c.Path)
				}
				for _, c := range r.When {
					f(c.Path)
				}
				if r.State != nil && r.State.IncrementFrom != "" {
					f(r.State.IncrementFrom)
				}
			}
		}
	}
}

// ReadsAnnotations reports whether a rule of set reads a tool.annotations
// path (in conditions or when).
func ReadsAnnotations(set *policy.Set) bool {
	reads := false
	eachPathRead(set, func(path string) {
		reads = reads || path == "tool.annotations" || strings.HasPrefix(path, "tool.annotations.")
	})
	return reads
}

// ArgumentPaths lists every argument path a rule of set reads (in
// conditions, when, or increment_from), as lists of keys, sorted and
// without duplicates.
func ArgumentPaths(set *policy.Set) [][]string {
	seen := map[string]bool{}
	var out [][]string
	eachPathRead(set, func(path string) {
		rest, ok := strings.CutPrefix(path, "args.")
		if !ok || seen[rest] {
			return
		}
		seen[rest] = true
		out = append(out, strings.Split(rest, "."))
	})
	sort.Slice(out, func(i, j int) bool { return strings.Join(out[i], "\x00") < strings.Join(out[j], "\x00") })
	if out == nil {
		out = [][]string{}
	}
	return out
}

// CompileWasm compiles generated Rego (package toolgate) to an OPA Wasm
// module with the entrypoint toolgate/decision.
func CompileWasm(ctx context.Context, rego []byte) ([]byte, error) {
	mod, err := ast.ParseModuleWithOpts("/policy.rego", string(rego), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parsing generated Rego (a compiler bug; please report it): %w", err)
	}
	in := &opabundle.Bundle{
		Manifest: opabundle.Manifest{Roots: &[]string{"toolgate"}},
		Modules:  []opabundle.ModuleFile{{URL: "/policy.rego", Path: "/policy.rego", Raw: rego, Parsed: mod}},
		Data:     map[string]any{},
	}
	c := compile.New().
		WithTarget(compile.TargetWasm).
		WithEntrypoints(bundles.Entrypoint, bundles.CompactEntrypoint).
		WithRegoVersion(ast.RegoV1).
		WithBundle(in)
	if err := c.Build(ctx); err != nil {
		return nil, fmt.Errorf("compiling generated Rego to Wasm (a compiler bug; please report it): %w", err)
	}
	out := c.Bundle()
	if len(out.WasmModules) != 1 {
		return nil, fmt.Errorf("compiling to Wasm: got %d modules, want 1", len(out.WasmModules))
	}
	return out.WasmModules[0].Raw, nil
}
