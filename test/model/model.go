// Package model is a reference model of how a call is decided (policy.md §3
// and §5, completed by docs/semantics-choices.md), written straight from the
// spec for differential tests against the generated Rego and the Wasm
// runtime. It favours being obviously correct over being fast: it walks the
// policy files for every call.
package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/compiler/regogen"
)

// Input is the decision input of policy.md §6 as encoding/json decodes it
// with UseNumber: numbers are json.Number, objects map[string]any, lists []any.
type Input struct {
	Server      string
	Tool        string
	Annotations map[string]any
	Arguments   any
	Subject     string
	Groups      []any
	Claims      map[string]any
	// State maps "<scope>.<counter>" to the counter's value.
	State map[string]any
}

// ParseInput decodes a §6 input document.
func ParseInput(data []byte) (Input, error) {
	var doc struct {
		Server string
		Tool   struct {
			Name        string
			Annotations map[string]any
		}
		Arguments any
		Identity  struct {
			Subject string
			Groups  []any
			Claims  map[string]any
		}
		State map[string]any
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return Input{}, fmt.Errorf("decoding input: %w", err)
	}
	return Input{
		Server: doc.Server, Tool: doc.Tool.Name, Annotations: doc.Tool.Annotations,
		Arguments: doc.Arguments, Subject: doc.Identity.Subject, Groups: doc.Identity.Groups,
		Claims: doc.Identity.Claims, State: doc.State,
	}, nil
}

// link is one rule of a call's chain, with the file and tools key it sits under.
type link struct {
	file *policy.File
	key  string
	rule *policy.Rule
}

func (l link) id() string { return regogen.RuleID(l.file, l.key, l.rule.Name) }
func (l link) shadow() bool {
	return l.file.Mode == policy.ModeShadow || l.rule.Mode == policy.ModeShadow
}
func (l link) applies(in call) bool { return holdsAll(l.rule.When, in) }

// Deviation changes how the model decides a condition, so that a test can
// reproduce another decider's known bug and tell the mismatches the bug
// explains from new ones. It gets the condition and the value its path
// resolves to (present false when missing), and returns ok false to leave
// the condition to the spec.
type Deviation func(c policy.Condition, v any, present bool) (holds, ok bool)

// Decide returns the decision for one call.
func Decide(set *policy.Set, in Input) bundles.Decision { return DecideDeviating(set, in, nil) }

// DecideDeviating is Decide with a deviation from the spec (nil for none).
func DecideDeviating(set *policy.Set, input Input, dev Deviation) bundles.Decision {
	in := call{&input, dev}
	var srv *policy.Server
	for _, s := range set.Servers {
		if s.Name == in.Server {
			srv = s
		}
	}
	if srv == nil {
		return bundles.Decision{Decision: bundles.Deny, Message: regogen.UnknownServerMessage(in.Server)}
	}
	// Shadow hides and rules are all evaluated, whatever the enforced
	// outcome (choice 11: "every shadow rule … that would have stopped the
	// call or asked for approval, in chain order").
	var d bundles.Decision
	for _, f := range srv.Files {
		if f.Mode == policy.ModeShadow && hides(f, in.Tool) {
			d.Shadow = append(d.Shadow, bundles.ShadowOutcome{Would: "deny", Rule: f.Path + "#hide", Message: regogen.HiddenMessage(in.Tool)})
		}
	}
	// A server whose files are all in shadow mode logs its default deny
	// too, and does not enforce it (policy.md §5: the file is not enforced).
	allShadow := true
	for _, f := range srv.Files {
		allShadow = allShadow && f.Mode == policy.ModeShadow
	}
	if allShadow && srv.Default == "deny" && !listed(srv, in.Tool) {
		d.Shadow = append(d.Shadow, bundles.ShadowOutcome{Would: "deny", Rule: srv.Files[0].Path + "#default", Message: regogen.NotPermittedMessage(in.Tool)})
	}
	links := chain(srv, in.Tool)
	for _, l := range links {
		if !l.shadow() || !l.applies(in) {
			continue
		}
		switch {
		case l.rule.Action == policy.ActionRequireApproval:
			d.Shadow = append(d.Shadow, bundles.ShadowOutcome{Would: "require_approval", Rule: l.id(), Message: regogen.ApprovalMessage(l.rule)})
		case l.stops(in):
			d.Shadow = append(d.Shadow, bundles.ShadowOutcome{Would: "deny", Rule: l.id(), Message: regogen.DenyMessage(l.rule)})
		}
	}
	deny := func(rule, msg string) bundles.Decision {
		d.Decision, d.Rule, d.Message = bundles.Deny, rule, msg
		return d
	}

	// Step 1: hide.
	for _, f := range srv.Files {
		if f.Mode != policy.ModeShadow && hides(f, in.Tool) {
			return deny(f.Path+"#hide", regogen.HiddenMessage(in.Tool))
		}
	}

	// Step 2: default deny, for a tool no exact or glob key lists.
	if srv.Default == "deny" && !listed(srv, in.Tool) && !allShadow {
		return deny(srv.Files[0].Path+"#default", regogen.NotPermittedMessage(in.Tool))
	}

	// Step 3: the first enforced rule that stops the call decides; approval
	// rules do not stop it (deny beats approval).
	var approval *link
	var counted []link
	for _, l := range links {
		if l.shadow() || !l.applies(in) {
			continue
		}
		switch {
		case l.rule.Action == policy.ActionRequireApproval:
			if approval == nil {
				approval = &l
			}
		case l.stops(in):
			return deny(l.id(), regogen.DenyMessage(l.rule))
		case l.rule.State != nil:
			counted = append(counted, l)
		}
	}

	// Step 4: the counters to reserve, in chain order. One without an
	// amount is listed as invalid: the host, reserving in turn, denies
	// the call with "Internal policy error" when it reaches it (an earlier
	// counter's refusal comes first, as in PolicyLayer's reservation).
	for _, l := range counted {
		d.Counters = append(d.Counters, reservation(l, in.Input))
	}

	if approval != nil {
		d.Decision, d.Rule, d.Message = bundles.RequireApproval, approval.id(), regogen.ApprovalMessage(approval.rule)
		d.Approval = &bundles.Approval{Rule: approval.id(), TimeoutSeconds: int64(approval.rule.ApprovalTimeout / time.Second)}
		return d
	}
	d.Decision = bundles.Allow
	return d
}

