package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/test/model"
)

// The parity suite runs sequences of tools/call through the real proxy
// process, in front of anyserver (which answers any tool), and checks every
// answer against what the independent model of the spec (test/model) says,
// with the counters the spec's host keeps simulated here: a call the model
// allows reserves its counters in order and is refused when one would pass
// its limit; a denied or refused call spends nothing; a call the server
// answers with a JSON-RPC error gives its reservations back. Nothing about
// the expected outcomes comes from toolgate.
//
// The policies are (a) this repository's example policies (policies/), with
// the calls of their *_test.yaml cases, and (b) every PolicyLayer template of
// the shared corpus, as published and in a stricter variant with counters.

// corpusDir is the shared corpus, relative to this package (as in test/corpus).
const corpusDir = "../../../shared/corpus/policylayer-templates"

// failMarker makes anyserver answer a call with a JSON-RPC error.
const failMarker = "__anyserver_fail__"

// parityCall is one tools/call of a sequence.
type parityCall struct {
	tool string
	args map[string]any // nil: the call has no arguments
	fail bool           // add the fail marker: the server answers with an error
}

// rawArgs is what the call sends as arguments ("" for none).
func (c parityCall) rawArgs(t testing.TB) string {
	if c.args == nil && !c.fail {
		return ""
	}
	m := map[string]any{}
	for k, v := range c.args {
		m[k] = v
	}
	if c.fail {
		m[failMarker] = true
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("arguments of %s: %v", c.tool, err)
	}
	return string(b)
}

// parityTarget is one proxy process's world: a bundle, the server it
// governs, the caller, and the tools anyserver lists.
type parityTarget struct {
	set     *policy.Set
	bundle  string // bundle file
	digest  string // its digest
	server  string
	subject string
	groups  []string
	tools   []string // listed by anyserver, with annotations from annotate
	// unlisted: the client calls without listing tools first (the proxy
	// lists them itself when the policy reads tool.annotations).
	unlisted bool
}

// annotate gives a listed tool MCP annotations by its name, so that policies
// reading tool.annotations meet both kinds.
func annotate(tool string) map[string]any {
	l := strings.ToLower(tool)
	for _, p := range []string{"delete", "merge", "push", "remove", "drop", "write", "move", "edit", "cancel"} {
		if strings.Contains(l, p) {
			return map[string]any{"destructiveHint": true, "readOnlyHint": false}
		}
	}
	for _, p := range []string{"get", "list", "read", "search", "retrieve", "fetch"} {
		if strings.HasPrefix(l, p) {
			return map[string]any{"readOnlyHint": true}
		}
	}
	return nil
}

// paritySim is the host's side of the spec run by hand: the counters, and
// what the model says each call should get.
type paritySim struct {
	t        *testing.T
	target   *parityTarget
	counters map[string]int64 // by "<scope>.<counter>"; one window (a sequence runs inside one minute)
	listed   map[string]bool  // tools in tools/list, whose annotations the proxy knows
	tally    map[string]int
}

// input is the model's input for a call, with the counters as they stand.
func (s *paritySim) input(c parityCall, args string) model.Input {
	doc := map[string]any{
		"server":   s.target.server,
		"tool":     map[string]any{"name": c.tool},
		"identity": map[string]any{"subject": s.target.subject, "groups": s.target.groups},
		"state":    s.counters,
	}
	if a := annotate(c.tool); a != nil && s.listed[c.tool] {
		doc["tool"] = map[string]any{"name": c.tool, "annotations": a}
	}
	if args != "" {
		doc["arguments"] = json.RawMessage(args)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		s.t.Fatal(err)
	}
	in, err := model.ParseInput(b)
	if err != nil {
		s.t.Fatal(err)
	}
	return in
}

// want is what a call should get.
type want struct {
	kind    string // "forward", "fail" (the server's error), "deny", "approval"
	rule    string
	message string
}

