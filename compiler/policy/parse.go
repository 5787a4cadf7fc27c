package policy

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits on what Parse reads; a file over them is refused with a diagnostic.
const (
	// MaxFileBytes is the largest policy file accepted.
	MaxFileBytes = 4 << 20
	// MaxNesting bounds how deep YAML values (condition values) may nest.
	MaxNesting = 32
)

// ServerName returns the server a file at filePath governs when it has no
// `server:` field: its base name without .yaml/.yml.
func ServerName(filePath string) string {
	base := path.Base(strings.ReplaceAll(filePath, `\`, "/"))
	for _, ext := range []string{".yaml", ".yml"} {
		if strings.HasSuffix(base, ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

// Parse reads one policy file. It returns the file as far as it could be
// read, and every problem found in it; the file is usable only when there
// are none. Cross-file checks are [Lint]'s.
func Parse(filePath string, data []byte) (*File, []Diagnostic) {
	p := &parser{f: &File{Path: filePath}}
	p.parse(data)
	sort.SliceStable(p.diags, func(i, j int) bool {
		a, b := p.diags[i].Pos, p.diags[j].Pos
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	return p.f, p.diags
}

type parser struct {
	f     *File
	diags []Diagnostic
}

func (p *parser) errorf(pos Pos, format string, args ...any) {
	p.diags = append(p.diags, Diagnostic{Path: p.f.Path, Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func posOf(n *yaml.Node) Pos { return Pos{Line: n.Line, Col: n.Column} }

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) parse(data []byte) {
	if len(data) > MaxFileBytes {
		p.errorf(Pos{1, 1}, "file is %d bytes, over the %d-byte limit", len(data), MaxFileBytes)
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.yamlError(err)
		return
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.errorf(Pos{1, 1}, "empty policy file: it needs at least `version: \"1\"`")
		return
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.errorf(posOf(root), "a policy file must be a mapping of fields (version, default, tools, …), not %s", kindName(root))
		return
	}
	if depth(root, 0) > MaxNesting+6 {
		p.errorf(posOf(root), "values nest deeper than %d levels", MaxNesting)
		return
	}
	seenVersion := false
	p.fields(root, topFields, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			seenVersion = true
			if v.Kind != yaml.ScalarNode || v.Value != "1" || (v.Tag != "!!str" && v.Tag != "!!int") {
				p.errorf(posOf(v), "version: must be \"1\" (PolicyLayer policy v1), got %s", show(v))
				return
			}
			p.f.Version = "1"
		case "description":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				break // `description:` with nothing: none, as PolicyLayer reads it
			}
			if s, ok := p.str(v, "description"); ok {
				p.f.Description = s
			}
		case "default":
			p.f.DefaultPos = posOf(v)
			if s, ok := p.str(v, "default"); ok {
				if s != "allow" && s != "deny" {
					p.errorf(posOf(v), "default: must be \"allow\" or \"deny\", got %q", s)
					return
				}
				p.f.Default = s
			}
		case "server":
			p.f.ServerPos = posOf(v)
			if s, ok := p.str(v, "server"); ok {
				if s == "" {
					p.errorf(posOf(v), "server: must not be empty (leave it out to use the file name)")
					return
				}
				p.f.Server = s
			}
		case "mode":
			if s, ok := p.str(v, "mode"); ok {
				if s != ModeShadow && s != "enforce" {
					p.errorf(posOf(v), "mode: must be \"shadow\" or \"enforce\", got %q", s)
					return
				}
				if s == ModeShadow {
					p.f.Mode = ModeShadow
				}
			}
		case "hide":
			p.hide(v)
		case "tools":
			p.tools(v)
		}
	})
	if !seenVersion {
		p.errorf(posOf(root), "version: missing; every policy file starts with `version: \"1\"`")
	}
	if p.f.Default == "" {
		p.f.Default = "allow"
	}
	if p.f.Server == "" {
		p.f.Server = ServerName(p.f.Path)
	}
}

func (p *parser) yamlError(err error) {
	first := YAMLProblems(err)[0]
	p.errorf(Pos{first.Line, 1}, "%s", first.Msg)
}

