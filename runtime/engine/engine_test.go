package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
	"github.com/tetratelabs/wazero"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// policy returns Rego that denies every call of tool "rm" with the given
// rule and allows the rest with that rule as its message.
func policy(name string) string {
	return fmt.Sprintf(`package toolgate

default decision := {"decision": "allow", "rule": "", "message": %[1]q, "counters": [], "approval": null, "shadow": []}

decision := {"decision": "deny", "rule": %[1]q, "message": "no", "counters": [], "approval": null, "shadow": []} if {
	input.tool.name == "rm"
}
`, name)
}

// testBundle compiles rego with entrypoint into a bundle and returns it with
// a made-up digest.
func testBundle(t testing.TB, rego, entrypoint string) (string, *bundles.Bundle) {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("policy.rego", rego, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	ob := &bundle.Bundle{
		Data:    map[string]any{},
		Modules: []bundle.ModuleFile{{URL: "/policy.rego", Path: "/policy.rego", Raw: []byte(rego), Parsed: mod}},
	}
	var out bytes.Buffer
	c := compile.New().WithTarget("wasm").WithEntrypoints(entrypoint).WithBundle(ob).WithOutput(&out)
	if err := c.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	wasm := c.Bundle().WasmModules[0].Raw
	b := &bundles.Bundle{
		Manifest: bundles.Manifest{
			Revision: "rev-" + bundles.SHA256Hex([]byte(rego))[:8],
			Wasm:     []bundles.WasmResolver{{Entrypoint: bundles.Entrypoint, Module: bundles.WasmFile}},
		},
		Wasm: wasm,
		Data: []byte("{}"),
		Rego: []byte(rego),
	}
	return bundles.Digest(append(wasm, rego...)), b
}

func TestNoBundle(t *testing.T) {
	e := New()
	defer e.Close()
	if _, _, err := e.Eval(context.Background(), &bundles.Input{}); !errors.Is(err, ErrNoBundle) {
		t.Fatalf("Eval: %v, want ErrNoBundle", err)
	}
	if d, since := e.Active(); d != "" || !since.IsZero() {
		t.Fatalf("Active() = %q, %v", d, since)
	}
}

func TestSwapAndEval(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	e := New(WithClock(func() time.Time { return now }))
	defer e.Close()
	digA, a := testBundle(t, policy("A"), bundles.Entrypoint)
	if err := e.Swap(ctx, digA, a); err != nil {
		t.Fatal(err)
	}
	if d, since := e.Active(); d != digA || !since.Equal(now) {
		t.Fatalf("Active() = %q, %v", d, since)
	}
	d, info, err := e.Eval(ctx, &bundles.Input{Tool: "rm"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Decision != bundles.Deny || d.Rule != "A" || info.Digest != digA || info.Revision != a.Manifest.Revision {
		t.Fatalf("got %+v, %+v", d, info)
	}

	// Bad bundles fail and leave A in force.
	_, wrongEntrypoint := testBundle(t, "package other\n\nx := 1\n", "other/x")
	_, builtin := testBundle(t, `package toolgate

decision := {"decision": "allow", "message": sprintf("%v", [input.tool.name])}
`, bundles.Entrypoint)
	corrupt := *a
	corrupt.Wasm = a.Wasm[:len(a.Wasm)/3]
	for _, tt := range []struct {
		name string
		b    *bundles.Bundle
		want error
	}{
		{"corrupt wasm", &corrupt, opawasm.ErrInvalidModule},
		{"wrong entrypoint", wrongEntrypoint, opawasm.ErrABI},
		{"missing builtin", builtin, opawasm.ErrUnsupportedBuiltin},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.Swap(ctx, "sha256:bad-"+tt.name, tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("Swap: %v, want %v", err, tt.want)
			}
			_, info, err := e.Eval(ctx, &bundles.Input{Tool: "rm"})
			if err != nil || info.Digest != digA {
				t.Fatalf("after a failed swap: %v, %+v", err, info)
			}
		})
	}

	e.Close()
	if _, _, err := e.Eval(ctx, &bundles.Input{}); !errors.Is(err, ErrNoBundle) {
		t.Fatalf("Eval after Close: %v", err)
	}
	if err := e.Swap(ctx, digA, a); !errors.Is(err, ErrClosed) {
		t.Fatalf("Swap after Close: %v", err)
	}
}

// TestSwapUnderLoad swaps between two bundles that decide differently while
// 8 goroutines evaluate: every evaluation succeeds and matches the bundle
// that says it decided.
func TestSwapUnderLoad(t *testing.T) {
	ctx := context.Background()
	digA, a := testBundle(t, policy("A"), bundles.Entrypoint)
	digB, b := testBundle(t, policy("B"), bundles.Entrypoint)
	want := map[string]string{digA: "A", digB: "B"}
	// A file cache makes every swap after the first of each bundle cheap,
	// as it is for a proxy that rolls back to a bundle it ran before.
	cache, err := wazero.NewCompilationCacheWithDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close(ctx)
	e := New(WithModuleOptions(opawasm.WithCompilationCache(cache)))
	defer e.Close()
	if err := e.Swap(ctx, digA, a); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var evals, swaps atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := &bundles.Input{Tool: "rm"}
			if g%2 == 1 {
				in.Tool = "ls"
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, info, err := e.Eval(ctx, in)
				if err != nil {
					t.Errorf("Eval: %v", err)
					return
				}
				name, ok := want[info.Digest]
				switch {
				case !ok:
					t.Errorf("decided by unknown digest %q", info.Digest)
				case in.Tool == "rm" && (d.Decision != bundles.Deny || d.Rule != name):
					t.Errorf("bundle %s decided %+v", name, d)
				case in.Tool != "rm" && (d.Decision != bundles.Allow || d.Message != name):
					t.Errorf("bundle %s decided %+v", name, d)
				}
				evals.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// At least two seconds and ten swaps.
		deadline := time.Now().Add(2 * time.Second)
		for i := 0; i < 10 || time.Now().Before(deadline); i++ {
			dig, bun := digA, a
			if i%2 == 0 {
				dig, bun = digB, b
			}
			if err := e.Swap(ctx, dig, bun); err != nil {
				t.Errorf("Swap: %v", err)
			}
			swaps.Add(1)
			time.Sleep(3 * time.Millisecond)
		}
		close(stop)
	}()
	wg.Wait()
	t.Logf("%d evaluations across %d swaps", evals.Load(), swaps.Load())
	if swaps.Load() < 2 || evals.Load() == 0 {
		t.Fatalf("too little happened: %d evaluations, %d swaps", evals.Load(), swaps.Load())
	}
}

func TestSwapSameDigest(t *testing.T) {
	ctx := context.Background()
	e := New()
	defer e.Close()
	dig, a := testBundle(t, policy("A"), bundles.Entrypoint)
	if err := e.Swap(ctx, dig, a); err != nil {
		t.Fatal(err)
	}
	_, since := e.Active()
	if err := e.Swap(ctx, dig, a); err != nil {
		t.Fatal(err)
	}
	if _, again := e.Active(); !again.Equal(since) {
		t.Fatal("swapping in the active digest replaced it")
	}
}
