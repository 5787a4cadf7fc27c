// Package decisions holds the golden decisions of the example policy
// repository: each example call in examples/calls (and the cases here)
// decided by the bundle `make run` builds, through the Wasm runtime, compared
// with testdata/*.golden.json. A change in what any call decides shows up as
// a diff in review; rewrite with `go test ./test/decisions -update`.
package decisions

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

var update = flag.Bool("update", false, "rewrite the golden decisions")

func TestGoldenDecisions(t *testing.T) {
	ctx := context.Background()
	wd, _ := os.Getwd()
	root := filepath.Join(wd, "..", "..")
	if err := os.Chdir(root); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	sources, err := policy.ReadSources([]string{"policies"})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := build.Build(ctx, sources, build.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, opawasm.BundleOptions(&b.Manifest)...)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	inputs, _ := filepath.Glob("examples/calls/*.json")
	more, _ := filepath.Glob("test/decisions/testdata/*.input.json")
	inputs = append(inputs, more...)
	if len(inputs) < 6 {
		t.Fatalf("found %d inputs", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(in), ".json"), ".input")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			input, err := bundles.ParseInput(raw)
			if err != nil {
				t.Fatal(err)
			}
			d, err := mod.Eval(ctx, input)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			enc := json.NewEncoder(&got)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			enc.Encode(d)
			golden := filepath.Join("test/decisions/testdata", name+".golden.json")
			if *update {
				os.WriteFile(golden, got.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./test/decisions -update)", err)
			}
			if got.String() != string(want) {
				t.Errorf("decision for %s changed:\ngot  %s\nwant %s", in, got.String(), want)
			}
		})
	}
}
