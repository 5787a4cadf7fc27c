package differential

import (
	"context"
	"regexp"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/compiler/regogen"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// TestRegexAsGoReadsIt: a regex condition matches in the Wasm bundle
// exactly where Go's regexp matches (policy.md §3: RE2 syntax as Go reads
// it), for the patterns the older RE2 inside OPA's Wasm reads otherwise: a
// (?<name>) group (refused there, so every call was denied), Unicode
// classes holding characters newer than its tables, and case folding of
// such characters under (?i).
func TestRegexAsGoReadsIt(t *testing.T) {
	patterns := []string{"(?i)^\U0000A7C0$", "(?i)^\U00010570", "(?i)straße", "(?i)^\u01C5$", `(?i)^a\x{A7C0}b[c-e]$`, `^/srv/(?<team>[a-z]+)/`, `^\pL+$`, `^\p{Kawi}`, `\PL`, `^(?<a>x)(?P<b>y)?$`, `^[\p{Greek}\d]+$`}
	values := []string{"A\U0000A7C1BD", "a\U0000A7C0bf", "\U0000A7C1", "\U0000A7C0", "\U00010597", "STRASSE", "STRAẞE", "straße", "\u01C4", "\u01C6", "/srv/payments/x", "/srv/Pay/x", "\U0001e4d0", "\U0001e4d0\U0001e4d1", "\U00011f00", "abc", "ab1", "x", "xy", "αβ1", "", "\U00011f00 "}
	ctx := context.Background()
	for _, pat := range patterns {
		_, m := oneCondition(t, "{path: args.s, op: regex, value: "+q(pat)+"}")
		re := regexp.MustCompile(pat)
		for _, v := range values {
			args := []byte(`{"s":` + q(v) + `}`)
			d, err := m.Eval(ctx, &bundles.Input{Server: "srv", Tool: "t", Arguments: args})
			if err != nil {
				t.Fatalf("%s on %q: %v", pat, v, err)
			}
			if got, want := d.Decision == bundles.Allow, re.MatchString(v); got != want {
				t.Errorf("regex %s on %q: Wasm allows=%v, Go's regexp matches=%v", pat, v, got, want)
			}
		}
	}
}

// oneCondition compiles a policy for server srv whose tool t has one rule
// with condition cond (YAML flow syntax) into a Wasm module, as the proxy
// loads it (argument projection included).
func oneCondition(t *testing.T, cond string) (*policy.Set, *opawasm.Module) {
	t.Helper()
	ctx := context.Background()
	src := "version: \"1\"\ntools:\n  t:\n    rules:\n      - name: r\n        conditions: [" + cond + "]\n"
	set, diags := policy.Load([]policy.Source{{Path: "policies/srv.yaml", Data: []byte(src)}})
	if len(diags) > 0 {
		t.Fatalf("%s: %v", cond, diags)
	}
	wasm, err := build.CompileWasm(ctx, regogen.Generate(set))
	if err != nil {
		t.Fatalf("%s: %v", cond, err)
	}
	m, err := opawasm.Compile(ctx, wasm, regogen.Data(set), opawasm.WithArgumentPaths(build.ArgumentPaths(set)))
	if err != nil {
		t.Fatalf("%s: %v", cond, err)
	}
	t.Cleanup(m.Close)
	return set, m
}