// expect decides a call with the model and the simulated counters, and
// applies its effect on them.
func (s *paritySim) expect(c parityCall, args string) want {
	d := model.Decide(s.target.set, s.input(c, args))
	switch d.Decision {
	case bundles.Deny:
		return want{kind: "deny", rule: d.Rule, message: d.Message}
	}
	// The counters, in order (step 4): a refusal denies the call, and
	// nothing is spent.
	reserved := map[string]int64{}
	for _, r := range d.Counters {
		if r.Invalid { // no amount: refused in its turn (choice 8)
			return want{kind: "deny", rule: r.Rule, message: "Internal policy error"}
		}
		next := s.counters[r.Key] + reserved[r.Key] + r.Amount
		if r.Limit != nil && next > *r.Limit {
			return want{kind: "deny", rule: r.Rule, message: r.Message}
		}
		reserved[r.Key] += r.Amount
	}
	if d.Decision == bundles.RequireApproval {
		// Deny beats approval, a refused counter included; a call that
		// waits for a person has not run, so it spends nothing yet.
		rule := d.Rule
		if d.Approval != nil {
			rule = d.Approval.Rule
		}
		return want{kind: "approval", rule: rule, message: d.Message}
	}
	if c.fail {
		return want{kind: "fail"} // the server's error gives the reservations back
	}
	for k, n := range reserved {
		s.counters[k] += n
	}
	return want{kind: "forward"}
}

// check compares a response with what the call should get.
func (s *paritySim) check(p *rawProxy, c parityCall, args string, w want, r *response) {
	s.t.Helper()
	res, isResult := r.callResult()
	bad := func(format string, a ...any) {
		s.t.Helper()
		s.t.Errorf("server %s, caller %q %v, call %s(%s): %s\n  got %.400s", s.target.server, s.target.subject, s.target.groups, c.tool, abbrev(args), fmt.Sprintf(format, a...), r.raw)
	}
	s.tally[w.kind]++
	switch w.kind {
	case "forward":
		if !isResult || res.IsError || res.text() != calledText(c.tool, []byte(args)) {
			bad("want the call forwarded and the server's answer")
		}
	case "fail":
		if r.Error == nil || r.Error.Code != -32001 {
			bad("want the call forwarded and the server's JSON-RPC error -32001")
		}
	case "deny":
		switch {
		case !isResult || !res.IsError:
			bad("want denied by %s: %q", w.rule, w.message)
		case res.text() != w.message || res.Meta["toolgate/rule"] != w.rule:
			bad("want denied by %s: %q (got rule %v)", w.rule, w.message, res.Meta["toolgate/rule"])
		case res.Meta["toolgate/bundle"] != s.target.digest:
			bad("want the denial to name bundle %s", s.target.digest)
		}
	case "approval":
		// With approvals configured the answer is a JSON-RPC error carrying
		// the approval id; without (as here) the proxy denies the call with
		// the rule's message. Either way the call does not reach the server.
		switch {
		case r.Error != nil:
			if !strings.Contains(r.Error.Message, w.message) {
				bad("want an approval error saying %q", w.message)
			}
		case !isResult || !res.IsError || !strings.Contains(res.text(), w.message) || res.Meta["toolgate/rule"] != w.rule:
			bad("want held for approval by %s: %q", w.rule, w.message)
		}
	}
}