// YAMLProblem is one problem yaml.v3 reported, at the line it names.
type YAMLProblem struct {
	Line int    // 1 when yaml.v3 named none
	Msg  string // "yaml: …", without the line
}

// YAMLProblems splits an error of yaml.v3 into its problems (a type error
// holds one per value it could not decode), so that each can be reported
// as file:line:col. It returns at least one.
func YAMLProblems(err error) []YAMLProblem {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs = msgs[:0]
		for _, e := range te.Errors {
			msgs = append(msgs, "yaml: "+e)
		}
	}
	out := make([]YAMLProblem, 0, len(msgs))
	for _, msg := range msgs {
		// yaml.v3 quotes the value it could not decode as it stands in
		// the file, newlines and all: one problem stays on one line.
		msg = strings.ReplaceAll(msg, "\n", `\n`)
		line := 1
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = "yaml: " + m[2]
		}
		out = append(out, YAMLProblem{Line: line, Msg: msg})
	}
	return out
}

func depth(n *yaml.Node, d int) int {
	best := d
	if d > MaxNesting+6 {
		return d
	}
	for _, c := range n.Content {
		if cd := depth(c, d+1); cd > best {
			best = cd
		}
	}
	return best
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "null"
	}
	return "a scalar"
}

func show(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		if n.Tag == "!!str" {
			return strconv.Quote(n.Value)
		}
		return n.Value
	}
	return kindName(n)
}

var (
	topFields      = []string{"version", "description", "default", "hide", "tools", "server", "mode"}
	toolFields     = []string{"rules"}
	ruleFields     = []string{"name", "action", "conditions", "on_deny", "rate_limit", "state", "when", "mode", "approval_timeout", "approvers"}
	approverFields = []string{"subjects", "groups"}
	condFields     = []string{"path", "op", "value"}
	stateFields    = []string{"counter", "window", "increment", "increment_from"}
)

// fields walks a mapping, reporting unknown and duplicate keys, and calls fn
// for each known key in file order.
func (p *parser) fields(m *yaml.Node, known []string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(posOf(k), "field names must be plain strings")
			continue
		}
		if seen[k.Value] {
			p.errorf(posOf(k), "%s: given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		if !contains(known, k.Value) {
			if k.Value == "cases" && strings.HasSuffix(p.f.Path, "_test.yml") {
				p.errorf(posOf(k), "unknown field %q: policy tests are files named *_test.yaml (policy.md §1); this one is read as a policy, rename it", k.Value)
			} else if s := Suggest(k.Value, known); s != "" {
				p.errorf(posOf(k), "unknown field %q (did you mean %q?)", k.Value, s)
			} else {
				p.errorf(posOf(k), "unknown field %q (known here: %s)", k.Value, strings.Join(known, ", "))
			}
			continue
		}
		if v.Kind == yaml.AliasNode {
			p.errorf(posOf(v), "%s: YAML aliases are not supported in policy files", k.Value)
			continue
		}
		fn(k.Value, k, v)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Suggest returns the known name closest to s, if it is close enough to be
// a likely typo.
func Suggest(s string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if d := editDistance(strings.ToLower(s), k); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= 2 || bestD <= len(best)/3 {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (p *parser) str(v *yaml.Node, field string) (string, bool) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		p.errorf(posOf(v), "%s: must be a string, got %s", field, kindName(v))
		return "", false
	}
	return v.Value, true
}

func (p *parser) hide(v *yaml.Node) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "hide: must be a list of tool names, got %s", kindName(v))
		return
	}
	seen := map[string]bool{}
	for _, e := range v.Content {
		s, ok := p.str(e, "hide entry")
		if !ok {
			continue
		}
		switch {
		case strings.TrimSpace(s) == "":
			p.errorf(posOf(e), "hide: empty tool name")
			continue
		case seen[s]:
			p.errorf(posOf(e), "hide: %q is listed twice", s)
			continue
		}
		if err := checkGlob(s); err != nil {
			p.errorf(posOf(e), "hide: %q: %v", s, err)
			continue
		}
		seen[s] = true
		p.f.Hide = append(p.f.Hide, Name{s, posOf(e)})
	}
}