// stops reports whether a rule that applies stops the call: a deny rule
// always, an evaluate rule unless all its conditions hold.
func (l link) stops(in call) bool {
	switch l.rule.Action {
	case policy.ActionDeny:
		return true
	case policy.ActionEvaluate:
		return !holdsAll(l.rule.Conditions, in)
	}
	return false
}

// chain returns the rules a call of tool runs through (choice 4): the exact
// key's, then each matching glob key's, then "*"'s; files in path order.
func chain(srv *policy.Server, tool string) []link {
	var exact, globs, star []link
	for _, f := range srv.Files {
		for _, t := range f.Tools {
			for i := range t.Rules {
				l := link{f, t.Key, &t.Rules[i]}
				switch {
				case t.Key == policy.Wildcard:
					star = append(star, l)
				case policy.IsGlob(t.Key):
					if matchKey(t.Key, tool) {
						globs = append(globs, l)
					}
				case matchKey(t.Key, tool):
					exact = append(exact, l)
				}
			}
		}
	}
	return append(append(exact, globs...), star...)
}

func hides(f *policy.File, tool string) bool {
	for _, h := range f.Hide {
		if h.Value == policy.Wildcard || matchKey(h.Value, tool) {
			return true
		}
	}
	return false
}

// matchKey matches an exact name or a glob (not "*") against a tool name.
// A glob matches as a glob only: "get_*" does not name the tool "get_*"
// unless its pattern matches it (it does: "*" matches "*").
func matchKey(key, tool string) bool {
	if policy.IsGlob(key) {
		return globMatch(key, tool)
	}
	return key == tool
}

// listed reports whether an exact or glob key (not "*") of any of the
// server's files names tool.
func listed(srv *policy.Server, tool string) bool {
	for _, f := range srv.Files {
		for _, t := range f.Tools {
			if t.Key != policy.Wildcard && matchKey(t.Key, tool) {
				return true
			}
		}
	}
	return false
}

// reservation is what an enforced counting rule asks the host to reserve;
// Invalid when its increment_from argument is missing or not a number
// within the int64 range (choice 8).
func reservation(l link, in *Input) bundles.Reservation {
	st := l.rule.State
	res := bundles.Reservation{
		Key: policy.CounterKey(l.key, st.Counter), Amount: st.Increment, Window: st.Window,
		Rule: l.id(), Message: regogen.CounterMessage(l.rule), Limit: limit(l),
	}
	if st.IncrementFrom != "" {
		res.Amount = 0
		v, ok := walk(in.Arguments, strings.TrimPrefix(st.IncrementFrom, "args."))
		n, isNum := number(v)
		if !ok || !isNum {
			res.Invalid = true
			return res
		}
		q := new(big.Int).Quo(n.Num(), n.Denom()) // truncated toward zero
		if !q.IsInt64() {
			res.Invalid = true
			return res
		}
		res.Amount = q.Int64()
	}
	return res
}

