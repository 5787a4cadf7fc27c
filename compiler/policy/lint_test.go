package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// want is one expected diagnostic: its exact "file:line:col" and a
// substring of its message.
type want struct {
	at  string
	msg string
}

// lintCase is one policy file set and every diagnostic it must produce.
type lintCase struct {
	name  string
	files []Source // linted together with Load
	want  []want
}

// one is a single file named p.yaml.
func one(yaml string) []Source {
	return []Source{{Path: "p.yaml", Data: []byte(strings.TrimPrefix(yaml, "\n"))}}
}

// two is two files governing one server.
func two(pathA, a, pathB, b string) []Source {
	return []Source{
		{Path: pathA, Data: []byte(strings.TrimPrefix(a, "\n"))},
		{Path: pathB, Data: []byte(strings.TrimPrefix(b, "\n"))},
	}
}

// ruleFile wraps rule lines (indented for a rule's fields, the first line
// being "- name: r" at column 7) into a file whose rule starts at 5:9.
func ruleFile(rule string) []Source {
	return one(`
version: "1"
tools:
  get_x:
    rules:
` + strings.TrimPrefix(rule, "\n"))
}

var lintCases = []lintCase{
	// version
	{"missing version", one(`
default: allow
`), []want{{"p.yaml:1:1", `version: missing`}}},
	{"wrong version", one(`
version: 2
`), []want{{"p.yaml:1:10", `version: must be "1" (PolicyLayer policy v1), got 2`}}},
	{"wrong version string", one(`
version: "1.0"
`), []want{{"p.yaml:1:10", `version: must be "1" (PolicyLayer policy v1), got "1.0"`}}},
	{"version as float", one(`
version: 1.0
`), []want{{"p.yaml:1:10", `version: must be "1"`}}},

	// default
	{"bad default", one(`
version: "1"
default: allw
`), []want{{"p.yaml:2:10", `default: must be "allow" or "deny", got "allw"`}}},
	{"default not a string", one(`
version: "1"
default: [deny]
`), []want{{"p.yaml:2:10", `default: must be a string, got a list`}}},

	// hide
	{"empty hide entry", one(`
version: "1"
hide:
  - list_a
  - ""
`), []want{{"p.yaml:4:5", `hide: empty tool name`}}},
	{"blank hide entry", one(`
version: "1"
hide: ["  "]
`), []want{{"p.yaml:2:8", `hide: empty tool name`}}},
	{"duplicate hide entry", one(`
version: "1"
hide: [a, b, a]
`), []want{{"p.yaml:2:14", `hide: "a" is listed twice`}}},

	// unknown fields, with a did-you-mean
	{"unknown top field", one(`
version: "1"
defualt: deny
`), []want{{"p.yaml:2:1", `unknown field "defualt" (did you mean "default"?)`}}},
	{"unknown top field without suggestion", one(`
version: "1"
owner: payments
`), []want{{"p.yaml:2:1", `unknown field "owner" (known here: version, description, default, hide, tools, server, mode)`}}},
	{"unknown tool field", one(`
version: "1"
tools:
  get_x:
    rule: []
`), []want{{"p.yaml:4:5", `unknown field "rule" (did you mean "rules"?)`}}},
	{"unknown rule field", ruleFile(`
      - name: r
        conditions:
          - {path: args.a, op: exists, value: true}
        on_denny: no
`), []want{{"p.yaml:8:9", `unknown field "on_denny" (did you mean "on_deny"?)`}}},
	{"unknown condition field", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: eq
            valeu: 1
`), []want{
		{"p.yaml:7:13", `conditions: eq needs a value`},
		{"p.yaml:9:13", `unknown field "valeu" (did you mean "value"?)`},
	}},
	{"unknown state field", ruleFile(`
      - name: r
        state:
          counter: c
          window: hour
          incremnt: 2
        conditions:
          - {path: state.get_x.c, op: lte, value: 5}
`), []want{{"p.yaml:9:11", `unknown field "incremnt" (did you mean "increment"?)`}}},
	{"field given twice", one(`
version: "1"
default: allow
default: deny
`), []want{{"p.yaml:3:1", `default: given twice`}}},

	// rules
	{"rule without name", ruleFile(`
      - action: deny
`), []want{{"p.yaml:5:9", "tools.get_x: rule: `name` is required"}}},
	{"rule with empty name", ruleFile(`
      - name: ""
        action: deny
`), []want{{"p.yaml:5:9", "`name` is required"}}},
	{"two rules with one name", ruleFile(`
      - {name: r, action: deny}
      - {name: r, action: deny}
`), []want{{"p.yaml:6:9", `rule "r": another rule of "get_x" has the same name`}}},
	{"unknown action", ruleFile(`
      - name: r
        action: dney
`), []want{{"p.yaml:6:17", `tools.get_x: rule "r": unknown action "dney" (did you mean "deny"?)`}}},
	{"unknown action without suggestion", ruleFile(`
      - name: r
        action: block
`), []want{{"p.yaml:6:17", `unknown action "block" (want evaluate, deny or require_approval)`}}},
	{"empty action", ruleFile(`
      - name: r
        action: ""
`), []want{{"p.yaml:6:17", `unknown action ""`}}},
	{"deny rule with conditions", ruleFile(`
      - name: r
        action: deny
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:5:9", `tools.get_x: rule "r": a deny rule always denies and takes no conditions`}}},
	{"evaluate rule without conditions", ruleFile(`
      - name: r
        on_deny: no
`), []want{{"p.yaml:5:9", `tools.get_x: rule "r": an evaluate rule needs at least one condition`}}},
	{"evaluate rule with empty conditions", ruleFile(`
      - name: r
        action: evaluate
        conditions: []
`), []want{{"p.yaml:5:9", `an evaluate rule needs at least one condition`}}},

	// conditions
	{"bad path prefix", ruleFile(`
      - name: r
        conditions:
          - path: arg.a
            op: exists
            value: true
`), []want{{"p.yaml:7:19", `conditions: path "arg.a": must start with args. or state.`}}},
	{"path with empty element", ruleFile(`
      - name: r
        conditions:
          - {path: args.a..b, op: exists, value: true}
`), []want{{"p.yaml:7:20", `path "args.a..b": has an empty element`}}},
	{"condition without path", ruleFile(`
      - name: r
        conditions:
          - op: exists
            value: true
`), []want{{"p.yaml:7:13", `conditions: condition needs a path`}}},
	{"unknown operator", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: eqq
            value: 1
`), []want{{"p.yaml:8:17", `conditions: unknown operator "eqq" (did you mean "eq"?)`}}},
	{"unknown operator without suggestion", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: startswith
            value: x
`), []want{{"p.yaml:8:17", `unknown operator "startswith" (known: eq, neq, in, not_in, lt, lte, gt, gte, regex, contains, exists)`}}},
	{"in without list", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: in
            value: usd
`), []want{{"p.yaml:9:20", `conditions: in needs a list value`}}},
	{"not_in without list", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: not_in
            value: {a: 1}
`), []want{{"p.yaml:9:20", `conditions: not_in needs a list value`}}},
	{"in with nested list", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: in
            value: [a, [b]]
`), []want{{"p.yaml:9:20", `in needs a list of single values`}}},
	{"lt without number", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: lt
            value: "5"
`), []want{{"p.yaml:9:20", `conditions: lt needs a number value, got the string "5"`}}},
	{"gte without value", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: gte
`), []want{{"p.yaml:7:13", `conditions: gte needs a value`}}},
	{"lte with null", ruleFile(`
      - name: r
        conditions:
          - {path: args.a, op: lte, value: null}
`), []want{{"p.yaml:7:44", `lte needs a number value, got null`}}},
	{"gt with infinity", ruleFile(`
      - name: r
        conditions:
          - {path: args.a, op: gt, value: .inf}
`), []want{{"p.yaml:7:43", `gt value must be a finite number`}}},
	{"exists without bool", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: exists
            value: 1
`), []want{{"p.yaml:9:20", `conditions: exists needs true or false, got 1`}}},
	{"regex not a string", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: regex
            value: 5
`), []want{{"p.yaml:9:20", `conditions: regex needs a string pattern, got 5`}}},
	{"regex does not compile", ruleFile(`
      - name: r
        conditions:
          - path: args.a
            op: regex
            value: "^(a"
`), []want{{"p.yaml:9:20", `conditions: regex pattern does not compile: error parsing regexp: missing closing )`}}},
	{"eq with a list", ruleFile(`
      - name: r
        conditions:
          - {path: args.a, op: eq, value: [1]}
