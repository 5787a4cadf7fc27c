package decisions

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	_ "github.com/open-policy-agent/opa/v1/features/wasm" // OPA runs the bundle's Wasm resolver
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// TestOPALoadsTheBundle: OPA itself loads a bundle file we build, as is, and
// its toolgate/decision agrees with our runtime on every example call.
func TestOPALoadsTheBundle(t *testing.T) {
	ctx := context.Background()
	sources, err := policy.ReadSources([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := build.Build(ctx, sources, build.Options{Revision: "test"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(rego.Query("data.toolgate.decision"), rego.LoadBundle(file)).PrepareForEval(ctx)
	if err != nil {
		t.Fatalf("OPA does not load the bundle: %v", err)
	}
	mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, opawasm.BundleOptions(&b.Manifest)...)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	inputs, _ := filepath.Glob("../../examples/calls/*.json")
	more, _ := filepath.Glob("testdata/*.input.json")
	for _, in := range append(inputs, more...) {
		raw, _ := os.ReadFile(in)
		input, err := bundles.ParseInput(raw)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := mod.Eval(ctx, input)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		json.Unmarshal(input.AppendJSON(nil), &doc)
		rs, err := pq.Eval(ctx, rego.EvalInput(doc))
		if err != nil || len(rs) != 1 {
			t.Fatalf("%s: OPA: %v %v", in, rs, err)
		}
		out, _ := json.Marshal(rs[0].Expressions[0].Value)
		var theirs bundles.Decision
		if err := json.Unmarshal(out, &theirs); err != nil {
			t.Fatalf("%s: OPA's decision %s: %v", in, out, err)
		}
		// nil and empty lists are the same decision
		if len(theirs.Counters) == 0 && len(ours.Counters) == 0 {
			theirs.Counters = ours.Counters
		}
		if len(theirs.Shadow) == 0 && len(ours.Shadow) == 0 {
			theirs.Shadow = ours.Shadow
		}
		if !reflect.DeepEqual(ours, theirs) {
			t.Errorf("%s:\nours %+v\nOPA  %+v", in, ours, theirs)
		}
	}
}