// run starts a proxy for the target and plays a sequence on it: calls are
// produced by next, given the simulation so far, until it returns false.
// When the minute turns during the sequence (minute counters reset), it is
// played once more on a fresh proxy.
func (tg *parityTarget) run(t *testing.T, next func(s *paritySim, i int) (parityCall, bool)) map[string]int {
	t.Helper()
	toolsFile := filepath.Join(t.TempDir(), "tools.json")
	var tools []map[string]any
	for _, name := range tg.tools {
		tool := map[string]any{"name": name, "inputSchema": map[string]any{"type": "object"}}
		if a := annotate(name); a != nil {
			tool["annotations"] = a
		}
		tools = append(tools, tool)
	}
	b, _ := json.Marshal(tools)
	if err := os.WriteFile(toolsFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		start := time.Now().UTC().Truncate(time.Minute)
		args := []string{"proxy", "--bundle", tg.bundle, "--server", tg.server, "--state", "memory", "--admin", ""}
		if tg.subject != "" {
			args = append(args, "--identity", tg.subject)
		}
		if len(tg.groups) > 0 {
			args = append(args, "--groups", strings.Join(tg.groups, ","))
		}
		p := startRaw(t, args, anyserverBin(t), "-tools", toolsFile)
		p.initialize()
		s := &paritySim{t: t, target: tg, counters: map[string]int64{}, listed: map[string]bool{}, tally: map[string]int{}}

		// tools/list: every tool but those the model hides. The proxy
		// knows every tool's annotations, listed by the client or not.
		var wantListed []string
		for _, name := range tg.tools {
			s.listed[name] = true
			d := model.Decide(tg.set, s.input(parityCall{tool: name}, ""))
			if d.Decision == bundles.Allow || !strings.HasSuffix(d.Rule, "#hide") {
				wantListed = append(wantListed, name)
			}
		}
		if !tg.unlisted {
			if got := p.listTools(); !slices.Equal(got, wantListed) {
				t.Errorf("%s: tools/list gives %v, want %v", tg.server, got, wantListed)
			}
		}

		for i := 0; ; i++ {
			c, ok := next(s, i)
			if !ok {
				break
			}
			args := c.rawArgs(t)
			w := s.expect(c, args)
			s.check(p, c, args, w, p.callTool(c.tool, args))
			if t.Failed() {
				t.Logf("proxy stderr (tail):\n%s", tail(p.stderr.String(), 2000))
				return s.tally
			}
		}
		if err := p.close(10 * time.Second); err != nil {
			t.Errorf("the proxy exited with %v\n%s", err, tail(p.stderr.String(), 2000))
		}
		if time.Now().UTC().Truncate(time.Minute).Equal(start) || attempt > 0 {
			return s.tally
		}
		t.Logf("the minute turned during the sequence; playing it again")
	}
}

// buildBundle builds the policies under path, as seen from the folder
// workdir, with the toolgate binary, and returns the bundle's path and
// digest. (It runs in workdir because a bundle built from a path with a ".."
// element does not load: see the report on the parity suite.)
func buildBundle(t testing.TB, workdir, path string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	cmd := exec.Command(toolgate, "build", path, "-o", out)
	cmd.Dir = workdir
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("toolgate build %s in %s: %v\n%s", path, workdir, err, msg)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, bundles.Digest(raw)
}

