package model

import (
	"encoding/json"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

func TestEq(t *testing.T) {
	for _, tc := range []struct {
		in   string // input value as JSON
		val  any    // policy value as yaml.v3 decodes it
		want bool
	}{
		{`5000`, 5000.0, true},
		{`5.0`, 5, true},
		{`"5"`, 5, true},
		{`5`, "5", true},
		{`5`, "5.0", false},
		{`"true"`, true, true},
		{`true`, "true", true},
		{`null`, nil, true},
		{`null`, "<nil>", true},
		{`1e21`, "1e+21", true},
		// Numbers are read as float64, as PolicyLayer reads them (choice 12).
		{`1000000000000000000001`, "1e+21", true}, // its float64 is 1e21, which prints 1e+21
		{`1000000000000000000001`, 1e21, true},
		{`9007199254740993`, 9007199254740992, true},
		{`9007199254740993`, "9007199254740993", false}, // its float64 prints 9.007199254740992e+15
		{`9007199254740993`, "9.007199254740992e+15", true},
		{`100.000000000000001`, 100, true},
		{`0.30000000000000004`, 0.3, false},
		{`1e400`, "1e400", false},    // beyond float64: no text form
		{`5000000`, "5e+06", true},   // a call's numbers print as float64
		{`"5000000"`, 5000000, true}, // a policy's YAML ints print as integers
		{`"5e+06"`, 5000000, false},
		{`"5e+06"`, 5000000.0, true}, // a policy's YAML floats print as float64
		{`0`, "-0", false},
		{`-0`, "-0", false}, // -0 reads as 0
		{`[5]`, 5, false},
		{`{}`, "map[]", false},
		{`"héllo"`, "héllo", true},
	} {
		if got := Eq(decode(t, tc.in), tc.val); got != tc.want {
			t.Errorf("Eq(%s, %#v) = %v, want %v", tc.in, tc.val, got, tc.want)
		}
	}
}

func TestHolds(t *testing.T) {
	args := `{"s": "abc5", "n": 5, "z": null, "l": ["eng", 5], "o": {"x": {"y": 2.5}}}`
	for _, tc := range []struct {
		path, op string
		val      any
		want     bool
	}{
		{"args.missing", "neq", "x", false},
		{"args.missing", "exists", false, true},
		{"args.z", "exists", false, true},
		{"args.z", "exists", true, false},
		{"args.n", "exists", true, true},
		{"args.o.x.y", "gt", 2, true},
		{"args.o.x.y", "lte", 2.5, true},
		{"args.s", "gt", 2, false},
		{"args.s", "regex", "c5$", true},
		{"args.n", "regex", "5", false},
		{"args.s", "contains", "c5", true},
		{"args.s", "contains", 5, false}, // not a substring
		{"args.l", "contains", "5", true},
		{"args.n", "in", []any{"5", 6}, true},
		{"args.n", "not_in", []any{6}, true},
		{"args.missing", "not_in", []any{6}, false},
		{"state.run.calls", "eq", 0, true}, // an unsent counter reads 0
	} {
		in := Input{Arguments: decode(t, args)}
		c := policy.Condition{Path: tc.path, Op: tc.op, Value: tc.val}
		if got := holds(c, call{Input: &in}); got != tc.want {
			t.Errorf("%s %s %#v = %v, want %v", tc.path, tc.op, tc.val, got, tc.want)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		glob, name string
		want       bool
	}{
		{"get_*", "get_user", true},
		{"get_*", "get_", true},
		{"get_*", "list", false},
		{"*_repo", "x_repo", true},
		{"?", "é", true},
		{"??", "é", false},
		{"[a-c]*", "cé", true},
		{"[!g]?", "ab", true},
		{"[!g]?", "gb", false},
		{"[!g]?", "[!g]?", false},
	} {
		if got := globMatch(tc.glob, tc.name); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.glob, tc.name, got, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	src := `version: "1"
default: deny
hide: [secret_*]
tools:
  create_issue:
    rules:
      - name: hourly issue limit
        rate_limit: 5/hour
  delete_repo:
    rules:
      - name: ask
        action: require_approval
        approval_timeout: 30m
      - name: no prod
        conditions:
          - {path: args.repo, op: neq, value: prod}
        on_deny: Not prod.
      - name: shadow
        action: deny
        mode: shadow
  "*":
    rules:
      - name: spend
        state: {counter: spent, window: day, increment_from: args.amount}
        conditions:
          - {path: state._global.spent, op: lt, value: 100}
`
	set, diags := policy.Load([]policy.Source{{Path: "policies/github.yaml", Data: []byte(src)}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	limit99, limit5 := int64(99), int64(5)
	spend := func(amount int64) bundles.Reservation {
		return bundles.Reservation{Key: "_global.spent", Amount: amount, Limit: &limit99, Window: "day",
			Rule: "policies/github.yaml#*/spend", Message: "Rate limit exceeded for spend"}
	}
	shadow := []bundles.ShadowOutcome{{Would: "deny", Rule: "policies/github.yaml#delete_repo/shadow", Message: `Denied by rule "shadow"`}}
	for _, tc := range []struct {
		name, input string
		want        bundles.Decision
	}{
		{"unknown server", `{"server": "gitlab", "tool": {"name": "x"}}`,
			bundles.Decision{Decision: bundles.Deny, Message: `Server "gitlab" is not governed by any policy`}},
		{"hidden", `{"server": "github", "tool": {"name": "secret_x"}}`,
			bundles.Decision{Decision: bundles.Deny, Rule: "policies/github.yaml#hide", Message: `Tool "secret_x" is hidden by policy`}},
		{"not listed", `{"server": "github", "tool": {"name": "x"}}`,
			bundles.Decision{Decision: bundles.Deny, Rule: "policies/github.yaml#default", Message: `Tool "x" is not permitted by policy`}},
		{"rate limited", `{"server": "github", "tool": {"name": "create_issue"}, "arguments": {"amount": 2.9}, "state": {"create_issue._rate_hour": 6}}`,
			bundles.Decision{Decision: bundles.Deny, Rule: "policies/github.yaml#create_issue/hourly issue limit", Message: "Rate limit of 5 per hour reached. Try again later."}},
		{"counters", `{"server": "github", "tool": {"name": "create_issue"}, "arguments": {"amount": -2.9}}`,
			bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{
				{Key: "create_issue._rate_hour", Amount: 1, Limit: &limit5, Window: "hour", Rule: "policies/github.yaml#create_issue/hourly issue limit", Message: "Rate limit of 5 per hour reached. Try again later."},
				spend(-2),
			}}},
		// No amount: the counter is listed as invalid, in its turn; the
		// host denies the call when it reaches it (choice 8).
		{"no amount", `{"server": "github", "tool": {"name": "create_issue"}, "arguments": {"amount": "3"}}`,
			bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{
				{Key: "create_issue._rate_hour", Amount: 1, Limit: &limit5, Window: "hour", Rule: "policies/github.yaml#create_issue/hourly issue limit", Message: "Rate limit of 5 per hour reached. Try again later."},
				func() bundles.Reservation { r := spend(0); r.Invalid = true; return r }(),
			}}},
		{"deny beats approval", `{"server": "github", "tool": {"name": "delete_repo"}, "arguments": {"repo": "prod"}}`,
			bundles.Decision{Decision: bundles.Deny, Rule: "policies/github.yaml#delete_repo/no prod", Message: "Not prod.", Shadow: shadow}},
		{"approval", `{"server": "github", "tool": {"name": "delete_repo"}, "arguments": {"repo": "dev", "amount": 1}}`,
			bundles.Decision{Decision: bundles.RequireApproval, Rule: "policies/github.yaml#delete_repo/ask", Message: `Approval required by rule "ask"`,
				Counters: []bundles.Reservation{spend(1)},
				Approval: &bundles.Approval{Rule: "policies/github.yaml#delete_repo/ask", TimeoutSeconds: 1800}, Shadow: shadow}},
	} {
		in, err := ParseInput([]byte(tc.input))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(Decide(set, in))
		want, _ := json.Marshal(tc.want)
		if string(got) != string(want) {
			t.Errorf("%s:\ngot  %s\nwant %s", tc.name, got, want)
		}
	}
}

func decode(t *testing.T, js string) any {
	t.Helper()
	in, err := ParseInput([]byte(`{"arguments": ` + js + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return in.Arguments
}
