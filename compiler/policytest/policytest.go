// Package policytest reads policy tests (*_test.yaml, policy.md §7) and
// runs them. It is part of the compiler (what CI runs) but evaluates
// through whatever function it is given: cmd/toolgate passes the same Wasm
// runtime the proxy uses, so a test that passes here decides the same way
// in production.
package policytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

// File is one *_test.yaml.
type File struct {
	Path string
	// Server the cases call; "" means the one server the policies govern,
	// else the server named like the file (github_test.yaml → github).
	Server string `yaml:"server"`
	Cases  []Case `yaml:"cases"`
}

// Case is one call and what it should be decided.
type Case struct {
	Name        string           `yaml:"name"`
	Tool        string           `yaml:"tool"`
	Args        map[string]any   `yaml:"args"`
	Annotations map[string]any   `yaml:"annotations"`
	Identity    *Identity        `yaml:"identity"`
	State       map[string]Count `yaml:"state"`
	// Expect is allow, deny or require_approval.
	Expect string `yaml:"expect"`
	// Rule, when set, is the deciding rule's name (or its full id).
	Rule string `yaml:"rule"`
	// Message, when set, is the exact message.
	Message *string `yaml:"message"`
	Line    int     `yaml:"-"`
}

// Count is a counter value in a case's state: a whole number (yaml.v3
// would truncate 1.5 into an int64 without a word).
type Count int64

// UnmarshalYAML takes only a YAML integer.
func (c *Count) UnmarshalYAML(n *yaml.Node) error {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		return fmt.Errorf("yaml: line %d: a counter value must be a whole number, got %s", n.Line, strconv.Quote(n.Value))
	}
	*c = Count(v)
	return nil
}

// Identity is a case's caller.
type Identity struct {
	Subject string         `yaml:"subject"`
	Groups  []string       `yaml:"groups"`
	Claims  map[string]any `yaml:"claims"`
}