// loadSet loads the policies under path, as seen from workdir, for the
// model, under the file paths toolgate build saw (rule ids name them).
func loadSet(t testing.TB, workdir, path string) *policy.Set {
	t.Helper()
	src, err := policy.ReadSources([]string{filepath.Join(workdir, path)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if src[i].Path, err = filepath.Rel(workdir, src[i].Path); err != nil {
			t.Fatal(err)
		}
	}
	set, diags := policy.Load(src)
	if len(diags) > 0 {
		t.Fatalf("loading %s: %v", path, diags)
	}
	return set
}

// policyTestFile is a *_test.yaml file (policy.md §7).
type policyTestFile struct {
	Server string `yaml:"server"`
	Cases  []struct {
		Name     string         `yaml:"name"`
		Tool     string         `yaml:"tool"`
		Args     map[string]any `yaml:"args"`
		Identity struct {
			Subject string         `yaml:"subject"`
			Groups  []string       `yaml:"groups"`
			Claims  map[string]any `yaml:"claims"`
		} `yaml:"identity"`
		State   map[string]any `yaml:"state"`
		Expect  string         `yaml:"expect"`
		Rule    string         `yaml:"rule"`
		Message string         `yaml:"message"`
	} `yaml:"cases"`
}

// TestParityRepoPolicies plays the calls of the example policies' test
// cases through the proxy, one proxy per server and caller. The cases of a
// caller run in file order (those that set counter values last), each
// preceded, when it sets a counter, by repeats of its own call until the
// live counter reaches that value (or stops moving), and followed by the
// same call answered with an error by the server, and the call again; then
// every case once more. Every answer is checked against the model.
func TestParityRepoPolicies(t *testing.T) {
	const dir = "../../policies"
	bundle, digest := buildBundle(t, "../..", "policies")
	set := loadSet(t, "../..", "policies")
	testFiles, err := filepath.Glob(filepath.Join(dir, "*", "*_test.yaml"))
	if err != nil || len(testFiles) == 0 {
		t.Fatalf("no *_test.yaml under %s: %v", dir, err)
	}
	for _, path := range testFiles {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var tf policyTestFile
		if err := yaml.Unmarshal(data, &tf); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if tf.Server == "" {
			t.Fatalf("%s names no server", path)
		}
		// The model must agree with the file's own expectations, decided with
		// the case's counter values as given (no reservations).
		for _, c := range tf.Cases {
			doc, _ := json.Marshal(map[string]any{
				"server": tf.Server, "tool": map[string]any{"name": c.Tool}, "arguments": c.Args,
				"identity": map[string]any{"subject": c.Identity.Subject, "groups": c.Identity.Groups, "claims": c.Identity.Claims},
				"state":    c.State,
			})
			in, err := model.ParseInput(doc)
			if err != nil {
				t.Fatal(err)
			}
			d := model.Decide(set, in)
			if string(d.Decision) != c.Expect || c.Rule != "" && !strings.HasSuffix(d.Rule, "/"+c.Rule) || c.Message != "" && d.Message != c.Message {
				t.Errorf("%s: case %q: the model decides %s (%s: %q), the file wants %s (%s: %q)", path, c.Name, d.Decision, d.Rule, d.Message, c.Expect, c.Rule, c.Message)
			}
		}

		// Group the cases by caller: one proxy each.
		type group struct {
			subject string
			groups  []string
			calls   []int // case indexes, stateless ones first
		}
		var groups []*group
		byCaller := map[string]*group{}
		for i, c := range tf.Cases {
			if len(c.Identity.Claims) > 0 {
				t.Logf("%s: case %q has claims, which the stdio proxy cannot take from its flags; skipped", path, c.Name)
				continue
			}
			key := c.Identity.Subject + "|" + strings.Join(c.Identity.Groups, ",")
			g := byCaller[key]
			if g == nil {
				g = &group{subject: c.Identity.Subject, groups: c.Identity.Groups}
				byCaller[key] = g
				groups = append(groups, g)
			}
			g.calls = append(g.calls, i)
		}
		for _, g := range groups {
			sort.SliceStable(g.calls, func(a, b int) bool {
				return len(tf.Cases[g.calls[a]].State) == 0 && len(tf.Cases[g.calls[b]].State) > 0
			})
			tools := []string{"no_such_tool_xyz"}
			for _, c := range tf.Cases {
				if !slices.Contains(tools, c.Tool) {
					tools = append(tools, c.Tool)
				}
			}
			target := &parityTarget{set: set, bundle: bundle, digest: digest, server: tf.Server, subject: g.subject, groups: g.groups, tools: tools}
			name := filepath.Base(path) + "/" + g.subject
			if g.subject == "" {
				name += "anonymous"
			}
			// A client that calls without listing tools meets the same
			// decisions on a policy reading annotations.
			policyData, err := os.ReadFile(strings.TrimSuffix(path, "_test.yaml") + ".yaml")
			if err != nil {
				t.Fatalf("the policy of %s: %v", path, err)
			}
			unlisted := bytes.Contains(policyData, []byte("tool.annotations"))
			for _, listFirst := range []bool{true, false} {
				if !listFirst && !unlisted {
					continue
				}
				target := *target
				target.unlisted = !listFirst
				name := name
				if !listFirst {
					name += "/unlisted"
				}
				t.Run(name, func(t *testing.T) {
					// The sequence, built as it goes (fills depend on the counters).
					var seq []parityCall
					step, fills := 0, 0
					next := func(s *paritySim, i int) (parityCall, bool) {
						for len(seq) <= i {
							if step >= 2*len(g.calls) {
								return parityCall{}, false
							}
							c := tf.Cases[g.calls[step%len(g.calls)]]
							call := parityCall{tool: c.Tool, args: c.Args}
							if step >= len(g.calls) { // the second round: each case once more
								seq = append(seq, call)
								step++
								continue
							}
							if key, target, ok := fillTarget(s, c.State, call); ok && fills < 300 && s.counters[key] < target {
								fills++ // the call still moves the counter towards the case's value
								seq = append(seq, call)
								continue
							}
							fills = 0
							seq = append(seq, call, parityCall{tool: c.Tool, args: c.Args, fail: true}, call)
							step++
						}
						return seq[i], true
					}
					tally := target.run(t, next)
					t.Logf("%d cases: %v", len(g.calls), tally)
				})
			}
		}
	}
}

// fillTarget returns a counter the case sets, and its value, that the case's
// own call moves.
func fillTarget(s *paritySim, state map[string]any, c parityCall) (string, int64, bool) {
	keys := make([]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n, ok := state[k].(int)
		if ok && s.moves(c, k) {
			return k, int64(n), true
		}
	}
	return "", 0, false
}

// moves reports whether the model, with the counters as they stand, would
// have c reserve a positive amount of counter key (without applying it).
func (s *paritySim) moves(c parityCall, key string) bool {
	d := model.Decide(s.target.set, s.input(c, c.rawArgs(s.t)))
	if d.Decision != bundles.Allow {
		return false
	}
	reserved := map[string]int64{}
	for _, r := range d.Counters {
		if r.Invalid || r.Limit != nil && s.counters[r.Key]+reserved[r.Key]+r.Amount > *r.Limit {
			return false
		}
		reserved[r.Key] += r.Amount
	}
	return reserved[key] > 0
}

// TestParityCorpus plays calls of every tool of every corpus template
// through the proxy: the template as published (default allow, no rules),
// and a stricter variant of it (see strictVariant) whose counters, hidden and
// unlisted tools and wildcard rules the calls run into. Each is built into
// a bundle of its own in-process (a proxy's start-up cost grows with the
// bundle's Wasm module, and one process serves one server).
func TestParityCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.yaml"))
	if err != nil || len(files) < 53 {
		t.Fatalf("found %d corpus files under %s (the shared/ folder must sit beside the clone), want 53: %v", len(files), corpusDir, err)
	}
	for _, path := range files {
		server := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			variant, tools, err := strictVariant(data)
			if err != nil {
				t.Fatal(err)
			}
			listed := append(slices.Clone(tools), "no_such_tool_xyz")

			orig := bundleTarget(t, policy.Source{Path: "corpus/" + server + ".yaml", Data: data}, server, listed)
			var seq []parityCall
			for i, tool := range listed {
				a := map[string]any{"path": "/tmp/x", "query": "q"}
				seq = append(seq, parityCall{tool: tool, args: a})
				if i%4 == 0 { // some without arguments, some the server fails
					seq = append(seq, parityCall{tool: tool, args: a, fail: true}, parityCall{tool: tool})
				}
			}
			tally := orig.run(t, func(_ *paritySim, i int) (parityCall, bool) {
				if i < len(seq) {
					return seq[i], true
				}
				return parityCall{}, false
			})

			strict := bundleTarget(t, policy.Source{Path: "variants/" + server + "-strict.yaml", Data: variant}, server+"-strict", append(listed, "zz_extra"))
			seq = strictSequence(tools)
			vTally := strict.run(t, func(_ *paritySim, i int) (parityCall, bool) {
				if i < len(seq) {
					return seq[i], true
				}
				return parityCall{}, false
			})
			t.Logf("%d tools; as published: %v; strict: %v", len(tools), tally, vTally)
		})
	}
}

