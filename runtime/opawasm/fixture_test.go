package opawasm

import (
	"bytes"
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
)

// compileRego compiles a Rego v1 module to a policy.wasm with the
// toolgate/decision entrypoint, as toolgate's compiler does.
func compileRego(t testing.TB, rego string) []byte {
	t.Helper()
	wasm, err := compileRegoErr(rego, "toolgate/decision")
	if err != nil {
		t.Fatalf("compiling fixture: %v", err)
	}
	return wasm
}

func compileRegoErr(rego string, entrypoints ...string) ([]byte, error) {
	mod, err := ast.ParseModuleWithOpts("policy.rego", rego, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, err
	}
	b := &bundle.Bundle{
		Data: map[string]any{},
		Modules: []bundle.ModuleFile{{
			URL: "/policy.rego", Path: "/policy.rego", Raw: []byte(rego), Parsed: mod,
		}},
	}
	var out bytes.Buffer
	c := compile.New().WithTarget("wasm").WithEntrypoints(entrypoints...).WithBundle(b).WithOutput(&out)
	if err := c.Build(context.Background()); err != nil {
		return nil, err
	}
	return c.Bundle().WasmModules[0].Raw, nil
}

// The fixture policies. Each decides from the input of policy.md §6.
const (
	// regoSimple denies tool "rm", requires approval for "deploy" and
	// allows the rest, reserving a counter for "create_issue".
	regoSimple = `package toolgate

default decision := {"decision": "allow", "rule": "", "message": "", "counters": [], "approval": null, "shadow": []}

decision := {"decision": "deny", "rule": "p.yaml#rm/no rm", "message": "Tool \"rm\" is hidden by policy", "counters": [], "approval": null, "shadow": []} if {
	input.tool.name == "rm"
}

decision := {"decision": "require_approval", "rule": "p.yaml#deploy/ask", "message": "needs a person", "counters": [], "approval": {"rule": "p.yaml#deploy/ask", "timeout_seconds": 1800}, "shadow": [{"would": "deny", "rule": "p.yaml#deploy/s", "message": "shadow é \"q\""}]} if {
	input.tool.name == "deploy"
}

decision := {"decision": "allow", "rule": "", "message": "", "counters": [{"key": "create_issue._rate_hour", "amount": 1, "limit": 5, "window": "hour", "rule": "p.yaml#create_issue/rate", "message": "Rate limit of 5 per hour reached. Try again later."}], "approval": null, "shadow": []} if {
	input.tool.name == "create_issue"
	input.state["create_issue._rate_hour"] < 5
}

decision := {"decision": "deny", "rule": "p.yaml#create_issue/rate", "message": "Rate limit of 5 per hour reached. Try again later.", "counters": [], "approval": null, "shadow": []} if {
	input.tool.name == "create_issue"
	input.state["create_issue._rate_hour"] >= 5
}
`
	// regoQuadratic counts every pair of elements of arguments.items:
	// its work grows with the square of the input.
	regoQuadratic = `package toolgate

n := count([1 | some a in input.arguments.items; some b in input.arguments.items; some c in input.arguments.items; a != b; b != c])

decision := {"decision": "allow", "rule": "", "message": "", "counters": [], "approval": null, "shadow": []} if n >= 0
`
	// regoPairs builds every pair of elements of arguments.items: its
	// memory grows with the square of the input.
	regoPairs = `package toolgate

pairs := [[a, b] | some a in input.arguments.items; some b in input.arguments.items]

decision := {"decision": "allow", "rule": "", "message": "", "counters": [], "approval": null, "shadow": []} if {
	count(pairs) > 0
}
`
)
