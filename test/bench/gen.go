// Package bench holds the benchmark policies of BENCHMARKS.md and the
// benchmarks that compare toolgate's runtime with OPA's own evaluators.
package bench

import (
	"fmt"
	"strings"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

// Small is the 10-rule policy: five tools and a wildcard.
func Small() []policy.Source {
	return []policy.Source{{Path: "policies/bench.yaml", Data: []byte(`version: "1"
default: allow
hide: [delete_everything]
tools:
  tool_050:
    rules:
      - name: amount cap
        conditions:
          - {path: args.amount, op: lte, value: 5000}
          - {path: args.currency, op: in, value: [usd, eur, gbp]}
      - name: hourly
        rate_limit: 100/hour
  create_issue:
    rules:
      - name: title
        conditions: [{path: args.title, op: regex, value: "^.{1,120}$"}]
      - name: repo
        conditions: [{path: args.repo, op: neq, value: prod}]
  delete_branch:
    rules:
      - name: never
        action: deny
  read_file:
    rules:
      - name: no secrets
        conditions: [{path: args.path, op: regex, value: "^/srv/"}]
  search:
    rules:
      - name: query length
        conditions: [{path: args.query, op: exists, value: true}]
  "*":
    rules:
      - name: engineers only
        conditions: [{path: identity.groups, op: contains, value: eng}]
      - name: not prod
        action: deny
        when: [{path: args.env, op: eq, value: prod}]
      - name: daily calls
        conditions: [{path: state._global.calls, op: lte, value: 100000}]
        state: {counter: calls, window: day}
`)}}
}

// Large is the 500-rule policy: 200 tools with two or three rules each,
// 10 glob keys with three rules each, and five wildcard rules.
func Large() []policy.Source {
	var b strings.Builder
	b.WriteString("version: \"1\"\ndefault: deny\nhide: [\"admin_*\", drop_database]\ntools:\n")
	rules := 0
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&b, "  tool_%03d:\n    rules:\n", i)
		fmt.Fprintf(&b, "      - name: amount cap %d\n        conditions:\n          - {path: args.amount, op: lte, value: %d}\n          - {path: args.currency, op: in, value: [usd, eur, gbp]}\n", i, 1000+i)
		fmt.Fprintf(&b, "      - name: hourly %d\n        rate_limit: %d/hour\n", i, 50+i)
		rules += 2
		if i%3 == 0 {
			fmt.Fprintf(&b, "      - name: project %d\n        conditions: [{path: args.project, op: regex, value: \"^proj-[0-9]+$\"}]\n", i)
			rules++
		}
	}
	for g := 0; g < 10; g++ {
		fmt.Fprintf(&b, "  \"group%d_*\":\n    rules:\n", g)
		for r := 0; r < 3; r++ {
			fmt.Fprintf(&b, "      - name: group %d rule %d\n        conditions: [{path: args.level, op: lt, value: %d}]\n", g, r, 10+r)
			rules++
		}
	}
	b.WriteString("  \"*\":\n    rules:\n")
	wild := []string{
		"      - name: engineers only\n        conditions: [{path: identity.groups, op: contains, value: eng}]\n",
		"      - name: not prod\n        action: deny\n        when: [{path: args.env, op: eq, value: prod}]\n",
		"      - name: subject set\n        conditions: [{path: identity.subject, op: exists, value: true}]\n",
		"      - name: no root\n        conditions: [{path: identity.subject, op: neq, value: root}]\n",
		"      - name: daily calls\n        conditions: [{path: state._global.calls, op: lte, value: 100000}]\n        state: {counter: calls, window: day}\n",
	}
	for _, w := range wild {
		b.WriteString(w)
		rules++
	}
	if rules < 500 {
		panic(fmt.Sprintf("bench: large policy has %d rules, want ≥ 500", rules))
	}
	return []policy.Source{{Path: "policies/bench.yaml", Data: []byte(b.String())}}
}

// Call is the benchmarked call: an allowed call of tool_050 that evaluates
// every rule of its chain.
func Call() *bundles.Input {
	return &bundles.Input{
		Server:    "bench",
		Tool:      "tool_050",
		Arguments: []byte(`{"amount":120,"currency":"eur","project":"proj-42","level":3,"note":"a typical call with a few arguments"}`),
		Identity:  bundles.Identity{Subject: "alice", Groups: []string{"eng", "payments"}},
		State:     []bundles.CounterValue{{Key: "tool_050._rate_hour", Value: 7}, {Key: "_global.calls", Value: 1234}},
	}
}
