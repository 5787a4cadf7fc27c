// Package differential checks three deciders against each other on random
// policies and inputs: the reference model (test/model), the generated Rego
// under OPA's topdown evaluator, and the generated Rego compiled to Wasm and
// run by runtime/opawasm.
package differential

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/compiler/regogen"
	"github.com/toolgate/toolgate/runtime/opawasm"
	"github.com/toolgate/toolgate/test/model"
)

var (
	seed         = flag.Int64("seed", 1, "random seed; each policy i uses seed+i")
	nPolicies    = flag.Int("policies", 200, "random policy sets to check against OPA topdown")
	nInputs      = flag.Int("inputs", 300, "random inputs per policy set")
	nWasm        = flag.Int("wasm-policies", 20, "of those policy sets, how many to also compile to Wasm")
	nWasmInputs  = flag.Int("wasm-inputs", 500, "inputs per policy set checked against Wasm (and topdown)")
	maxReports   = flag.Int("max-reports", 3, "mismatches printed per policy set")
	skipKnownBug = flag.Bool("skip-known", true, "leave out the cases knownRegogenBugs describes")
)

// knownRegogenBugs are the ways the generated Rego is wrong by the spec,
// reported to the compiler's owners. A mismatch they explain is counted,
// not failed: when the model, made to reproduce the bugs with deviation,
// agrees with every other decider, or when the mismatch has the shape
// explains looks for.
var knownRegogenBugs []knownRegogenBug

type knownRegogenBug struct {
	name      string
	deviation model.Deviation
	explains  func(set *policy.Set, in model.Input, want bundles.Decision, got []result) bool
}

// knownBug names the known bugs that explain a mismatch, or "".
func knownBug(set *policy.Set, in model.Input, got []result) string {
	if !*skipKnownBug {
		return ""
	}
	fired := map[string]bool{}
	want := model.DecideDeviating(set, in, func(c policy.Condition, v any, present bool) (bool, bool) {
		for _, b := range knownRegogenBugs {
			if b.deviation == nil {
				continue
			}
			if h, ok := b.deviation(c, v, present); ok {
				fired[b.name] = true
				return h, true
			}
		}
		return false, false
	})
	explained := len(fired) > 0 && agree(append([]result{{"model", canon(want, nil)}}, got...))
	var names []string
	for _, b := range knownRegogenBugs {
		if b.explains != nil && b.explains(set, in, want, got) {
			explained = true
			names = append(names, b.name)
		} else if fired[b.name] {
			names = append(names, b.name)
		}
	}
	if !explained {
		return ""
	}
	return strings.Join(names, " + ")
}

func TestDifferential(t *testing.T) {
	ctx := context.Background()
	var wasmSem = make(chan struct{}, 4)
	var mu sync.Mutex
	skipped := map[string]int{}
	var countTopdown, countWasm atomic.Int64
	t.Cleanup(func() {
		t.Logf("compared %d inputs with OPA topdown, %d of them with Wasm too", countTopdown.Load(), countWasm.Load())
		for name, n := range skipped {
			t.Logf("left out %d case(s) of known regogen bug %q", n, name)
		}
	})
	for i := 0; i < *nPolicies; i++ {
		s := *seed + int64(i)
		withWasm := i < *nWasm
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			t.Parallel()
			g := &gen{r: rand.New(rand.NewSource(s))}
			sources := g.policy()
			set, diags := policy.Load(sources)
			if len(diags) > 0 {
				t.Fatalf("generated policy does not lint clean: %v\n%s", diags, dump(sources))
			}
			regoSrc := regogen.Generate(set)
			pq, err := rego.New(rego.Query("data.toolgate.decision"), rego.Module("policy.rego", string(regoSrc)), dataStore(set)).PrepareForEval(ctx)
			if err != nil {
				t.Fatalf("preparing generated Rego: %v\n%s\n%s", err, dump(sources), regoSrc)
			}
			var wasm *opawasm.Module
			table := regogen.CounterTable(set)
			compact := &bundles.Compact{Entrypoint: bundles.CompactEntrypoint, Counters: table, Cuts: regogen.StateCuts(set, table)}
			if withWasm {
				wasmSem <- struct{}{}
				wasmBytes, err := build.CompileWasm(ctx, regoSrc)
				if err == nil {
					wasm, err = opawasm.Compile(ctx, wasmBytes, regogen.Data(set), opawasm.WithArgumentPaths(build.ArgumentPaths(set)),
						opawasm.WithCompact(compact))
				}
				<-wasmSem
				if err != nil {
					t.Fatalf("compiling to Wasm: %v\n%s", err, dump(sources))
				}
				defer wasm.Close()
			}
			reports := 0
			n := *nInputs
			if wasm != nil {
				n = max(n, *nWasmInputs)
			}
			for j := 0; j < n && reports < *maxReports; j++ {
				in := g.input(set)
				js := in.AppendJSON(nil) // as the host sends it: numbers as float64s
				mi, err := model.ParseInput(rawInputJSON(&in))
				if err != nil {
					t.Fatalf("input %s: %v", js, err)
				}
				want := model.Decide(set, mi)
				countTopdown.Add(1)
				results := []result{{"model", canon(want, nil)}, {"topdown", canon(evalTopdown(ctx, pq, js))}}
				if wasm != nil && j < *nWasmInputs {
					results = append(results, result{"wasm", canon(wasm.Eval(ctx, &in))})
					// The same input again is answered from the decision memo
					// (or evaluated again if another input took its slot).
					results = append(results, result{"wasm-memo", canon(wasm.Eval(ctx, &in))})
					// As the proxy asks: every counter of the table in order,
					// each value replaced by its class's representative.
					canonical := in
					canonical.State = canonicalState(compact, in.State)
					results = append(results, result{"wasm-canonical-state", canon(wasm.Eval(ctx, &canonical))})
					countWasm.Add(1)
				}
				if agree(results) {
					continue
				}
				if name := knownBug(set, mi, results[1:]); name != "" {
					mu.Lock()
					skipped[name]++
					mu.Unlock()
					continue
				}
				reports++
				var b strings.Builder
				fmt.Fprintf(&b, "deciders disagree (-seed=%d, input %d)\n%s\ninput: %s\n", s, j, dump(sources), js)
				for _, r := range results {
					fmt.Fprintf(&b, "%-8s %s\n", r.name+":", r.got)
				}
				t.Error(b.String())
			}
		})
	}
}