func (p *parser) tools(v *yaml.Node) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(posOf(v), "tools: must be a mapping from tool name to {rules: [...]}, got %s", kindName(v))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, tv := v.Content[i], v.Content[i+1]
		key, ok := p.str(k, "tool name")
		if !ok {
			continue
		}
		if strings.TrimSpace(key) == "" {
			p.errorf(posOf(k), "tools: empty tool name")
			continue
		}
		if seen[key] {
			p.errorf(posOf(k), "tools: %q is given twice", key)
			continue
		}
		seen[key] = true
		if err := checkGlob(key); err != nil {
			p.errorf(posOf(k), "tools: %q: %v", key, err)
			continue
		}
		t := Tool{Key: key, Pos: posOf(k)}
		switch {
		case tv.Kind == yaml.ScalarNode && tv.Tag == "!!null":
			// `tool:` with nothing under it lists the tool with no rules.
		case tv.Kind != yaml.MappingNode:
			p.errorf(posOf(tv), "tools.%s: must be a mapping with `rules:`, got %s", key, kindName(tv))
		default:
			p.fields(tv, toolFields, func(_ string, _, rv *yaml.Node) {
				t.Rules = p.rules(key, rv)
			})
		}
		p.f.Tools = append(p.f.Tools, t)
	}
}

func (p *parser) rules(tool string, v *yaml.Node) []Rule {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "tools.%s.rules: must be a list, got %s", tool, kindName(v))
		return nil
	}
	var out []Rule
	names := map[string]bool{}
	for _, rn := range v.Content {
		if rn.Kind != yaml.MappingNode {
			p.errorf(posOf(rn), "tools.%s.rules: each rule must be a mapping, got %s", tool, kindName(rn))
			continue
		}
		r, ok := p.rule(tool, rn)
		if !ok {
			continue
		}
		if r.Name != "" {
			if names[r.Name] {
				p.errorf(r.Pos, "rule %q: another rule of %q has the same name", r.Name, tool)
				continue
			}
			names[r.Name] = true
		}
		out = append(out, r)
	}
	return out
}

