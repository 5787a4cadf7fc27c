package decisions

import (
	"context"
	"reflect"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// canonicalPolicy reads one counter with every operator, at cuts whole and
// fractional, as numbers and as strings, in step 3 and in when:, in shadow
// rules too.
const canonicalPolicy = `version: "1"
tools:
  t:
    rules:
      - name: counted
        state: {counter: n, window: hour}
        conditions:
          - {path: state.t.n, op: lte, value: 30}
      - name: not three
        conditions: [{path: state.t.n, op: neq, value: 3}]
      - name: not five as text
        conditions: [{path: state.t.n, op: neq, value: "5"}]
      - name: not seven or nine
        conditions: [{path: state.t.n, op: not_in, value: [7, "9", x, true]}]
      - name: over two and a half
        when: [{path: state.t.n, op: gt, value: 2.5}]
        conditions: [{path: state.t.n, op: lt, value: 12}]
      - name: at least fifteen
        when: [{path: state.t.n, op: gte, value: 15}]
        conditions: [{path: state.t.n, op: eq, value: 20}]
      - name: shadow band
        mode: shadow
        conditions: [{path: state.t.n, op: in, value: [22, "24"]}]
      - name: never for numbers
        conditions:
          - {path: state.t.n, op: exists, value: true}
          - {path: state.t.n, op: regex, value: "."}
        mode: shadow
`

// TestCanonicalStateDecidesAlike: for every counter value from -3 to 40,
// the bundle decides the same with the value as with its canonical
// representative, and the representatives are few (one per class).
func TestCanonicalStateDecidesAlike(t *testing.T) {
	ctx := context.Background()
	b, _, err := build.Build(ctx, []policy.Source{{Path: "policies/s.yaml", Data: []byte(canonicalPolicy)}}, build.Options{})
	if err != nil {
		t.Fatal(err)
	}
	compact := b.Manifest.Metadata.Compact
	if len(compact.Counters) != 1 || len(compact.Cuts) != 1 {
		t.Fatalf("counters %+v, cuts %v: want one counter with its cuts", compact.Counters, compact.Cuts)
	}
	if got, want := compact.Cuts[0], []float64{2.5, 3, 5, 7, 9, 12, 15, 20, 22, 24, 30}; !reflect.DeepEqual(got, want) {
		t.Errorf("cuts %v, want %v", got, want)
	}
	mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, append(opawasm.BundleOptions(&b.Manifest), opawasm.WithDecisionMemo(0, 0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	classes := map[int64]bool{}
	outcomes := map[string]bool{}
	for v := int64(-3); v <= 40; v++ {
		raw := bundles.Input{Server: "s", Tool: "t", State: []bundles.CounterValue{{Key: "t.n", Value: v}}}
		canon := raw
		canon.State = []bundles.CounterValue{{Key: "t.n", Value: v}}
		compact.Canonicalize(canon.State)
		classes[canon.State[0].Value] = true
		want, err := mod.Eval(ctx, &raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mod.Eval(ctx, &canon)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("value %d as %d: decided %+v, want %+v", v, canon.State[0].Value, got, want)
		}
		outcomes[want.Rule+"|"+want.Message+"|"+string(want.Decision)] = true
	}
	// 11 cuts: 12 open classes (the one between 2.5 and 3 has no whole
	// number) and 10 whole-number cuts.
	if len(classes) != 21 {
		t.Errorf("%d classes for the values -3..40, want 21: %v", len(classes), classes)
	}
	if len(outcomes) < 5 {
		t.Errorf("only %d distinct decisions: the policy should tell the classes apart", len(outcomes))
	}
	// A state that does not list the bundle's counters in order is left as
	// it is.
	odd := []bundles.CounterValue{{Key: "other", Value: 17}}
	compact.Canonicalize(odd)
	if odd[0].Value != 17 {
		t.Errorf("a state of other counters was changed: %v", odd)
	}
}