// bundleTarget builds one policy file into a bundle (in-process, as
// toolgate build does) for a proxy governing server, the caller alice of
// group eng.
func bundleTarget(t *testing.T, src policy.Source, server string, tools []string) *parityTarget {
	t.Helper()
	set, diags := policy.Load([]policy.Source{src})
	if len(diags) > 0 {
		t.Fatalf("%s does not lint: %v\n%s", src.Path, diags, src.Data)
	}
	b, _, err := build.Build(context.Background(), []policy.Source{src}, build.Options{})
	if err != nil {
		t.Fatalf("building %s: %v", src.Path, err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &parityTarget{set: set, bundle: file, digest: bundles.Digest(buf.Bytes()), server: server,
		subject: "alice", groups: []string{"eng"}, tools: tools}
}

// strictVariant rewrites a corpus template (yaml.v3 nodes, the rest of the
// file kept) into a stricter policy that exercises what the templates leave
// out: default deny; the second tool hidden (with three or more), the third
// unlisted (with four or more); a 3-a-minute rate limit on the first tool; a
// daily budget counted from args.cost (at most 7) on the last; a glob key
// zz_*; and wildcard rules: a 25-a-minute global rate limit and a denial of
// query "drop". It returns the new file and the template's tool names.
func strictVariant(data []byte) ([]byte, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	root := doc.Content[0]
	field := func(m *yaml.Node, key string) *yaml.Node {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				return m.Content[i+1]
			}
		}
		return nil
	}
	snippet := func(s string) *yaml.Node {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(s), &n); err != nil {
			panic(err)
		}
		return n.Content[0]
	}
	tools := field(root, "tools")
	if tools == nil || tools.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("no tools map")
	}
	var names []string
	for i := 0; i < len(tools.Content); i += 2 {
		names = append(names, tools.Content[i].Value)
	}
	n := len(names)
	if n == 0 {
		return nil, nil, fmt.Errorf("no tools")
	}
	if d := field(root, "default"); d != nil {
		d.Value = "deny"
	} else {
		root.Content = append(root.Content, snippet("default"), snippet("deny"))
	}
	if field(root, "hide") != nil {
		return nil, nil, fmt.Errorf("the template already hides tools: extend strictVariant")
	}
	hide := []string{"*_never_*"}
	if n >= 3 {
		hide = append(hide, names[1])
	}
	hb, _ := json.Marshal(hide)
	root.Content = append(root.Content, snippet("hide"), snippet(string(hb)))

	appendRules := func(tool, rules string) {
		r := field(field(tools, tool), "rules")
		r.Style = 0
		r.Content = append(r.Content, snippet(rules).Content...)
	}
	last := names[n-1]
	appendRules(names[0], `[{name: first tool rate, rate_limit: 3/minute}]`)
	appendRules(last, fmt.Sprintf(`[{name: daily budget, state: {counter: budget, window: day, increment_from: args.cost},
		conditions: [{path: %q, op: lte, value: 7}], on_deny: "The daily budget of 7 is spent."}]`, "state."+last+".budget"))
	if n >= 4 {
		for i := 0; i < len(tools.Content); i += 2 {
			if tools.Content[i].Value == names[2] {
				tools.Content = append(tools.Content[:i], tools.Content[i+2:]...)
				break
			}
		}
	}
	tools.Content = append(tools.Content, snippet("zz_*"), snippet("{rules: []}"))
	tools.Content = append(tools.Content, snippet(`"*"`), snippet(`{rules: [
		{name: global rate limit, rate_limit: 25/minute},
		{name: no drop, action: deny, when: [{path: args.query, op: eq, value: drop}], on_deny: "Dropping is not allowed."}]}`))
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), names, nil
}