// limit is the most a counter may reach (§3 "Counters"): the number in its
// rule's own lte condition on it, or that number minus one for lt; as a
// whole number (rounded down), held within int64 (no int64 counter can pass
// a larger limit). nil when the rule has no such condition.
func limit(l link) *int64 {
	path := "state." + policy.CounterKey(l.key, l.rule.State.Counter)
	for _, c := range l.rule.Conditions {
		n, ok := exactNumber(c.Value)
		if c.Path != path || !ok || c.Op != "lte" && c.Op != "lt" {
			continue
		}
		floor := new(big.Int).Div(n.Num(), n.Denom()) // Euclidean: rounds down, as Denom > 0
		if c.Op == "lt" {
			floor.Sub(floor, big.NewInt(1))
		}
		if floor.Cmp(big.NewInt(math.MaxInt64)) > 0 {
			floor.SetInt64(math.MaxInt64)
		}
		if floor.Cmp(big.NewInt(math.MinInt64)) < 0 {
			floor.SetInt64(math.MinInt64)
		}
		v := floor.Int64()
		return &v
	}
	return nil
}

// lookup resolves a condition path (§3 "Paths", §5); false means the
// value is missing.
func lookup(in *Input, path string) (any, bool) {
	switch {
	case path == "server":
		return in.Server, true
	case path == "tool.name":
		return in.Tool, true
	case path == "identity.subject":
		return in.Subject, true
	case path == "identity.groups":
		return in.Groups, true
	case strings.HasPrefix(path, "args."):
		return walk(in.Arguments, strings.TrimPrefix(path, "args."))
	case strings.HasPrefix(path, "identity.claims."):
		return walk(in.Claims, strings.TrimPrefix(path, "identity.claims."))
	case strings.HasPrefix(path, "tool.annotations."):
		return walk(in.Annotations, strings.TrimPrefix(path, "tool.annotations."))
	case strings.HasPrefix(path, "state."):
		if v, ok := in.State[strings.TrimPrefix(path, "state.")]; ok {
			return v, true
		}
		return json.Number("0"), true // choice 6: an unsent counter reads 0
	}
	return nil, false
}

