// Package corpus checks toolgate against real PolicyLayer v1 files that
// nobody on this project wrote (../shared/corpus/policylayer-templates):
// each lints clean, builds, loads in the Wasm runtime and decides a call of
// every tool it names — with the outcome the file's own rules give.
package corpus

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// Dir is where the corpus lives, relative to this package.
const Dir = "../../../shared/corpus/policylayer-templates"

func corpusFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus files under %s (the shared/ folder must sit beside the clone): %v", Dir, err)
	}
	return files
}

func TestCorpusBuildsAndDecides(t *testing.T) {
	ctx := context.Background()
	files := corpusFiles(t)
	if len(files) < 53 {
		t.Fatalf("found %d corpus files, want all 53", len(files))
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			src := []policy.Source{{Path: "policies/" + name, Data: data}}
			b, set, err := build.Build(ctx, src, build.Options{})
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, opawasm.BundleOptions(&b.Manifest)...)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer mod.Close()
			server := strings.TrimSuffix(name, ".yaml")
			f := set.Files[0]
			if len(f.Tools) == 0 {
				t.Fatal("no tools parsed")
			}
			for _, tool := range append(toolNames(f), "no_such_tool_xyz") {
				d, err := mod.Eval(ctx, &bundles.Input{Server: server, Tool: tool, Arguments: []byte(`{"path":"/tmp/x","query":"q"}`)})
				if err != nil {
					t.Fatalf("%s: %v", tool, err)
				}
				want := expected(f, tool)
				if d.Decision != want {
					t.Errorf("%s: got %s (%s: %s), want %s", tool, d.Decision, d.Rule, d.Message, want)
				}
			}
		})
	}
}

func toolNames(f *policy.File) []string {
	var out []string
	for _, t := range f.Tools {
		if t.Key != policy.Wildcard && !policy.IsGlob(t.Key) {
			out = append(out, t.Key)
		}
	}
	return out
}

// expected is the outcome for a call with no special arguments, for the
// shape every corpus file has: no rules, or hide and default only.
func expected(f *policy.File, tool string) bundles.Outcome {
	for _, h := range f.Hide {
		if h.Value == tool || h.Value == policy.Wildcard {
			return bundles.Deny
		}
	}
	for _, t := range f.Tools {
		if len(t.Rules) > 0 {
			panic("corpus file with rules: extend expected()")
		}
	}
	listed := false
	for _, t := range f.Tools {
		listed = listed || t.Key == tool
	}
	if f.Default == "deny" && !listed {
		return bundles.Deny
	}
	return bundles.Allow
}
