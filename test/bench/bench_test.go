package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	_ "github.com/open-policy-agent/opa/v1/features/wasm" // registers rego.Target("wasm")
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

type evaluator func(context.Context, *bundles.Input) (bundles.Decision, error)

type subject struct {
	name string
	eval evaluator
}

// setup builds a policy and returns the three evaluators under comparison,
// each doing the whole job: input encoding, evaluation, result decoding.
func setup(tb testing.TB, sources []policy.Source) []subject {
	tb.Helper()
	ctx := context.Background()
	b, _, err := build.Build(ctx, sources, build.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	// "toolgate" evaluates every call (the decision memo is off: a benchmark
	// repeats one input, which the memo would answer without Wasm);
	// "toolgate-memo" is the default, answering the repeated input from the
	// memo.
	mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, append(opawasm.BundleOptions(&b.Manifest), opawasm.WithDecisionMemo(0, 0))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(mod.Close)
	memoMod, err := opawasm.Compile(ctx, b.Wasm, b.Data, opawasm.BundleOptions(&b.Manifest)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(memoMod.Close)
	var data map[string]any
	dec := json.NewDecoder(bytes.NewReader(b.Data))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		tb.Fatal(err)
	}
	// OPA evaluates the same compact entrypoint our runtime does, and its
	// result is written out the same way, so each subject does the same work.
	prepare := func(opts ...func(*rego.Rego)) rego.PreparedEvalQuery {
		base := []func(*rego.Rego){
			rego.Query("data.toolgate.compact"),
			rego.Module("policy.rego", string(b.Rego)),
			rego.Store(inmem.NewFromObject(data)),
		}
		pq, err := rego.New(append(base, opts...)...).PrepareForEval(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		return pq
	}
	table := b.Manifest.Metadata.Compact.Counters
	viaOPA := func(pq rego.PreparedEvalQuery) evaluator {
		var buf []byte
		return func(ctx context.Context, in *bundles.Input) (bundles.Decision, error) {
			buf = in.AppendJSON(buf[:0])
			v, err := ast.ValueFromReader(bytes.NewReader(buf))
			if err != nil {
				return bundles.Decision{}, err
			}
			rs, err := pq.Eval(ctx, rego.EvalParsedInput(v))
			if err != nil {
				return bundles.Decision{}, err
			}
			out, err := json.Marshal(rs[0].Expressions[0].Value)
			if err != nil {
				return bundles.Decision{}, err
			}
			var c struct {
				bundles.Decision
				Counters [][2]int64 `json:"counters"`
			}
			if err := json.Unmarshal(out, &c); err != nil {
				return bundles.Decision{}, err
			}
			d := c.Decision
			d.Counters = []bundles.Reservation{}
			for _, p := range c.Counters {
				r := table[p[0]]
				r.Amount = p[1]
				d.Counters = append(d.Counters, r)
			}
			return d, nil
		}
	}
	return []subject{
		{"toolgate", mod.Eval},
		{"opa-topdown", viaOPA(prepare())},
		{"opa-wasm-sdk", viaOPA(prepare(rego.Target("wasm")))},
		{"toolgate-memo", memoMod.Eval},
	}
}

// TestEvaluatorsAgree makes sure the benchmarks compare like with like.
func TestEvaluatorsAgree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sources []policy.Source
	}{{"10rules", Small()}, {"500rules", Large()}} {
		subjects := setup(t, tc.sources)
		var first bundles.Decision
		for i, s := range subjects {
			d, err := s.eval(context.Background(), Call())
			if err != nil {
				t.Fatalf("%s/%s: %v", tc.name, s.name, err)
			}
			if d.Decision != bundles.Allow || len(d.Counters) == 0 {
				t.Fatalf("%s/%s: the benchmark call should be allowed with counters, got %+v", tc.name, s.name, d)
			}
			if i == 0 {
				first = d
			} else if !reflect.DeepEqual(d, first) {
				t.Fatalf("%s: %s decided %+v, toolgate %+v", tc.name, s.name, d, first)
			}
		}
	}
}

// TestBuildIsDeterministic: building the same sources twice gives the same
// bundle bytes, so a digest names the policy, not the build.
func TestBuildIsDeterministic(t *testing.T) {
	var digests []string
	for i := 0; i < 2; i++ {
		b, _, err := build.Build(context.Background(), Large(), build.Options{Revision: "abc123"})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := bundles.Write(&buf, b); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, bundles.Digest(buf.Bytes()))
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of the same sources differ: %s vs %s", digests[0], digests[1])
	}
}

func BenchmarkDecision(b *testing.B) {
	for _, tc := range []struct {
		name    string
		sources []policy.Source
	}{{"10rules", Small()}, {"500rules", Large()}} {
		for _, s := range setup(b, tc.sources) {
			b.Run("policy="+tc.name+"/impl="+s.name, func(b *testing.B) {
				ctx := context.Background()
				in := Call()
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.eval(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecisionParallel: 8 goroutines deciding at once (no global lock).
func BenchmarkDecisionParallel(b *testing.B) {
	subjects := setup(b, Large())
	b.Run("policy=500rules/impl=toolgate", func(b *testing.B) {
		ctx := context.Background()
		b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 goroutines
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			in := Call()
			for pb.Next() {
				if _, err := subjects[0].eval(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkBuild500: lint, Rego, Wasm and bundle for the 500-rule policy.
func BenchmarkBuild500(b *testing.B) {
	src := Large()
	for b.Loop() {
		bd, _, err := build.Build(context.Background(), src, build.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := bundles.Write(&bytes.Buffer{}, bd); err != nil {
			b.Fatal(err)
		}
	}
}
