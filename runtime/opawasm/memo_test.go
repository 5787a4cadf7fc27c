package opawasm

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

// memoHits sums the memo hits of the module's idle instances.
func memoHits(m *Module) uint64 {
	var n uint64
	for i := range m.fast.pool.slots {
		if inst := m.fast.pool.slots[i].Load(); inst != nil {
			n += inst.memoHits
		}
	}
	return n
}

// TestMemoSameDecisions: with the memo on, every decision — the first
// evaluation of an input and each repeat — equals the one Wasm makes with
// the memo off, across inputs that differ in each field the policy reads.
func TestMemoSameDecisions(t *testing.T) {
	ctx := context.Background()
	plain := mustCompile(t, fixture(t, "simple"), WithDecisionMemo(0, 0))
	memod := mustCompile(t, fixture(t, "simple"), WithDecisionMemo(1024, 4096))
	var inputs []bundles.Input
	for _, tool := range []string{"rm", "deploy", "create_issue", "x", "RM"} {
		for _, args := range []string{``, `{}`, `{"path":"/"}`, `{"path":"/tmp"}`} {
			for v := int64(0); v <= 6; v += 3 {
				inputs = append(inputs, bundles.Input{Server: "s", Tool: tool, Arguments: json.RawMessage(args),
					State: []bundles.CounterValue{{Key: "create_issue._rate_hour", Value: v}}})
			}
		}
	}
	for round := range 3 {
		for i := range inputs {
			want, err := plain.Eval(ctx, &inputs[i])
			if err != nil {
				t.Fatal(err)
			}
			got, err := memod.Eval(ctx, &inputs[i])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d, input %d (%s): memo decided %+v, Wasm %+v", round, i, inputs[i].AppendJSON(nil), got, want)
			}
		}
	}
	// Two repeats of 60 inputs in 1,024 direct-mapped slots: nearly all hit
	// (a few may share a slot and evict each other).
	if hits := memoHits(memod); hits < uint64(3*len(inputs)/2) {
		t.Errorf("%d memo hits over 2 repeats of %d inputs, want at least %d", hits, len(inputs), 3*len(inputs)/2)
	}
	if hits := memoHits(plain); hits != 0 {
		t.Errorf("memo off, yet %d hits", hits)
	}
}

// TestMemoBounds: an input over the memo's size limit is never remembered,
// the memo never holds more entries than its slots, and a hit allocates
// nothing.
func TestMemoBounds(t *testing.T) {
	ctx := context.Background()
	m := mustCompile(t, fixture(t, "simple"), WithDecisionMemo(8, 128))
	big := bundles.Input{Tool: "rm", Arguments: json.RawMessage(`{"path":"` + string(make([]byte, 0)) + fmt.Sprintf("%0200d", 0) + `"}`)}
	for range 3 {
		if _, err := m.Eval(ctx, &big); err != nil {
			t.Fatal(err)
		}
	}
	if hits := memoHits(m); hits != 0 {
		t.Errorf("an input over the limit was answered from the memo %d times", hits)
	}
	for i := range 100 {
		in := bundles.Input{Tool: fmt.Sprintf("t%d", i)}
		if _, err := m.Eval(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	stored := 0
	for i := range m.memo.slots {
		if e := m.memo.slots[i].Load(); e != nil {
			stored++
			if len(e.input) > 128 {
				t.Errorf("slot %d holds a %d-byte input", i, len(e.input))
			}
		}
	}
	if len(m.memo.slots) != 8 || stored > 8 || stored == 0 {
		t.Errorf("%d slots, %d stored; want 8 slots, 1..8 stored", len(m.memo.slots), stored)
	}
	small := bundles.Input{Tool: "rm"}
	if _, err := m.Eval(ctx, &small); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if d, err := m.Eval(ctx, &small); err != nil || d.Decision != bundles.Deny {
			t.Fatal(d, err)
		}
	}); n != 0 {
		t.Errorf("a memo hit allocates %v times, want 0", n)
	}
	if newMemo(0, 100) != nil || newMemo(100, 0) != nil {
		t.Error("a memo of 0 slots or 0 bytes should be off")
	}
	if got := len(newMemo(1000, 1).slots); got != 512 {
		t.Errorf("1000 slots rounded to %d, want 512", got)
	}
}

// TestMemoConcurrent: goroutines deciding the same few inputs at once (run
// with -race) all get the decision Wasm makes.
func TestMemoConcurrent(t *testing.T) {
	ctx := context.Background()
	m := mustCompile(t, fixture(t, "simple"), WithDecisionMemo(4, 1024))
	inputs := []bundles.Input{{Tool: "rm"}, {Tool: "deploy"}, {Tool: "x"},
		{Tool: "create_issue", State: []bundles.CounterValue{{Key: "create_issue._rate_hour", Value: 5}}},
		{Tool: "create_issue", State: []bundles.CounterValue{{Key: "create_issue._rate_hour", Value: 1}}}}
	want := make([]bundles.Decision, len(inputs))
	plain := mustCompile(t, fixture(t, "simple"), WithDecisionMemo(0, 0))
	for i := range inputs {
		var err error
		if want[i], err = plain.Eval(ctx, &inputs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 500 {
				i := (g + j) % len(inputs)
				in := inputs[i]
				d, err := m.Eval(ctx, &in)
				if err != nil {
					t.Error(err)
					return
				}
				if !reflect.DeepEqual(d, want[i]) {
					t.Errorf("input %d: got %+v, want %+v", i, d, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkEvalMemo is BenchmarkEval answered from the memo (the same input
// over and over), beside the same module evaluating every call.
func BenchmarkEvalMemo(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"off", []Option{WithDecisionMemo(0, 0)}}, {"on", nil}} {
		m := mustCompile(b, fixture(b, "simple"), tc.opts...)
		b.Run("memo="+tc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Eval(ctx, &benchInput); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