`), []want{{"p.yaml:7:43", `eq needs a single value`}}},
	{"bad when condition", ruleFile(`
      - name: r
        action: deny
        when:
          - {path: identity.role, op: eq, value: admin}
`), []want{{"p.yaml:8:20", `when: path "identity.role": must start with args. or state.`}}},

	// state
	{"empty counter name", ruleFile(`
      - name: r
        state:
          counter: ""
          window: hour
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:7:20", `tools.get_x: rule "r": state.counter must not be empty`}}},
	{"missing counter name", ruleFile(`
      - name: r
        state:
          window: hour
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:7:11", `state.counter is required`}}},
	{"bad window", ruleFile(`
      - name: r
        state:
          counter: c
          window: week
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:8:19", `tools.get_x: rule "r": state.window "week" must be minute, hour or day`}}},
	{"bad increment", ruleFile(`
      - name: r
        state:
          counter: c
          window: day
          increment: -1
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:9:22", `state.increment must be a whole number, 1 or more (0 means 1, the default), got -1`}}},
	{"increment_from not under args", ruleFile(`
      - name: r
        state:
          counter: spend
          window: day
          increment_from: amount
        conditions:
          - {path: args.amount, op: exists, value: true}
`), []want{{"p.yaml:9:27", `tools.get_x: rule "r": state.increment_from "amount" must be a path under args.`}}},
	{"increment and increment_from", ruleFile(`
      - name: r
        state:
          counter: spend
          window: day
          increment: 2
          increment_from: args.amount
        conditions:
          - {path: state.get_x.spend, op: lte, value: 100}
`), []want{{"p.yaml:7:11", `state takes increment or increment_from, not both`}}},
	{"state condition on undefined counter", ruleFile(`
      - name: r
        conditions:
          - path: state.get_x.calls
            op: lte
            value: 5
`), []want{{"p.yaml:7:13", `tools.get_x: rule "r": state.get_x.calls reads counter "calls" of scope "get_x", which no rule of server "p" defines`}}},
	{"state condition on another tool's counter", one(`
version: "1"
tools:
  a:
    rules:
      - name: r
        state: {counter: calls, window: hour}
        conditions:
          - {path: state.a.calls, op: lte, value: 5}
  "*":
    rules:
      - name: g
        conditions:
          - {path: state._global.calls, op: lte, value: 5}
`), []want{{"p.yaml:13:13", `reads counter "calls" of scope "_global"`}}},
	{"state path without counter", ruleFile(`
      - name: r
        conditions:
          - {path: state.calls, op: lte, value: 5}
`), []want{{"p.yaml:7:20", `path "state.calls": must be state.<scope>.<counter>`}}},

	// rate_limit
	{"rate_limit zero", ruleFile(`
      - name: r
        rate_limit: 0/minute
`), []want{{"p.yaml:6:21", `tools.get_x: rule "r": rate_limit "0/minute" must be N/minute, N/hour or N/day with N a positive whole number`}}},
	{"rate_limit bad window", ruleFile(`
      - name: r
        rate_limit: 5/week
`), []want{{"p.yaml:6:21", `rate_limit "5/week" must be N/minute, N/hour or N/day`}}},
	{"rate_limit not a rate", ruleFile(`
      - name: r
        rate_limit: abc
`), []want{{"p.yaml:6:21", `rate_limit "abc" must be N/minute`}}},
	{"rate_limit without window", ruleFile(`
      - name: r
        rate_limit: 5
`), []want{{"p.yaml:6:21", `rate_limit "5" must be N/minute`}}},
	{"rate_limit negative", ruleFile(`
      - name: r
        rate_limit: "-1/day"
`), []want{{"p.yaml:6:21", `rate_limit "-1/day" must be N/minute`}}},
	{"rate_limit not a string", ruleFile(`
      - name: r
        rate_limit: [5, minute]
`), []want{{"p.yaml:6:21", `rate_limit: must be a string, got a list`}}},
	{"rate_limit with conditions", ruleFile(`
      - name: r
        rate_limit: 5/minute
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:6:21", `tools.get_x: rule "r": rate_limit cannot be combined with conditions`}}},
	{"rate_limit with state", ruleFile(`
      - name: r
        rate_limit: 5/minute
        state: {counter: c, window: minute}
`), []want{{"p.yaml:6:21", `tools.get_x: rule "r": rate_limit cannot be combined with state`}}},
	{"rate_limit with action deny", ruleFile(`
      - name: r
        action: deny
        rate_limit: 5/minute
`), []want{{"p.yaml:7:21", `tools.get_x: rule "r": rate_limit cannot be combined with action: deny`}}},
	{"rate_limit with require_approval", ruleFile(`
      - name: r
        action: require_approval
        rate_limit: 5/minute
`), []want{{"p.yaml:7:21", `rate_limit cannot be combined with action: require_approval`}}},

	// extensions
	{"approval_timeout without require_approval", ruleFile(`
      - name: r
        action: deny
        approval_timeout: 30m
`), []want{{"p.yaml:7:27", `tools.get_x: rule "r": approval_timeout needs action: require_approval`}}},
	{"approval_timeout not a duration", ruleFile(`
      - name: r
        action: require_approval
        approval_timeout: soon
`), []want{{"p.yaml:7:27", `approval_timeout: "soon" is not a positive duration such as 30m`}}},
	{"approvers without require_approval", ruleFile(`
      - name: r
        action: deny
        approvers: {subjects: [alice]}
`), []want{{"p.yaml:7:20", `tools.get_x: rule "r": approvers needs action: require_approval`}}},
	{"approvers not a mapping", ruleFile(`
      - name: r
        action: require_approval
        approvers: [alice]
`), []want{{"p.yaml:7:20", `approvers: must be a mapping with subjects and/or groups, got a list`}}},
	{"approvers bad entries", ruleFile(`
      - name: r
        action: require_approval
        approvers:
          subjects: [alice, alice, ""]
          groups: leads
          team: [x]
`), []want{
		{"p.yaml:8:29", `approvers.subjects: "alice" is listed twice`},
		{"p.yaml:8:36", `approvers.subjects: empty name`},
		{"p.yaml:9:19", `approvers.groups: must be a list of names, got a scalar`},
		{"p.yaml:10:11", `unknown field "team"`},
	}},
	{"approvers empty", ruleFile(`
      - name: r
        action: require_approval
        approvers: {subjects: []}
`), []want{{"p.yaml:7:20", `approvers: name at least one subject or group`}}},
	{"require_approval with conditions", ruleFile(`
      - name: r
        action: require_approval
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:5:9", "a require_approval rule takes `when:`, not `conditions:`"}}},
	{"empty when", ruleFile(`
      - name: r
        action: deny
        when: []
`), []want{{"p.yaml:7:15", `when: an empty list`}}},
	{"bad rule mode", ruleFile(`
      - name: r
        action: deny
        mode: dry
`), []want{{"p.yaml:7:15", `mode: must be "shadow" or "enforce", got "dry"`}}},
	{"bad file mode and empty server", one(`
version: "1"
mode: dry-run
server: ""
`), []want{
		{"p.yaml:2:7", `mode: must be "shadow" or "enforce", got "dry-run"`},
		{"p.yaml:3:9", `server: must not be empty`},
	}},

	// counters defined twice
	{"counter defined twice in one file", ruleFile(`
      - name: a
        state: {counter: calls, window: hour}
        conditions:
          - {path: state.get_x.calls, op: lte, value: 5}
      - name: b
        state:
          counter: calls
          window: day
        conditions:
          - {path: args.a, op: exists, value: true}
`), []want{{"p.yaml:11:11", `tools.get_x: rule "b": counter "calls" is already defined for this tool at p.yaml:6:16`}}},
	{"rate_limit defined twice in one file", ruleFile(`
      - name: a
        rate_limit: 5/hour
      - name: b
        rate_limit: 9/hour
`), []want{{"p.yaml:8:21", `rule "b": counter "_rate_hour" is already defined for this tool at p.yaml:6:21`}}},
	{"counter defined twice in two files of one server", two("team1/github.yaml", `
version: "1"
tools:
  create_issue:
    rules:
      - name: a
        state: {counter: calls, window: hour}
        conditions:
          - {path: state.create_issue.calls, op: lte, value: 5}
`, "team2/github.yaml", `
version: "1"
tools:
  create_issue:
    rules:
      - name: b
        state: {counter: calls, window: day}
        conditions:
          - {path: state.create_issue.calls, op: lte, value: 50}
`), []want{{"team2/github.yaml:6:16", `tools.create_issue: rule "b": counter "calls" is already defined for this tool at team1/github.yaml:6:16`}}},
	{"same counter on two tools is fine, server: joins files", two("a.yaml", `
version: "1"
server: github
tools:
  x:
    rules:
      - name: a
        state: {counter: calls, window: hour}
        conditions:
          - {path: state.x.calls, op: lte, value: 5}
`, "b.yaml", `
version: "1"
server: github
tools:
  y:
    rules:
      - name: b
        state: {counter: calls, window: hour}
        conditions:
          - {path: state.x.calls, op: lte, value: 5}
`), nil},

	// files of one server disagreeing on default
	{"default disagrees across files", two("payments/stripe.yaml", `
version: "1"
default: allow
`, "platform/stripe.yaml", `
version: "1"
default: deny
`), []want{{"platform/stripe.yaml:2:10", `default: "deny" in platform/stripe.yaml disagrees with default "allow" in payments/stripe.yaml; both files govern server "stripe"`}}},
	{"absent default disagrees with deny", two("a.yaml", `
version: "1"
server: stripe
default: deny
`, "b.yaml", `
version: "1"
server: stripe
`), []want{{"b.yaml:1:1", `default: "allow" in b.yaml disagrees with default "deny" in a.yaml`}}},
	{"files of different servers may differ", two("a/stripe.yaml", `
version: "1"
default: deny
`, "a/github.yaml", `
version: "1"
`), nil},

	// YAML and file shape
	{"yaml syntax error", one(`
version: "1"
tools:
  get_x:
    rules: [
`), []want{{"p.yaml:4:1", `yaml: did not find expected node content`}}},
	{"yaml tab indentation", one(`
version: "1"
tools:
  get_x:
` + "\t" + `rules: []
`), []want{{"p.yaml:4:1", `yaml: found character that cannot start any token`}}},
	{"yaml unterminated string", one(`
version: "1"
description: "policy
`), []want{{"p.yaml:2:1", `yaml: found unexpected end of stream`}}},
	{"empty file", one(``), []want{{"p.yaml:1:1", `empty policy file`}}},
	{"not a mapping", one(`
- version: "1"
`), []want{{"p.yaml:1:1", `a policy file must be a mapping`}}},
	{"alias", one(`
version: "1"
description: &d x
default: *d
`), []want{{"p.yaml:3:10", `default: YAML aliases are not supported`}}},

	// several problems in one file: every one is reported, in file order
	{"several problems", one(`
version: "2"
default: block
hide: [a, a, ""]
tools:
  get_x:
    rules:
      - action: deny
        conditions:
          - {path: args.a, op: exists, value: true}
      - name: r2
        conditions:
          - {path: amount, op: gt, value: "5"}
          - {path: args.a, op: like, value: x}
      - name: r3
        rate_limit: 5/fortnight
      - name: r4
        state: {counter: "", window: week, increment_from: total}
        conditions:
          - {path: state.get_x.nope, op: lte, value: 1}
  get_y:
    rulez: []
`), []want{
		{"p.yaml:1:10", `version: must be "1"`},
		{"p.yaml:2:10", `default: must be "allow" or "deny", got "block"`},
		{"p.yaml:3:11", `hide: "a" is listed twice`},
		{"p.yaml:3:14", `hide: empty tool name`},
		{"p.yaml:7:9", "`name` is required"},
		{"p.yaml:7:9", `a deny rule always denies and takes no conditions`},
		{"p.yaml:12:20", `path "amount": must start with args.`},
		{"p.yaml:12:43", `gt needs a number value`},
		{"p.yaml:13:32", `unknown operator "like" (did you mean "lte"?)`},
		{"p.yaml:15:21", `rate_limit "5/fortnight"`},
		{"p.yaml:17:26", `state.counter must not be empty`},
		{"p.yaml:17:38", `state.window "week"`},
		{"p.yaml:17:60", `state.increment_from "total"`},
		{"p.yaml:21:5", `unknown field "rulez" (did you mean "rules"?)`},
		// Lint's cross-rule checks come after Parse's.
		{"p.yaml:19:13", `reads counter "nope"`},
	}},
}

func TestLintErrors(t *testing.T) {
	for _, tc := range lintCases {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Load(tc.files)
			checkDiags(t, diags, tc.want)
		})
	}
}

// checkDiags asserts that diags are exactly want, in order.
func checkDiags(t *testing.T, diags []Diagnostic, want []want) {
	t.Helper()
	for i := 0; i < max(len(diags), len(want)); i++ {
		var got string
		if i < len(diags) {
			got = diags[i].String()
		}
		if i >= len(want) {
			t.Errorf("extra diagnostic: %s", got)
			continue
		}
		w := want[i]
		if i >= len(diags) {
			t.Errorf("missing diagnostic: got none, want %s: …%s…", w.at, w.msg)
			continue
		}
		d := diags[i]
		if at := fmt.Sprintf("%s:%d:%d", d.Path, d.Pos.Line, d.Pos.Col); at != w.at || !strings.Contains(d.Msg, w.msg) {
			t.Errorf("diagnostic %d:\ngot  %s\nwant %s: …%s…", i, got, w.at, w.msg)
		}
	}
}

// A file that uses every extension lints clean and keeps what it says.
func TestExtensionFileLintsClean(t *testing.T) {
	const path = "testdata/extensions.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set, diags := Load([]Source{{Path: path, Data: data}})
	for _, d := range diags {
		t.Errorf("%s", d)
	}
	if len(set.Servers) != 1 || set.Servers[0].Name != "github" || set.Servers[0].Default != "deny" {
		t.Fatalf("servers: got %+v, want one server github with default deny", set.Servers)
	}
	f := set.Files[0]
	if got, want := f.Mode, ModeShadow; got != want {
		t.Errorf("file mode: got %q, want %q", got, want)
	}
	var hide []string
	for _, h := range f.Hide {
		hide = append(hide, h.Value)
	}
	if got, want := strings.Join(hide, ","), "delete_*,admin_?"; got != want {
		t.Errorf("hide: got %s, want %s", got, want)
	}
	var keys []string
	rules := map[string]Rule{}
	for _, tl := range f.Tools {
		keys = append(keys, tl.Key)
		for _, r := range tl.Rules {
			rules[r.Name] = r
		}
	}
	if got, want := strings.Join(keys, ","), "create_issue,get_*,*_repo,*"; got != want {
		t.Errorf("tool keys: got %s, want %s", got, want)
	}
	appr := rules["approve merges"]
	if appr.Action != ActionRequireApproval || appr.ApprovalTimeout.String() != "30m0s" || len(appr.When) != 2 {
		t.Errorf("approve merges: got %+v, want require_approval, 30m, two when conditions", appr)
	}
	if r := rules["default timeout"]; r.ApprovalTimeout != DefaultApprovalTimeout {
		t.Errorf("default timeout: got %v, want %v", r.ApprovalTimeout, DefaultApprovalTimeout)
	}
	if r := rules["new limit"]; r.Mode != ModeShadow {
		t.Errorf("new limit mode: got %q, want shadow", r.Mode)
	}
	rl := rules["hourly"]
	if rl.RateLimit == nil || rl.RateLimit.N != 10 || rl.RateLimit.Window != "hour" ||
		rl.State == nil || rl.State.Counter != "_rate_hour" || len(rl.Conditions) != 1 ||
		rl.Conditions[0].Path != "state.get_*._rate_hour" || !rl.Conditions[0].Generated ||
		rl.OnDeny != "Rate limit of 10 per hour reached. Try again later." {
		t.Errorf("hourly: got %+v, want rate_limit 10/hour expanded under scope get_*", rl)
	}
}

// A rate_limit rule whose on_deny is empty says the rate-limit message, at
// step 3 and on a refused reservation alike: an empty on_deny is no message
// for every other rule too (found by a spec audit: it said `Denied by rule
// "rl"` at step 3 and `Rate limit exceeded for rl` when refused).
func TestRateLimitEmptyOnDeny(t *testing.T) {
	for _, onDeny := range []string{`on_deny: ""`, ``, `on_deny:`, `on_deny: ~`} {
		src := "version: \"1\"\ntools:\n  t:\n    rules:\n      - name: rl\n        rate_limit: 3/hour\n        " + onDeny + "\n"
		set, diags := Load([]Source{{Path: "s.yaml", Data: []byte(src)}})
		if len(diags) > 0 {
			t.Fatalf("%q: %v", onDeny, diags)
		}
		r := set.Files[0].Tools[0].Rules[0]
		if want := "Rate limit of 3 per hour reached. Try again later."; r.OnDeny != want {
			t.Errorf("%q: on_deny = %q, want %q", onDeny, r.OnDeny, want)
		}
	}
}

// Files that lint clean also do so when read from disk under a folder.
func TestExtensionFileFromDisk(t *testing.T) {
	sources, err := ReadSources([]string{filepath.Join("testdata", "extensions.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if _, diags := Load(sources); len(diags) != 0 {
		t.Errorf("got %v, want no diagnostics", diags)
	}
}

// TestIncrementZero: increment: 0 is the default, 1, as PolicyLayer reads
// it (its files compile unchanged).
func TestIncrementZero(t *testing.T) {
	src := "version: \"1\"\ntools:\n  t:\n    rules:\n      - name: r\n        state: {counter: c, window: day, increment: 0}\n        conditions: [{path: state.t.c, op: lte, value: 5}]\n"
	set, diags := Load([]Source{{Path: "s.yaml", Data: []byte(src)}})
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if st := set.Files[0].Tools[0].Rules[0].State; st == nil || st.Increment != 1 {
		t.Errorf("increment 0: state %+v, want increment 1", st)
	}
	// 0 is no increment of its own: increment_from beside it is no conflict.
	src = "version: \"1\"\ntools:\n  t:\n    rules:\n      - name: r\n        state: {counter: c, window: day, increment: 0, increment_from: args.n}\n        conditions: [{path: state.t.c, op: lte, value: 5}]\n"
	set, diags = Load([]Source{{Path: "s.yaml", Data: []byte(src)}})
	if len(diags) > 0 || set.Files[0].Tools[0].Rules[0].State.IncrementFrom != "args.n" {
		t.Errorf("increment 0 with increment_from: %v", diags)
	}
}

// TestDateValues: an unquoted YAML date as a condition value compiles, as
// the text PolicyLayer compares it by (Go's %v of yaml.v3's time), and lt
// still needs a number.
func TestDateValues(t *testing.T) {
	src := "version: \"1\"\ntools:\n  t:\n    rules:\n      - name: d\n        conditions:\n          - {path: args.a, op: neq, value: 2024-01-01}\n          - {path: args.b, op: in, value: [2024-01-02T10:00:00Z, x]}\n"
	set, diags := Load([]Source{{Path: "s.yaml", Data: []byte(src)}})
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	cs := set.Files[0].Tools[0].Rules[0].Conditions
	if cs[0].Value != "2024-01-01 00:00:00 +0000 UTC" {
		t.Errorf("neq value %#v", cs[0].Value)
	}
	if l, ok := cs[1].Value.([]any); !ok || len(l) != 2 || l[0] != "2024-01-02 10:00:00 +0000 UTC" || l[1] != "x" {
		t.Errorf("in value %#v", cs[1].Value)
	}
	bad := "version: \"1\"\ntools:\n  t:\n    rules:\n      - name: d\n        conditions: [{path: args.a, op: lt, value: 2024-01-01}]\n"
	if _, diags := Load([]Source{{Path: "s.yaml", Data: []byte(bad)}}); len(diags) != 1 || !strings.Contains(diags[0].String(), "needs a number") {
		t.Errorf("lt with a date: %v, want one 'needs a number' problem", diags)
	}
}