func (p *parser) rule(tool string, rn *yaml.Node) (Rule, bool) {
	r := Rule{Pos: posOf(rn)}
	var rateNode, stateNode, actionNode, timeoutNode, condNode, approversNode *yaml.Node
	var hasConditions, hasAction bool
	p.fields(rn, ruleFields, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			if s, ok := p.str(v, "name"); ok {
				r.Name = s
			}
		case "action":
			actionNode = v
			if s, ok := p.str(v, "action"); ok {
				r.Action, hasAction = s, true
			}
		case "conditions":
			hasConditions, condNode = true, v
			r.Conditions = p.conditions("conditions", v)
		case "when":
			r.When = p.conditions("when", v)
			if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
				p.errorf(posOf(v), "when: an empty list; remove it or give it conditions")
			}
		case "on_deny":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				break // `on_deny:` with nothing: no message, as PolicyLayer reads it
			}
			if s, ok := p.str(v, "on_deny"); ok {
				r.OnDeny, r.HasOnDeny = s, true
			}
		case "rate_limit":
			rateNode = v
		case "state":
			stateNode = v
		case "mode":
			if s, ok := p.str(v, "mode"); ok {
				if s != ModeShadow && s != "enforce" {
					p.errorf(posOf(v), "mode: must be \"shadow\" or \"enforce\", got %q", s)
				} else if s == ModeShadow {
					r.Mode = ModeShadow
				}
			}
		case "approval_timeout":
			timeoutNode = v
		case "approvers":
			approversNode = v
		}
	})
	label := fmt.Sprintf("tools.%s: rule %q", tool, r.Name)
	if r.Name == "" {
		label = fmt.Sprintf("tools.%s: rule", tool)
		p.errorf(r.Pos, "%s: `name` is required", label)
	}
	switch {
	case r.Action == "" && !hasAction:
		r.Action = ActionEvaluate
	case r.Action == ActionEvaluate, r.Action == ActionDeny, r.Action == ActionRequireApproval:
	default:
		msg := fmt.Sprintf("%s: unknown action %q (want evaluate, deny or require_approval)", label, r.Action)
		if s := Suggest(r.Action, []string{ActionEvaluate, ActionDeny, ActionRequireApproval}); s != "" {
			msg = fmt.Sprintf("%s: unknown action %q (did you mean %q?)", label, r.Action, s)
		}
		p.errorf(posOf(actionNode), "%s", msg)
		return r, false
	}
	if timeoutNode != nil {
		if r.Action != ActionRequireApproval {
			p.errorf(posOf(timeoutNode), "%s: approval_timeout needs action: require_approval", label)
		} else if s, ok := p.str(timeoutNode, "approval_timeout"); ok {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				p.errorf(posOf(timeoutNode), "%s: approval_timeout: %q is not a positive duration such as 30m", label, s)
			} else {
				r.ApprovalTimeout = d
			}
		}
	}
	if r.Action == ActionRequireApproval && r.ApprovalTimeout == 0 {
		r.ApprovalTimeout = DefaultApprovalTimeout
	}
	if approversNode != nil {
		if r.Action != ActionRequireApproval {
			p.errorf(posOf(approversNode), "%s: approvers needs action: require_approval", label)
		} else {
			r.Approvers = p.approvers(label, approversNode)
		}
	}
	if stateNode != nil {
		r.State = p.state(label, stateNode)
	}
	if rateNode != nil {
		pos := posOf(rateNode)
		switch {
		case hasConditions:
			p.errorf(pos, "%s: rate_limit cannot be combined with conditions; use state with an lte condition instead", label)
		case stateNode != nil:
			p.errorf(pos, "%s: rate_limit cannot be combined with state", label)
		case r.Action == ActionDeny:
			p.errorf(pos, "%s: rate_limit cannot be combined with action: deny", label)
		case r.Action == ActionRequireApproval:
			p.errorf(pos, "%s: rate_limit cannot be combined with action: require_approval", label)
		default:
			if rl, ok := p.rateLimit(label, rateNode); ok {
				r.RateLimit = rl
				counter := "_rate_" + rl.Window
				r.State = &State{Counter: counter, Window: rl.Window, Increment: 1, Pos: pos}
				r.Conditions = []Condition{{
					Path: "state." + scopeOf(tool) + "." + counter, Op: "lte", Value: int(rl.N),
					HasValue: true, Pos: pos, Generated: true,
				}}
				if !r.HasOnDeny || r.OnDeny == "" { // `on_deny: ""` is no message, as for every rule
					r.OnDeny, r.HasOnDeny = fmt.Sprintf("Rate limit of %d per %s reached. Try again later.", rl.N, rl.Window), true
				}
			}
		}
	}
	switch r.Action {
	case ActionDeny:
		if len(r.Conditions) > 0 || hasConditions {
			p.errorf(r.Pos, "%s: a deny rule always denies and takes no conditions (use `when:` to deny only some calls)", label)
		}
	case ActionEvaluate:
		// A conditions list whose entries are all bad has been reported
		// entry by entry; only a missing or empty list is reported here.
		noConditions := condNode == nil || condNode.Kind == yaml.SequenceNode && len(condNode.Content) == 0
		if noConditions && rateNode == nil {
			p.errorf(r.Pos, "%s: an evaluate rule needs at least one condition", label)
		}
	case ActionRequireApproval:
		if hasConditions {
			p.errorf(r.Pos, "%s: a require_approval rule takes `when:`, not `conditions:`", label)
		}
	}
	return r, true
}

// scopeOf returns the counter scope of rules under a tools key.
func scopeOf(key string) string {
	if key == Wildcard {
		return GlobalScope
	}
	return key
}

