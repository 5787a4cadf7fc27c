package policytest

import (
	"context"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

func TestRuleMatches(t *testing.T) {
	id := "policies/x.yaml#create_issue/hourly/limit"
	for _, tc := range []struct {
		want string
		ok   bool
	}{
		{"hourly/limit", true}, {"limit", true}, {id, true}, {"hourly", false}, {"create_issue/hourly/limit", true}, {"other", false},
	} {
		if got := RuleMatches(tc.want, id); got != tc.ok {
			t.Errorf("RuleMatches(%q, %q) = %v, want %v", tc.want, id, got, tc.ok)
		}
	}
	if !RuleMatches("hide", "policies/x.yaml#hide") || RuleMatches("default", "policies/x.yaml#hide") {
		t.Error("hide/default pseudo-rules")
	}
}

func TestParseAndRun(t *testing.T) {
	f, err := Parse("policies/github_test.yaml", []byte(`cases:
  - name: passes
    tool: a
    args: {n: 1}
    identity: {subject: alice, groups: [eng]}
    state: {a.c: 2}
    expect: allow
  - name: wrong outcome
    tool: b
    expect: allow
  - name: wrong message
    tool: b
    expect: deny
    rule: r
    message: nope
`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Cases[0].Line != 2 || f.Cases[2].Line != 11 {
		t.Fatalf("case lines: got %d, %d", f.Cases[0].Line, f.Cases[2].Line)
	}
	var seen []*bundles.Input
	eval := func(_ context.Context, in *bundles.Input) (bundles.Decision, error) {
		seen = append(seen, in)
		if in.Tool == "b" {
			return bundles.Decision{Decision: bundles.Deny, Rule: "policies/github.yaml#b/r", Message: "msg"}, nil
		}
		return bundles.Decision{Decision: bundles.Allow}, nil
	}
	results, err := Run(context.Background(), []*File{f}, []string{"github", "stripe"}, eval)
	if err != nil {
		t.Fatal(err)
	}
	if seen[0].Server != "github" || string(seen[0].Arguments) != `{"n":1}` || seen[0].State[0] != (bundles.CounterValue{Key: "a.c", Value: 2}) {
		t.Fatalf("input: got %+v", seen[0])
	}
	line, failed := Summary(results)
	if line != "1 passed, 2 failed" || failed != 2 {
		t.Fatalf("summary: got %q", line)
	}
	if !strings.Contains(results[1].String(), "got deny, want allow") || !strings.Contains(results[2].String(), `got message "msg", want "nope"`) {
		t.Fatalf("failure lines:\n%s\n%s", results[1], results[2])
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{
		"cases: []",
		"cases:\n  - name: x\n    expect: allow",
		"cases:\n  - name: x\n    tool: t\n    expect: maybe",
		"cases:\n  - name: x\n    tool: t\n    expect: allow\n    bogus: 1",
		"",
	} {
		if _, err := Parse("t_test.yaml", []byte(bad)); err == nil {
			t.Errorf("Parse(%q): want an error", bad)
		}
	}
}

func TestServerNeededWhenAmbiguous(t *testing.T) {
	f := &File{Path: "policies/other_test.yaml", Cases: []Case{{Name: "x", Tool: "t", Expect: "allow"}}}
	if _, err := Run(context.Background(), []*File{f}, []string{"a", "b"}, nil); err == nil || !strings.Contains(err.Error(), "server:") {
		t.Fatalf("got %v, want an error asking for server:", err)
	}
}

// TestCounterWithoutAmount: a case whose counter has no amount is denied
// with "Internal policy error" by that counter's rule, as the host answers
// it; a decision with valid counters is left alone.
func TestCounterWithoutAmount(t *testing.T) {
	ok := bundles.Reservation{Key: "t.a", Amount: 1, Rule: "p#t/a"}
	bad := bundles.Reservation{Key: "t.b", Rule: "p#t/b", Invalid: true}
	d := asHostDecides(bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{ok, bad}})
	if d.Decision != bundles.Deny || d.Rule != "p#t/b" || d.Message != "Internal policy error" {
		t.Errorf("allow with a counter without an amount: got %+v", d)
	}
	d = asHostDecides(bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{ok}})
	if d.Decision != bundles.Allow || len(d.Counters) != 1 {
		t.Errorf("allow with valid counters: got %+v", d)
	}
}

// TestParseErrorsNameTheLine: a test file yaml.v3 cannot read is reported
// as file:line:col, one line per problem, as lint reports a policy.
func TestParseErrorsNameTheLine(t *testing.T) {
	for data, want := range map[string]string{
		"cases:\n  - {name: a, tool: t, expect: deny, state: {t.c: 1}}\n  - {name: b, tool: [x], expect: deny}\n  - {name: c, tool: t, expect: deny, args: 5}\n": "t_test.yaml:3:1: yaml: cannot unmarshal !!seq into string\n" +
			"t_test.yaml:4:1: yaml: cannot unmarshal !!int `5` into map[string]interface {}",
		"cases:\n  - {name: a, tool: t, expect: deny, state: {t.c: 1.5}}\n":   "t_test.yaml:2:1: yaml: a counter value must be a whole number, got \"1.5\"",
		"cases:\n  - {name: a, tool: t, expect: deny, state: {t.c: \"2\"}}\n": "t_test.yaml:2:1: yaml: a counter value must be a whole number, got \"2\"",
		"cases:\n  - name: a\n    tool: t\n\texpect: deny\n":                  "t_test.yaml:3:1: yaml: found a tab character that violates indentation", // yaml.v3 names the line before the tab
		"cases: \"x\n\ny\"\n": "t_test.yaml:1:1: yaml: cannot unmarshal !!str `x\\ny` into []policytest.Case",
	} {
		_, err := Parse("t_test.yaml", []byte(data))
		if err == nil || err.Error() != want {
			t.Errorf("Parse(%q):\ngot  %v\nwant %s", data, err, want)
		}
	}
}
