package opawasm

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

// floorInput is test/bench's benchmark call (an allowed call of tool_050
// that runs every rule of its chain and reserves two counters).
var floorInput = bundles.Input{
	Server:    "bench",
	Tool:      "tool_050",
	Arguments: []byte(`{"amount":120,"currency":"eur","project":"proj-42","level":3,"note":"a typical call with a few arguments"}`),
	Identity:  bundles.Identity{Subject: "alice", Groups: []string{"eng", "payments"}},
	State:     []bundles.CounterValue{{Key: "tool_050._rate_hour", Value: 7}, {Key: "_global.calls", Value: 1234}},
}

func benchBundle(tb testing.TB, file string) *Module {
	tb.Helper()
	raw, err := os.ReadFile("testdata/" + file)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := bundles.ReadBytes(raw, bundles.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := Compile(context.Background(), b.Wasm, b.Data, append(BundleOptions(&b.Manifest), WithDecisionMemo(0, 0))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return m
}

// BenchmarkFloor compares a whole decision (check, encode, evaluate,
// decode) with the floor of this design: the bare opa_eval call on the same
// module with the input already in Wasm memory.
func BenchmarkFloor(b *testing.B) {
	for _, tc := range []struct{ name, file string }{{"10rules", "bench10.tar.gz"}, {"500rules", "bench500.tar.gz"}} {
		m := benchBundle(b, tc.file)
		ctx := context.Background()
		d, err := m.Eval(ctx, &floorInput)
		if err != nil || d.Decision != bundles.Allow || len(d.Counters) != 2 {
			b.Fatalf("%s: the benchmark call should be allowed with two counters: %+v, %v", tc.name, d, err)
		}
		b.Run("policy="+tc.name+"/path=decision", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Eval(ctx, &floorInput); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("policy="+tc.name+"/path=raw-opa-eval", func(b *testing.B) {
			inst, err := m.take(ctx, m.fast)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.close()
			// The same input the decision sends: arguments projected.
			in := floorInput
			in.Arguments = m.o.projection.appendProjected(nil, in.Arguments)
			inst.buf = in.AppendJSON(inst.buf[:0])
			n := uint32(len(inst.buf))
			inst.mem.Write(inst.base, inst.buf)
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

// BenchmarkLargeArguments is a call carrying a 256 KiB payload the policy
// never reads (a file's contents, say), with and without the projection of
// the arguments to the paths the policy reads.
func BenchmarkLargeArguments(b *testing.B) {
	raw, err := os.ReadFile("testdata/bench10.tar.gz")
	if err != nil {
		b.Fatal(err)
	}
	bd, err := bundles.ReadBytes(raw, bundles.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	in := floorInput
	in.Arguments = []byte(`{"amount":120,"currency":"eur","content":"` + strings.Repeat("x", 256<<10) + `"}`)
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"projected", BundleOptions(&bd.Manifest)}, {"whole", nil}} {
		m, err := Compile(context.Background(), bd.Wasm, bd.Data, append(tc.opts, WithDecisionMemo(0, 0))...)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("args="+tc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d, err := m.Eval(ctx, &in); err != nil || d.Decision != bundles.Allow {
					b.Fatal(d, err)
				}
			}
		})
		m.Close()
	}
}