// approvers reads a rule's `approvers:` (extension): who may decide its
// approvals, as subjects and groups.
func (p *parser) approvers(label string, v *yaml.Node) *Approvers {
	if v.Kind != yaml.MappingNode {
		p.errorf(posOf(v), "%s: approvers: must be a mapping with subjects and/or groups, got %s", label, kindName(v))
		return nil
	}
	a := &Approvers{}
	p.fields(v, approverFields, func(key string, k, lv *yaml.Node) {
		if lv.Kind != yaml.SequenceNode {
			p.errorf(posOf(lv), "%s: approvers.%s: must be a list of names, got %s", label, key, kindName(lv))
			return
		}
		seen := map[string]bool{}
		for _, e := range lv.Content {
			s, ok := p.str(e, "approvers."+key+" entry")
			switch {
			case !ok:
				continue
			case strings.TrimSpace(s) == "":
				p.errorf(posOf(e), "%s: approvers.%s: empty name", label, key)
				continue
			case seen[s]:
				p.errorf(posOf(e), "%s: approvers.%s: %q is listed twice", label, key, s)
				continue
			}
			seen[s] = true
			if key == "subjects" {
				a.Subjects = append(a.Subjects, s)
			} else {
				a.Groups = append(a.Groups, s)
			}
		}
	})
	if len(a.Subjects) == 0 && len(a.Groups) == 0 {
		p.errorf(posOf(v), "%s: approvers: name at least one subject or group (or remove approvers: to let any approver decide)", label)
		return nil
	}
	return a
}

func (p *parser) rateLimit(label string, v *yaml.Node) (*RateLimit, bool) {
	s, ok := p.str(v, "rate_limit")
	if !ok {
		return nil, false
	}
	n, w, found := strings.Cut(s, "/")
	count, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	w = strings.TrimSpace(w)
	if !found || err != nil || count <= 0 || Windows[w] == 0 {
		p.errorf(posOf(v), "%s: rate_limit %q must be N/minute, N/hour or N/day with N a positive whole number", label, s)
		return nil, false
	}
	return &RateLimit{N: count, Window: w}, true
}

func (p *parser) state(label string, v *yaml.Node) *State {
	if v.Kind != yaml.MappingNode {
		p.errorf(posOf(v), "%s: state must be a mapping {counter, window, increment | increment_from}, got %s", label, kindName(v))
		return nil
	}
	st := &State{Increment: 1, Pos: posOf(v)}
	var hasCounter, hasWindow, hasIncrement bool
	ok := true
	p.fields(v, stateFields, func(key string, k, fv *yaml.Node) {
		switch key {
		case "counter":
			hasCounter = true
			s, good := p.str(fv, "state.counter")
			switch {
			case !good:
				ok = false
			case strings.TrimSpace(s) == "":
				p.errorf(posOf(fv), "%s: state.counter must not be empty", label)
				ok = false
			case strings.ContainsAny(s, ". \t"):
				p.errorf(posOf(fv), "%s: state.counter %q must not contain dots or spaces", label, s)
				ok = false
			default:
				st.Counter = s
			}
		case "window":
			hasWindow = true
			s, good := p.str(fv, "state.window")
			if good && Windows[s] == 0 {
				p.errorf(posOf(fv), "%s: state.window %q must be minute, hour or day", label, s)
				good = false
			}
			if !good {
				ok = false
			}
			st.Window = s
		case "increment":
			hasIncrement = true
			n, err := strconv.ParseInt(fv.Value, 10, 64)
			if fv.Kind != yaml.ScalarNode || fv.Tag != "!!int" || err != nil || n < 0 {
				p.errorf(posOf(fv), "%s: state.increment must be a whole number, 1 or more (0 means 1, the default), got %s", label, show(fv))
				ok = false
			}
			if n == 0 {
				n = 1 // as PolicyLayer reads it: 0 is the default
				hasIncrement = false
			}
			st.Increment = n
		case "increment_from":
			s, good := p.str(fv, "state.increment_from")
			if good && (!strings.HasPrefix(s, "args.") || len(s) == len("args.")) {
				p.errorf(posOf(fv), "%s: state.increment_from %q must be a path under args. (such as args.amount)", label, s)
				good = false
			}
			if !good {
				ok = false
			}
			st.IncrementFrom = s
		}
	})
	if !hasCounter {
		p.errorf(posOf(v), "%s: state.counter is required", label)
		ok = false
	}
	if !hasWindow {
		p.errorf(posOf(v), "%s: state.window is required (minute, hour or day)", label)
		ok = false
	}
	if hasIncrement && st.IncrementFrom != "" {
		p.errorf(posOf(v), "%s: state takes increment or increment_from, not both", label)
		ok = false
	}
	if !ok && st.Counter == "" {
		return nil
	}
	// With a valid counter name the state is kept even when its other
	// fields are bad (the file has diagnostics either way), so that Lint
	// does not also report conditions on this counter as undefined.
	return st
}

