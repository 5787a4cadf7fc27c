package opawasm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

var (
	fixtureOnce sync.Once
	fixtures    map[string][]byte
)

// fixture returns the compiled Wasm of a fixture policy, compiled once per
// test binary.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtures = map[string][]byte{}
		for name, rego := range map[string]string{"simple": regoSimple, "quadratic": regoQuadratic, "pairs": regoPairs} {
			wasm, err := compileRegoErr(rego, bundles.Entrypoint)
			if err != nil {
				panic(fmt.Sprintf("compiling %s: %v", name, err))
			}
			fixtures[name] = wasm
		}
	})
	return fixtures[name]
}

func mustCompile(t testing.TB, wasm []byte, opts ...Option) *Module {
	t.Helper()
	m, err := Compile(context.Background(), wasm, nil, opts...)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

func i64(v int64) *int64 { return &v }

func TestEval(t *testing.T) {
	m := mustCompile(t, fixture(t, "simple"))
	tests := []struct {
		name string
		in   bundles.Input
		want bundles.Decision
	}{
		{"zero input", bundles.Input{}, bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{}, Shadow: []bundles.ShadowOutcome{}}},
		{"deny", bundles.Input{Server: "s", Tool: "rm", Arguments: json.RawMessage(`{"path":"/"}`)},
			bundles.Decision{Decision: bundles.Deny, Rule: "p.yaml#rm/no rm", Message: `Tool "rm" is hidden by policy`, Counters: []bundles.Reservation{}, Shadow: []bundles.ShadowOutcome{}}},
		{"approval", bundles.Input{Tool: "deploy"}, bundles.Decision{
			Decision: bundles.RequireApproval, Rule: "p.yaml#deploy/ask", Message: "needs a person", Counters: []bundles.Reservation{},
			Approval: &bundles.Approval{Rule: "p.yaml#deploy/ask", TimeoutSeconds: 1800},
			Shadow:   []bundles.ShadowOutcome{{Would: "deny", Rule: "p.yaml#deploy/s", Message: `shadow é "q"`}},
		}},
		{"counter", bundles.Input{Tool: "create_issue", State: []bundles.CounterValue{{Key: "create_issue._rate_hour", Value: 3}}}, bundles.Decision{
			Decision: bundles.Allow, Counters: []bundles.Reservation{{
				Key: "create_issue._rate_hour", Amount: 1, Limit: i64(5), Window: "hour",
				Rule: "p.yaml#create_issue/rate", Message: "Rate limit of 5 per hour reached. Try again later.",
			}}, Shadow: []bundles.ShadowOutcome{},
		}},
		{"counter full", bundles.Input{Tool: "create_issue", State: []bundles.CounterValue{{Key: "create_issue._rate_hour", Value: 5}}}, bundles.Decision{
			Decision: bundles.Deny, Rule: "p.yaml#create_issue/rate", Message: "Rate limit of 5 per hour reached. Try again later.",
			Counters: []bundles.Reservation{}, Shadow: []bundles.ShadowOutcome{},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 { // instances are reused: the heap must reset
				got, err := m.Eval(context.Background(), &tt.in)
				if err != nil {
					t.Fatalf("Eval: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got  %+v\nwant %+v", got, tt.want)
				}
			}
		})
	}
}