// walk follows dotted keys through nested objects (no array indexing).
func walk(v any, dotted string) (any, bool) {
	for _, k := range strings.Split(dotted, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// call is the input of one call, and the model's deviation for it.
type call struct {
	*Input
	dev Deviation
}

func holdsAll(conds []policy.Condition, in call) bool {
	for _, c := range conds {
		if !holds(c, in) {
			return false
		}
	}
	return true
}

// holds decides one condition (policy.md §3, "Operators").
func holds(c policy.Condition, in call) bool {
	v, present := lookup(in.Input, c.Path)
	if in.dev != nil {
		if h, ok := in.dev(c, v, present); ok {
			return h
		}
	}
	if c.Op == "exists" {
		return (present && v != nil) == c.Value.(bool)
	}
	if !present {
		return false
	}
	switch c.Op {
	case "eq":
		return eq(v, c.Value)
	case "neq":
		return !eq(v, c.Value)
	case "in":
		return in_(v, c.Value)
	case "not_in":
		return !in_(v, c.Value)
	case "lt", "lte", "gt", "gte":
		x, ok1 := number(v)
		y, ok2 := number(c.Value)
		if !ok1 || !ok2 {
			return false
		}
		cmp := x.Cmp(y)
		return c.Op == "lt" && cmp < 0 || c.Op == "lte" && cmp <= 0 || c.Op == "gt" && cmp > 0 || c.Op == "gte" && cmp >= 0
	case "regex":
		s, ok := v.(string)
		return ok && regexp.MustCompile(c.Value.(string)).MatchString(s)
	case "contains":
		switch x := v.(type) {
		case string: // the expected value must be a string: a substring
			sub, ok := c.Value.(string)
			return ok && strings.Contains(x, sub)
		case []any:
			for _, e := range x {
				if eq(e, c.Value) {
					return true
				}
			}
		}
		return false
	}
	panic("model: unknown operator " + c.Op)
}

func in_(v, list any) bool {
	for _, e := range list.([]any) {
		if eq(v, e) {
			return true
		}
	}
	return false
}

// Eq is the eq operator of policy.md §3 on an input value a and a policy
// value b: numerically equal when both are numbers, else equal plain text
// forms; a list or object equals no scalar.
func Eq(a, b any) bool { return eq(a, b) }

func eq(a, b any) bool {
	x, ok1 := number(a)
	y, ok2 := number(b)
	if ok1 && ok2 {
		return x.Cmp(y) == 0
	}
	if n, ok := a.(json.Number); ok {
		if s, ok := b.(string); ok {
			return numberIsText(n, s)
		}
	}
	if n, ok := b.(json.Number); ok {
		if s, ok := a.(string); ok {
			return numberIsText(n, s)
		}
	}
	ta, ok1 := text(a)
	tb, ok2 := text(b)
	return ok1 && ok2 && ta == tb
}

// numberIsText reports whether a call's number n has the plain text form
// s (choice 9): what Go prints for n read as a float64, as PolicyLayer
// reads it ("5", "5.5", "1e+21"); a JSON -0 reads as 0. A number beyond
// float64's range has no text form.
func numberIsText(n json.Number, s string) bool {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return false
	}
	if f == 0 {
		f = 0 // -0 reads as 0
	}
	return policy.TextForm(f) == s
}

// number returns the value conditions compare v with when it is a number
// (choice 12): PolicyLayer reads a call's JSON numbers and a policy's YAML
// ints and floats as float64, so v's value is the float64 nearest to it,
// as the shortest decimal that gives it (0.1, not 0.1000000000000000055…;
// 9007199254740993 is 9007199254740992). A JSON number beyond float64's
// range keeps its exact value (the host sends it as it came).
func number(v any) (*big.Rat, bool) {
	var f float64
	switch n := v.(type) {
	case json.Number:
		var err error
		if f, err = strconv.ParseFloat(string(n), 64); err != nil {
			return exactNumber(v)
		}
	case int:
		f = float64(n)
	case int64:
		f = float64(n)
	case uint64:
		f = float64(n)
	case float64:
		f = n
	default:
		return nil, false
	}
	return new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
}

// exactNumber returns v's exact value when it is a number: a JSON number
// from the input, or a YAML int or float from the policy. A YAML float is
// read as the shortest decimal that gives it, the number its author wrote.
// Counter limits are exact whole numbers (choice 13).
func exactNumber(v any) (*big.Rat, bool) {
	var s string
	switch n := v.(type) {
	case json.Number:
		s = string(n)
	case int:
		s = strconv.Itoa(n)
	case int64:
		s = strconv.FormatInt(n, 10)
	case uint64:
		s = strconv.FormatUint(n, 10)
	case float64:
		s = strconv.FormatFloat(n, 'g', -1, 64)
	default:
		return nil, false
	}
	r, ok := new(big.Rat).SetString(s)
	return r, ok
}

// text is the plain text form of a scalar that is not a call's number
// (choice 9): Go's %v of the value as PolicyLayer decodes it — a policy's
// YAML int prints as an integer ("5000000"), a YAML float as a float64
// ("5e+06"); false for a list or an object.
func text(v any) (string, bool) {
	switch v.(type) {
	case []any, map[string]any, json.Number:
		return "", false
	}
	return policy.TextForm(v), true
}

// globMatch matches a tools key or hide glob against a tool name: "*" any
// run of characters, "?" one character, "[…]" one character of a class
// ("[!…]" or "[^…]" negated, "a-z" ranges).
func globMatch(glob, name string) bool {
	if glob == "" {
		return name == ""
	}
	switch glob[0] {
	case '*':
		for i := 0; ; {
			if globMatch(glob[1:], name[i:]) {
				return true
			}
			if i == len(name) {
				return false
			}
			_, size := utf8.DecodeRuneInString(name[i:])
			i += size
		}
	case '?':
		if name == "" {
			return false
		}
		_, size := utf8.DecodeRuneInString(name)
		return globMatch(glob[1:], name[size:])
	case '[':
		end := strings.IndexByte(glob[1:], ']') + 1
		class := glob[1:end]
		if name == "" {
			return false
		}
		r, size := utf8.DecodeRuneInString(name)
		negate := class[0] == '!' || class[0] == '^'
		if negate {
			class = class[1:]
		}
		if inClass(class, r) == negate {
			return false
		}
		return globMatch(glob[end+1:], name[size:])
	}
	r, size := utf8.DecodeRuneInString(glob)
	n, nsize := utf8.DecodeRuneInString(name)
	return name != "" && r == n && globMatch(glob[size:], name[nsize:])
}

func inClass(class string, r rune) bool {
	rs := []rune(class)
	for i := 0; i < len(rs); i++ {
		if i+2 < len(rs) && rs[i+1] == '-' {
			if rs[i] <= r && r <= rs[i+2] {
				return true
			}
			i += 2
			continue
		}
		if rs[i] == r {
			return true
		}
	}
	return false
}