type result struct{ name, got string }

func agree(rs []result) bool {
	for _, r := range rs[1:] {
		if r.got != rs[0].got {
			return false
		}
	}
	return true
}

// evalTopdown evaluates the generated Rego with OPA's interpreter on the
// input's JSON, decoded (as OPA does) with exact numbers.
func evalTopdown(ctx context.Context, pq rego.PreparedEvalQuery, js []byte) (bundles.Decision, error) {
	var d bundles.Decision
	var doc any
	if err := util.UnmarshalJSON(js, &doc); err != nil {
		return d, err
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return d, err
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(v))
	if err != nil {
		return d, err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return d, fmt.Errorf("decision undefined (%d results)", len(rs))
	}
	out, err := json.Marshal(rs[0].Expressions[0].Value)
	if err != nil {
		return d, err
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("decoding %s: %w", out, err)
	}
	return d, nil
}

// canon is a decision's canonical JSON, empty lists and null alike.
func canon(d bundles.Decision, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if len(d.Counters) == 0 {
		d.Counters = nil
	}
	if len(d.Shadow) == 0 {
		d.Shadow = nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

func dump(sources []policy.Source) string {
	var b strings.Builder
	for _, s := range sources {
		fmt.Fprintf(&b, "--- %s\n%s", s.Path, s.Data)
	}
	return b.String()
}

// dataStore gives OPA the bundle data the generated Rego reads.
func dataStore(set *policy.Set) func(*rego.Rego) {
	var data map[string]any
	dec := json.NewDecoder(bytes.NewReader(regogen.Data(set)))
	dec.UseNumber() // limits up to int64's end stay exact
	if err := dec.Decode(&data); err != nil {
		panic(err)
	}
	return rego.Store(inmem.NewFromObject(data))
}

// canonicalState lists the counters of compact's table in order with their
// values in state (0 when state has none, as the policy reads a missing
// counter), canonicalized as the proxy does; then the values of state for
// counters not in the table (the generator sends some: shadow rules' and
// unknown ones), unchanged.
func canonicalState(compact *bundles.Compact, state []bundles.CounterValue) []bundles.CounterValue {
	out := make([]bundles.CounterValue, len(compact.Counters))
	inTable := map[string]bool{}
	for i, c := range compact.Counters {
		out[i].Key = c.Key
		inTable[c.Key] = true
		for _, v := range state {
			if v.Key == c.Key {
				out[i].Value = v.Value
				break
			}
		}
	}
	compact.Canonicalize(out)
	for _, v := range state {
		if !inTable[v.Key] {
			out = append(out, v)
		}
	}
	return out
}

// rawInputJSON is in's JSON with its raw fields as they came, numbers
// unchanged: the model reads the call as PolicyLayer does, on its own,
// while the host's AppendJSON sends the policy float64 values.
func rawInputJSON(in *bundles.Input) []byte {
	obj := func(r json.RawMessage) json.RawMessage {
		if len(r) == 0 {
			return json.RawMessage("{}")
		}
		return r
	}
	state := map[string]int64{}
	for _, c := range in.State {
		state[c.Key] = c.Value
	}
	groups := in.Identity.Groups
	if groups == nil {
		groups = []string{}
	}
	b, err := json.Marshal(map[string]any{
		"server": in.Server, "tool": map[string]any{"name": in.Tool, "annotations": obj(in.Annotations)},
		"arguments": obj(in.Arguments),
		"identity":  map[string]any{"subject": in.Identity.Subject, "groups": groups, "claims": obj(in.Identity.Claims)},
		"state":     state,
	})
	if err != nil {
		panic(err)
	}
	return b
}