func TestEvalInputErrors(t *testing.T) {
	m := mustCompile(t, fixture(t, "simple"), WithMaxInputBytes(4096), WithMaxDepth(8))
	deep := strings.Repeat(`{"a":`, 8) + "1" + strings.Repeat("}", 8)
	tests := []struct {
		name string
		in   bundles.Input
		want error
	}{
		{"invalid arguments", bundles.Input{Arguments: json.RawMessage(`{"a":}`)}, ErrInvalidInput},
		{"injected key", bundles.Input{Arguments: json.RawMessage(`{}, "server": "x"`)}, ErrInvalidInput},
		{"arguments not an object", bundles.Input{Arguments: json.RawMessage(`[1]`)}, ErrInvalidInput},
		{"invalid claims", bundles.Input{Identity: bundles.Identity{Claims: json.RawMessage(`{"a":"\xff"}`)}}, ErrInvalidInput},
		{"lone surrogate", bundles.Input{Annotations: json.RawMessage(`{"a":"\ud800"}`)}, ErrInvalidInput},
		{"too deep arguments", bundles.Input{Arguments: json.RawMessage(deep)}, ErrInputTooDeep},
		{"too deep claims", bundles.Input{Identity: bundles.Identity{Claims: json.RawMessage(strings.Repeat(`{"a":`, 7) + "1" + strings.Repeat("}", 7))}}, ErrInputTooDeep},
		{"too large raw", bundles.Input{Arguments: json.RawMessage(`{"a":"` + strings.Repeat("x", 5000) + `"}`)}, ErrInputTooLarge},
		{"too large encoded", bundles.Input{Identity: bundles.Identity{Groups: make([]string, 2000)}}, ErrInputTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Eval(context.Background(), &tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Eval: %v, want %v", err, tt.want)
			}
		})
	}
	// Depth 7 under arguments is 8 in all: allowed.
	ok := bundles.Input{Arguments: json.RawMessage(strings.Repeat(`{"a":`, 7) + "1" + strings.Repeat("}", 7))}
	if _, err := m.Eval(context.Background(), &ok); err != nil {
		t.Fatalf("Eval at the depth limit: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	ctx := context.Background()
	simple := fixture(t, "simple")
	otherEntrypoint, err := compileRegoErr("package other\n\nx := 1\n", "other/x")
	if err != nil {
		t.Fatal(err)
	}
	withBuiltin := compileRego(t, "package toolgate\n\ndecision := {\"decision\": \"allow\", \"message\": sprintf(\"%v\", [input.tool.name])}\n")
	tests := []struct {
		name string
		wasm []byte
		data []byte
		opts []Option
		want error
	}{
		{"not wasm", []byte("not wasm"), nil, nil, ErrInvalidModule},
		{"truncated", simple[:len(simple)/2], nil, nil, ErrInvalidModule},
		{"env only", envWasm(1, 2), nil, nil, ErrABI},
		{"wrong entrypoint", otherEntrypoint, nil, nil, ErrABI},
		{"builtin", withBuiltin, nil, nil, ErrUnsupportedBuiltin},
		{"bad data", simple, []byte(`{"a":`), nil, ErrInvalidData},
		{"page limit below the module's minimum", simple, nil, []Option{WithMemoryLimitPages(1)}, ErrInvalidModule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(ctx, tt.wasm, tt.data, tt.opts...)
			if m != nil {
				m.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Compile: %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestEnvMemoryLimits(t *testing.T) {
	m := mustCompile(t, fixture(t, "simple"), WithMemoryLimitPages(77))
	inst := m.fast.pool.take()
	if inst == nil {
		t.Fatal("no warm instance")
	}
	defer inst.close()
	max, ok := inst.mem.Definition().Max()
	if !ok || max != 77 {
		t.Fatalf("memory max = %d, %v; want 77", max, ok)
	}
	if _, ok := inst.mem.Grow(78 - inst.mem.Size()/65536); ok {
		t.Fatal("memory grew past its maximum")
	}
}

func itemsInput(n int) *bundles.Input {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", i)
	}
	b.WriteString("]}")
	return &bundles.Input{Tool: "t", Arguments: json.RawMessage(b.String())}
}

func TestTimeout(t *testing.T) {
	m := mustCompile(t, fixture(t, "quadratic"), WithGuardThreshold(1024), WithTimeout(50*time.Millisecond))
	// 400 items: 64 million steps, far over 50 ms.
	start := time.Now()
	_, err := m.Eval(context.Background(), itemsInput(400))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Eval: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stopped after %v", d)
	}
	// A cancelled context stops it too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	if _, err := m.Eval(ctx, itemsInput(400)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Eval: %v, want context.Canceled", err)
	}
	// The pools still work, on both paths.
	for _, in := range []*bundles.Input{itemsInput(3), padded(itemsInput(3), 2000)} {
		if _, err := m.Eval(context.Background(), in); err != nil {
			t.Fatalf("Eval after timeout: %v", err)
		}
	}
}

// padded adds a key of n bytes to the arguments of in.
func padded(in *bundles.Input, n int) *bundles.Input {
	args := string(in.Arguments[:len(in.Arguments)-1]) + `,"pad":"` + strings.Repeat("x", n) + `"}`
	in.Arguments = json.RawMessage(args)
	return in
}

func TestMemoryLimit(t *testing.T) {
	m := mustCompile(t, fixture(t, "pairs"), WithMemoryLimitPages(64))
	_, err := m.Eval(context.Background(), itemsInput(2000)) // 4 million pairs
	if !errors.Is(err, ErrMemoryLimit) || !errors.Is(err, ErrAbort) {
		t.Fatalf("Eval: %v, want ErrMemoryLimit", err)
	}
	t.Log(err)
	for range 3 {
		if _, err := m.Eval(context.Background(), itemsInput(10)); err != nil {
			t.Fatalf("Eval after the memory limit: %v", err)
		}
	}
	// An input that does not fit in memory at all is refused before Wasm.
	small := mustCompile(t, fixture(t, "simple"), WithMemoryLimitPages(4), WithGuardThreshold(1<<20))
	_, err = small.Eval(context.Background(), &bundles.Input{Arguments: json.RawMessage(`{"a":"` + strings.Repeat("x", 300<<10) + `"}`)})
	if !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("Eval: %v, want ErrMemoryLimit", err)
	}
}

func TestLargeInputGrowsMemory(t *testing.T) {
	// A generous timeout: the race detector slows the guarded path a lot.
	m := mustCompile(t, fixture(t, "simple"), WithTimeout(10*time.Second))
	in := &bundles.Input{Tool: "rm", Arguments: json.RawMessage(`{"a":"` + strings.Repeat("x", 900<<10) + `"}`)}
	for range 3 {
		start := time.Now()
		d, err := m.Eval(context.Background(), in)
		t.Logf("%d-byte input decided in %v", len(in.Arguments), time.Since(start))
		if err != nil {
			t.Fatalf("Eval: %v", err)
		}
		if d.Decision != bundles.Deny {
			t.Fatalf("decision %q, want deny", d.Decision)
		}
	}
}

func TestConcurrentEval(t *testing.T) {
	m := mustCompile(t, fixture(t, "simple"), WithMaxIdle(2))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tool, want := "x", bundles.Allow
			if g%2 == 0 {
				tool, want = "rm", bundles.Deny
			}
			for range 200 {
				d, err := m.Eval(context.Background(), &bundles.Input{Tool: tool})
				if err != nil {
					t.Error(err)
					return
				}
				if d.Decision != want {
					t.Errorf("decision %q, want %q", d.Decision, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestEvalAfterClose(t *testing.T) {
	m, err := Compile(context.Background(), fixture(t, "simple"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close()
	if _, err := m.Eval(context.Background(), &bundles.Input{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Eval: %v, want ErrClosed", err)
	}
}