// Operators a condition may use.
var Operators = []string{"eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists"}

func (p *parser) conditions(field string, v *yaml.Node) []Condition {
	if v.Kind != yaml.SequenceNode {
		p.errorf(posOf(v), "%s: must be a list of {path, op, value}, got %s", field, kindName(v))
		return nil
	}
	var out []Condition
	for _, cn := range v.Content {
		if cn.Kind != yaml.MappingNode {
			p.errorf(posOf(cn), "%s: each condition must be a mapping {path, op, value}, got %s", field, kindName(cn))
			continue
		}
		c := Condition{Pos: posOf(cn)}
		var pathNode, opNode, valueNode *yaml.Node
		p.fields(cn, condFields, func(key string, _, fv *yaml.Node) {
			switch key {
			case "path":
				pathNode = fv
			case "op":
				opNode = fv
			case "value":
				valueNode = fv
			}
		})
		good := true
		if pathNode == nil {
			p.errorf(c.Pos, "%s: condition needs a path", field)
			good = false
		} else if s, ok := p.str(pathNode, "path"); ok {
			c.Path = s
			if err := checkPath(s); err != nil {
				p.errorf(posOf(pathNode), "%s: path %q: %v", field, s, err)
				good = false
			}
		} else {
			good = false
		}
		if opNode == nil {
			p.errorf(c.Pos, "%s: condition needs an op", field)
			good = false
		} else if s, ok := p.str(opNode, "op"); ok {
			c.Op = s
			if !contains(Operators, s) {
				if sg := Suggest(s, Operators); sg != "" {
					p.errorf(posOf(opNode), "%s: unknown operator %q (did you mean %q?)", field, s, sg)
				} else {
					p.errorf(posOf(opNode), "%s: unknown operator %q (known: %s)", field, s, strings.Join(Operators, ", "))
				}
				good = false
			}
		} else {
			good = false
		}
		decoded := true
		if valueNode != nil {
			c.HasValue = true
			if err := valueNode.Decode(&c.Value); err != nil {
				p.errorf(posOf(valueNode), "%s: value: %v", field, err)
				good, decoded = false, false
			}
			c.Value = timesAsText(c.Value)
		}
		// The value is checked whenever the operator is known, even when
		// the path is bad, so that every problem is reported at once.
		if decoded && contains(Operators, c.Op) && !p.checkValue(field, c, valueNode) {
			good = false
		}
		if good {
			out = append(out, c)
		}
	}
	return out
}

func (p *parser) checkValue(field string, c Condition, vn *yaml.Node) bool {
	pos := c.Pos
	if vn != nil {
		pos = posOf(vn)
	}
	bad := func(format string, args ...any) bool {
		p.errorf(pos, "%s: %s %s", field, c.Op, fmt.Sprintf(format, args...))
		return false
	}
	if !c.HasValue {
		return bad("needs a value")
	}
	switch c.Op {
	case "eq", "neq":
		if !isScalar(c.Value) {
			return bad("needs a single value (a string, number, boolean or null), not a list or mapping; for several values use in")
		}
	case "in", "not_in":
		list, ok := c.Value.([]any)
		if !ok {
			return bad("needs a list value, such as [a, b]")
		}
		for _, e := range list {
			if !isScalar(e) {
				return bad("needs a list of single values")
			}
		}
	case "lt", "lte", "gt", "gte":
		if _, ok := Number(c.Value); !ok {
			return bad("needs a number value, got %s", describe(c.Value))
		}
	case "exists":
		if _, ok := c.Value.(bool); !ok {
			return bad("needs true or false, got %s", describe(c.Value))
		}
	case "regex":
		s, ok := c.Value.(string)
		if !ok {
			return bad("needs a string pattern, got %s", describe(c.Value))
		}
		if _, err := regexp.Compile(s); err != nil {
			return bad("pattern does not compile: %v", err)
		}
	case "contains":
		if !isScalar(c.Value) {
			return bad("needs a single value, not a list or mapping")
		}
	}
	if f, ok := Number(c.Value); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
		return bad("value must be a finite number")
	}
	return true
}

