package decisions

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
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

var canonicalPolicies = flag.Int("canonical-policies", 60, "random policies TestCanonicalStateRandom checks")

// TestCanonicalStateRandom: random policies comparing one counter with
// awkward literals (huge, fractional, beyond float precision, numbers as
// text) by every numeric operator, in conditions and when:, decide the same
// for the real value and its representative, at values around each of
// those literals. -canonical-policies sets how many (default 60).
func TestCanonicalStateRandom(t *testing.T) {
	ctx := context.Background()
	lits := []string{"-1e300", "1e300", "9007199254740993", "-9007199254740993", "9007199254740991", "4.5e15", "-0.5", "0", "-7", "7", "7.0", "1e3", `"1e3"`, `"1000"`, `"-7"`, `"7.0"`, `" 7"`, "0.1", "2.5", "-2.5", "1e15", "1e16", `"1e+16"`, `"9007199254740993"`, "18446744073709551615", "-9223372036854775808", "9223372036854775807"}
	ops := []string{"eq", "neq", "lt", "lte", "gt", "gte", "in", "not_in"}
	rng := rand.New(rand.NewSource(7))
	values := []int64{-1 << 62, -(1 << 53) - 1, -(1 << 53), -(1 << 53) + 1, -(1 << 53) + 2, -1001, -1000, -999, -8, -7, -6, -1, 0, 1, 2, 3, 6, 7, 8, 999, 1000, 1001, 1e15 - 1, 1e15, 1e15 + 1, 4.5e15, 1<<53 - 2, 1<<53 - 1, 1 << 53, 1<<53 + 1, 1e16, 1 << 62, 1<<63 - 1}
	for iter := 0; iter < *canonicalPolicies; iter++ {
		var b strings.Builder
		b.WriteString("version: \"1\"\ntools:\n  t:\n    rules:\n      - name: counted\n        state: {counter: n, window: hour}\n        conditions: [{path: state.t.n, op: lte, value: 9223372036854775807}]\n")
		for r := 0; r < 4; r++ {
			op := ops[rng.Intn(len(ops))]
			val := lits[rng.Intn(len(lits))]
			if op == "in" || op == "not_in" {
				val = "[" + val + ", " + lits[rng.Intn(len(lits))] + "]"
			} else if (op == "lt" || op == "lte" || op == "gt" || op == "gte") && strings.HasPrefix(val, `"`) {
				val = "5"
			}
			kind := "conditions"
			if rng.Intn(3) == 0 {
				kind = "when"
				fmt.Fprintf(&b, "      - name: r%d\n        action: deny\n        when: [{path: state.t.n, op: %s, value: %s}]\n", r, op, val)
				continue
			}
			fmt.Fprintf(&b, "      - name: r%d\n        %s: [{path: state.t.n, op: %s, value: %s}]\n", r, kind, op, val)
		}
		src := b.String()
		bd, _, err := build.Build(ctx, []policy.Source{{Path: "policies/s.yaml", Data: []byte(src)}}, build.Options{})
		if err != nil {
			t.Fatalf("a generated policy does not build: %v\n%s", err, src)
		}
		compact := bd.Manifest.Metadata.Compact
		mod, err := opawasm.Compile(ctx, bd.Wasm, bd.Data, append(opawasm.BundleOptions(&bd.Manifest), opawasm.WithDecisionMemo(0, 0))...)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			raw := bundles.Input{Server: "s", Tool: "t", State: []bundles.CounterValue{{Key: "t.n", Value: v}}}
			canon := bundles.Input{Server: "s", Tool: "t", State: []bundles.CounterValue{{Key: "t.n", Value: v}}}
			compact.Canonicalize(canon.State)
			want, err1 := mod.Eval(ctx, &raw)
			got, err2 := mod.Eval(ctx, &canon)
			if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(got, want) {
				t.Errorf("v=%d canon=%d cuts=%v: got %+v (%v), want %+v (%v)\n%s", v, canon.State[0].Value, compact.Cuts, got, err2, want, err1, src)
			}
		}
		mod.Close()
	}
}