// Find lists the *_test.yaml files under paths (default "policies"), sorted,
// each once.
func Find(paths []string) ([]string, error) {
	if len(paths) == 0 {
		paths = []string{"policies"}
	}
	var out []string
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && policy.IsTestFile(d.Name()) {
				out = append(out, filepath.ToSlash(filepath.Clean(p)))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("finding policy tests under %s: %w", root, err)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// Parse reads one test file.
func Parse(path string, data []byte) (*File, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var node yaml.Node
	if err := dec.Decode(&node); err != nil && err != io.EOF {
		return nil, yamlError(path, err)
	}
	f := &File{Path: path}
	if node.Kind == 0 {
		return nil, fmt.Errorf("%s:1:1: empty test file: it needs `cases:`", path)
	}
	dec2 := yaml.NewDecoder(bytes.NewReader(data))
	dec2.KnownFields(true)
	if err := dec2.Decode(f); err != nil {
		return nil, yamlError(path, err)
	}
	f.Path = path
	// Record each case's line for messages.
	if root := node.Content[0]; root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == "cases" && root.Content[i+1].Kind == yaml.SequenceNode {
				for j, c := range root.Content[i+1].Content {
					if j < len(f.Cases) {
						f.Cases[j].Line = c.Line
					}
				}
			}
		}
	}
	var problems []string
	for i, c := range f.Cases {
		where := fmt.Sprintf("%s:%d:1: case %q", path, c.Line, c.Name)
		if c.Name == "" {
			problems = append(problems, fmt.Sprintf("%s:%d:1: case %d has no name", path, c.Line, i+1))
		}
		if c.Tool == "" {
			problems = append(problems, where+": tool is required")
		}
		switch bundles.Outcome(c.Expect) {
		case bundles.Allow, bundles.Deny, bundles.RequireApproval:
		default:
			problems = append(problems, fmt.Sprintf("%s: expect must be allow, deny or require_approval, got %q", where, c.Expect))
		}
	}
	if len(f.Cases) == 0 {
		problems = append(problems, path+":1:1: no cases")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return f, nil
}

// yamlError is err, which yaml.v3 returned reading path, as one
// "path:line:col: …" line per problem.
func yamlError(path string, err error) error {
	var lines []string
	for _, p := range policy.YAMLProblems(err) {
		lines = append(lines, fmt.Sprintf("%s:%d:1: %s", path, p.Line, p.Msg))
	}
	return errors.New(strings.Join(lines, "\n"))
}

// Input builds the decision input of a case.
func (c *Case) Input(server string) (*bundles.Input, error) {
	in := &bundles.Input{Server: server, Tool: c.Tool}
	var err error
	if in.Arguments, err = marshalObject(c.Args); err != nil {
		return nil, fmt.Errorf("case %q: args: %w", c.Name, err)
	}
	if in.Annotations, err = marshalObject(c.Annotations); err != nil {
		return nil, fmt.Errorf("case %q: annotations: %w", c.Name, err)
	}
	if c.Identity != nil {
		in.Identity.Subject = c.Identity.Subject
		in.Identity.Groups = c.Identity.Groups
		if in.Identity.Claims, err = marshalObject(c.Identity.Claims); err != nil {
			return nil, fmt.Errorf("case %q: identity.claims: %w", c.Name, err)
		}
	}
	keys := make([]string, 0, len(c.State))
	for k := range c.State {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		in.State = append(in.State, bundles.CounterValue{Key: k, Value: int64(c.State[k])})
	}
	return in, nil
}

func marshalObject(m map[string]any) (json.RawMessage, error) {
	if m == nil {
		return nil, nil
	}
	return json.Marshal(m)
}

// EvalFunc decides one input.
type EvalFunc func(context.Context, *bundles.Input) (bundles.Decision, error)

// Result is one case's outcome.
type Result struct {
	File   string
	Case   Case
	Got    bundles.Decision
	Err    error
	Failed bool
	// Why says what differed, for a failed case.
	Why string
}

// String is the one line `toolgate test` prints for a failing case.
func (r Result) String() string {
	return fmt.Sprintf("FAIL %s:%d: %s: %s", r.File, r.Case.Line, r.Case.Name, r.Why)
}

// Run runs every case of files. servers are the servers the policies
// govern (to resolve a file without `server:`).
func Run(ctx context.Context, files []*File, servers []string, eval EvalFunc) ([]Result, error) {
	var out []Result
	for _, f := range files {
		server, err := resolveServer(f, servers)
		if err != nil {
			return nil, err
		}
		for _, c := range f.Cases {
			r := Result{File: f.Path, Case: c}
			in, err := c.Input(server)
			if err == nil {
				r.Got, err = eval(ctx, in)
			}
			if err == nil {
				r.Got = asHostDecides(r.Got)
			}
			if err != nil {
				r.Err, r.Failed, r.Why = err, true, "could not decide: "+err.Error()
			} else {
				r.Why = compare(&c, &r.Got)
				r.Failed = r.Why != ""
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// asHostDecides is d as the host answers it for the case's state: a
// counter without an amount (its increment_from argument missing or not a
// number) denies the call with "Internal policy error" (choice 8). Tests
// do not reserve counters, so no earlier counter refuses first.
func asHostDecides(d bundles.Decision) bundles.Decision {
	if d.Decision != bundles.Allow && d.Decision != bundles.RequireApproval {
		return d
	}
	for _, c := range d.Counters {
		if c.Invalid {
			return bundles.Decision{Decision: bundles.Deny, Rule: c.Rule, Message: bundles.MsgNoAmount, Shadow: d.Shadow}
		}
	}
	return d
}

func resolveServer(f *File, servers []string) (string, error) {
	if f.Server != "" {
		return f.Server, nil
	}
	if len(servers) == 1 {
		return servers[0], nil
	}
	base := filepath.Base(f.Path)
	base = strings.TrimSuffix(strings.TrimSuffix(base, ".yaml"), ".yml")
	base = strings.TrimSuffix(base, "_test")
	for _, s := range servers {
		if s == base {
			return s, nil
		}
	}
	return "", fmt.Errorf("%s: the policies govern %d servers (%s); say which with `server:`", f.Path, len(servers), strings.Join(servers, ", "))
}

// RuleMatches reports whether a case's rule (a name, "hide", "default", or
// a full id) names the decision's rule id "FILE#KEY/NAME".
func RuleMatches(want, id string) bool {
	if want == id {
		return true
	}
	_, rest, ok := strings.Cut(id, "#")
	if !ok {
		return false
	}
	if rest == want {
		return true
	}
	// rest is KEY/NAME; a name may itself hold "/", so try each split.
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' && rest[i+1:] == want {
			return true
		}
	}
	return false
}

func compare(c *Case, got *bundles.Decision) string {
	var diffs []string
	if string(got.Decision) != c.Expect {
		diffs = append(diffs, fmt.Sprintf("got %s, want %s", got.Decision, c.Expect))
	}
	if c.Rule != "" && !RuleMatches(c.Rule, got.Rule) {
		diffs = append(diffs, fmt.Sprintf("got rule %q, want %q", got.Rule, c.Rule))
	}
	if c.Message != nil && got.Message != *c.Message {
		diffs = append(diffs, fmt.Sprintf("got message %q, want %q", got.Message, *c.Message))
	}
	if len(diffs) > 0 && got.Rule != "" && c.Rule == "" {
		diffs = append(diffs, fmt.Sprintf("(decided by %q: %q)", got.Rule, got.Message))
	}
	return strings.Join(diffs, "; ")
}

// Summary is the last line `toolgate test` prints.
func Summary(results []Result) (line string, failed int) {
	for _, r := range results {
		if r.Failed {
			failed++
		}
	}
	return fmt.Sprintf("%d passed, %d failed", len(results)-failed, failed), failed
}