// strictSequence is the calls played on a strict variant: the rate-limited
// first tool past its limit with a failed call among them, the budget tool
// past its budget (and with costs that are missing or not numbers), every
// tool, a call the wildcard denial stops, the glob-listed tool and an
// unknown one. The global rate limit bites somewhere along the way.
func strictSequence(tools []string) []parityCall {
	first, last := tools[0], tools[len(tools)-1]
	cost := func(c any) map[string]any { return map[string]any{"cost": c, "query": "q"} }
	seq := []parityCall{
		{tool: first, args: cost(1)}, {tool: first, args: cost(1), fail: true}, {tool: first, args: cost(1)},
		{tool: first, args: cost(1)}, {tool: first, args: cost(1)}, {tool: first, args: cost(1)},
		{tool: last, args: cost(3)}, {tool: last, args: cost(3)}, {tool: last, args: cost(3)},
		{tool: last, args: cost(2.9), fail: true}, {tool: last, args: cost(-1)}, {tool: last, args: cost(2)},
		{tool: last, args: map[string]any{"query": "q"}}, {tool: last, args: cost("2")}, {tool: last},
	}
	for i, tool := range tools {
		seq = append(seq, parityCall{tool: tool, args: cost(0), fail: i%4 == 1})
	}
	seq = append(seq,
		parityCall{tool: first, args: map[string]any{"cost": 0, "query": "drop"}},
		parityCall{tool: "zz_extra", args: cost(0)},
		parityCall{tool: "no_such_tool_xyz", args: cost(0)},
	)
	return seq
}

func abbrev(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
