package build_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
)

var source = policy.Source{Path: "policies/github.yaml", Data: []byte(`version: "1"
tools:
  create_issue:
    rules:
      - name: hourly issue limit
        rate_limit: 5/hour
      - name: small
        conditions: [{path: args.body.size, op: lt, value: 1000}]
  merge:
    rules:
      - name: budget
        when: [{path: args.repo, op: eq, value: infra}]
        conditions: [{path: state.merge.spend, op: lte, value: 10}]
        state: {counter: spend, window: day, increment_from: args.cost}
`)}

func TestBuildManifest(t *testing.T) {
	b, _, err := build.Build(context.Background(), []policy.Source{source}, build.Options{Revision: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	if m.Revision != "abc" || len(m.Wasm) != 1 || m.Wasm[0].Entrypoint != bundles.Entrypoint || m.Metadata.Servers[0] != "github" {
		t.Fatalf("manifest: %+v", m)
	}
	if got, want := m.Metadata.Reads.Arguments, [][]string{{"body", "size"}, {"cost"}, {"repo"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("argument paths: got %v, want %v", got, want)
	}
	if a := m.Metadata.Reads.Annotations; a == nil || *a {
		t.Errorf("reads annotations: got %v, want false, written out", a)
	}
	counters := m.Metadata.Compact.Counters
	if len(counters) != 2 || counters[0].Key != "create_issue._rate_hour" || *counters[0].Limit != 5 || counters[0].Amount != 1 ||
		counters[1].Key != "merge.spend" || counters[1].Amount != 0 || *counters[1].Limit != 10 {
		t.Errorf("counter table: %+v", counters)
	}
	if !bytes.Contains(b.Data, []byte(`"counter_table"`)) || !bytes.Contains(b.Rego, []byte("package toolgate")) {
		t.Errorf("data.json %s / policy.rego missing", b.Data)
	}
	if m.Metadata.Sources[0].SHA256 != bundles.SHA256Hex(source.Data) {
		t.Errorf("source digest: %+v", m.Metadata.Sources)
	}
}

// A rule reading tool.annotations, in conditions or in when, marks the
// manifest: the proxy then lists tools the client did not.
func TestBuildReadsAnnotations(t *testing.T) {
	for clause, rule := range map[string]string{
		"conditions": `{name: r, conditions: [{path: tool.annotations.readOnlyHint, op: eq, value: true}]}`,
		"when":       `{name: r, action: deny, when: [{path: tool.annotations.destructiveHint, op: eq, value: true}]}`,
	} {
		src := policy.Source{Path: "policies/fs.yaml", Data: []byte(`version: "1"
tools:
  "*":
    rules:
      - ` + rule + `
`)}
		b, _, err := build.Build(context.Background(), []policy.Source{src}, build.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if a := b.Manifest.Metadata.Reads.Annotations; a == nil || !*a {
			t.Errorf("%s on tool.annotations: the manifest does not say the policy reads annotations", clause)
		}
	}
}

func TestBuildRefusesLintErrors(t *testing.T) {
	_, _, err := build.Build(context.Background(), []policy.Source{{Path: "policies/x.yaml", Data: []byte("version: 2\n")}}, build.Options{})
	var le *build.LintError
	if !errors.As(err, &le) || !errors.Is(err, build.ErrLint) || le.Diagnostics[0].Pos.Line != 1 {
		t.Fatalf("got %v, want a LintError naming line 1", err)
	}
}

// Example builds a bundle from one policy file and writes it as a .tar.gz.
func Example() {
	b, _, err := build.Build(context.Background(), []policy.Source{source}, build.Options{Revision: "abc"})
	if err != nil {
		fmt.Println(err)
		return
	}
	var out bytes.Buffer
	if err := bundles.Write(&out, b); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(b.Manifest.Metadata.Servers, len(b.Manifest.Metadata.Compact.Counters), "counters")
	// Output: [github] 2 counters
}

// TestApproversInManifest: the approvers: extension lands in the manifest by
// rule id, beside the decision, and rules without it are absent.
func TestApproversInManifest(t *testing.T) {
	src := []policy.Source{{Path: "payments/stripe.yaml", Data: []byte(`version: "1"
tools:
  create_refund:
    rules:
      - name: big
        action: require_approval
        when:
          - {path: args.amount, op: gte, value: 100}
        approvers:
          subjects: [dana]
          groups: [payments-leads]
      - name: any approver
        action: require_approval
        when:
          - {path: args.amount, op: gte, value: 50}
`)}}
	b, _, err := build.Build(context.Background(), src, build.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := b.Manifest.Metadata.Approvers
	want := map[string]bundles.Approvers{"payments/stripe.yaml#create_refund/big": {Subjects: []string{"dana"}, Groups: []string{"payments-leads"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("approvers = %#v, want %#v", got, want)
	}
	a := got["payments/stripe.yaml#create_refund/big"]
	if !a.Allows("dana", nil) || !a.Allows("lee", []string{"eng", "payments-leads"}) || a.Allows("lee", []string{"eng"}) {
		t.Fatal("Approvers.Allows: wrong answer")
	}
}
