package opawasm

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

var benchInput = bundles.Input{
	Server:      "github",
	Tool:        "create_issue",
	Annotations: json.RawMessage(`{"destructiveHint":false}`),
	Arguments:   json.RawMessage(`{"title":"a bug","body":"it broke","labels":["bug","p1"]}`),
	Identity:    bundles.Identity{Subject: "alice", Groups: []string{"eng"}, Claims: json.RawMessage(`{"org":"acme"}`)},
	State:       []bundles.CounterValue{{Key: "create_issue._rate_hour", Value: 3}, {Key: "_global.calls", Value: 17}},
}

// TestEvalAllocs holds a whole decision (check, encode, evaluate, decode) to
// at most 10 allocations.
func TestEvalAllocs(t *testing.T) {
	m := mustCompile(t, fixture(t, "simple"), WithDecisionMemo(0, 0))
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		in   bundles.Input
		max  float64
	}{
		{"allow", bundles.Input{Tool: "x", Arguments: benchInput.Arguments}, 10},
		{"counter", benchInput, 10},
	} {
		n := testing.AllocsPerRun(200, func() {
			if _, err := m.Eval(ctx, &tt.in); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%s: %v allocations per decision", tt.name, n)
		if n > tt.max {
			t.Errorf("%s: %v allocations per decision, want at most %v", tt.name, n, tt.max)
		}
	}
}

// BenchmarkEval is a whole decision: check, encode, evaluate, decode.
func BenchmarkEval(b *testing.B) {
	m := mustCompile(b, fixture(b, "simple"), WithDecisionMemo(0, 0))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Eval(ctx, &benchInput); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvalGuarded is BenchmarkEval on the guarded path (termination
// checks and a deadline goroutine per call).
func BenchmarkEvalGuarded(b *testing.B) {
	m := mustCompile(b, fixture(b, "simple"), WithGuardThreshold(0), WithDecisionMemo(0, 0))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Eval(ctx, &benchInput); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvalParallel is BenchmarkEval from GOMAXPROCS goroutines.
func BenchmarkEvalParallel(b *testing.B) {
	m := mustCompile(b, fixture(b, "simple"), WithDecisionMemo(0, 0))
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Eval(ctx, &benchInput); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRawOpaEval is only the opa_eval call, with the input already in
// memory.
func BenchmarkRawOpaEval(b *testing.B) {
	for _, guarded := range []bool{false, true} {
		name := "fast"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			m := mustCompile(b, fixture(b, "simple"), WithDecisionMemo(0, 0))
			v := m.fast
			if guarded {
				v = m.guarded
			}
			inst, err := m.take(context.Background(), v)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.close()
			inst.buf = benchInput.AppendJSON(nil)
			n := uint32(len(inst.buf))
			inst.mem.Write(inst.base, inst.buf)
			ctx := context.Background()
			if guarded {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, DefaultTimeout*100)
				defer cancel()
			}
			b.ReportAllocs()
			for b.Loop() {
				s := &inst.stack
				*s = [7]uint64{0, uint64(m.entrypoint), uint64(inst.dataAddr), uint64(inst.base), uint64(n), uint64(inst.base + n), 0}
				if err := inst.eval.CallWithStack(ctx, s[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