// timesAsText turns the YAML timestamps in a condition value (an unquoted
// 2024-01-01, which yaml.v3 decodes as a time) into the text PolicyLayer
// compares them by, Go's %v of the time ("2024-01-01 00:00:00 +0000
// UTC"): its conditions read values as yaml.v3 decodes them and compare a
// non-number by that text, so such a file compiles here and means the same.
func timesAsText(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.String()
	case []any:
		for i, e := range x {
			x[i] = timesAsText(e)
		}
	}
	return v
}

func isScalar(v any) bool {
	switch v.(type) {
	case nil, string, bool, int, int64, uint64, float64:
		return true
	}
	return false
}

// Number reports v, a value as yaml.v3 decodes it, as a float64 when it is
// a YAML number (int, int64, uint64 or float64).
func Number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprintf("%v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%v", v)
}

// Path prefixes a condition may use: v1's args. and state., and the
// extension's identity, server and tool paths.
func checkPath(s string) error {
	switch {
	case s == "server", s == "tool.name", s == "identity.subject", s == "identity.groups":
		return nil
	case strings.HasPrefix(s, "args."), strings.HasPrefix(s, "identity.claims."), strings.HasPrefix(s, "tool.annotations."):
		rest := s[strings.Index(s, ".")+1:]
		if strings.HasPrefix(s, "identity.claims.") {
			rest = strings.TrimPrefix(s, "identity.claims.")
		} else if strings.HasPrefix(s, "tool.annotations.") {
			rest = strings.TrimPrefix(s, "tool.annotations.")
		}
		for _, el := range strings.Split(rest, ".") {
			if el == "" {
				return errors.New("has an empty element (two dots in a row, or a dot at the end)")
			}
		}
		return nil
	case strings.HasPrefix(s, "state."):
		_, _, err := SplitStatePath(s)
		return err
	}
	return errors.New("must start with args. or state. (or identity., tool., server)")
}

// SplitStatePath splits "state.<scope>.<counter>"; the counter is the part
// after the last dot, so scopes (tool names) may contain dots.
func SplitStatePath(s string) (scope, counter string, err error) {
	rest := strings.TrimPrefix(s, "state.")
	i := strings.LastIndex(rest, ".")
	if i <= 0 || i == len(rest)-1 {
		return "", "", errors.New("must be state.<scope>.<counter>, where scope is the tool name or _global")
	}
	return rest[:i], rest[i+1:], nil
}

// IsGlob reports whether a tools key or hide entry is a glob pattern
// (extension) rather than an exact tool name or "*".
func IsGlob(key string) bool {
	return key != Wildcard && strings.ContainsAny(key, "*?[")
}

func checkGlob(key string) error {
	if !IsGlob(key) {
		return nil
	}
	if _, err := GlobRegexp(key); err != nil {
		return fmt.Errorf("bad glob pattern: %v", err)
	}
	return nil
}

// GlobRegexp translates a glob ("*" any run of characters, "?" one
// character, "[…]" a character class) into an anchored RE2 pattern.
func GlobRegexp(glob string) (string, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := strings.IndexByte(glob[i+1:], ']')
			if j < 0 {
				return "", errors.New("unclosed [")
			}
			class := glob[i+1 : i+1+j]
			if class == "" || class == "!" || class == "^" {
				return "", errors.New("empty character class")
			}
			if class[0] == '!' {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += j + 1
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	b.WriteString("$")
	re := b.String()
	if _, err := regexp.Compile(re); err != nil {
		return "", err
	}
	return re, nil
}
