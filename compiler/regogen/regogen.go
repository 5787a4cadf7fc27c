// Package regogen is the compiler's middle: it turns a linted policy set
// into one Rego v1 package, "toolgate", whose rule "decision" is the
// decision contract (docs/policy.md §12).
//
// The output is meant to be read in a pull request and to run fast on OPA's
// Wasm target, which has no rule indexing:
//   - one commented block per source rule, naming its file, line and tool;
//   - per server and per listed tool, a precomputed chain of the rules that
//     can apply (exact key, matching globs, "*"), so a call evaluates only
//     its own tool's rules;
//   - dispatch on the tool name by a balanced tree of string comparisons,
//     so cost grows with log(tools), not with the number of rules;
//   - only builtins the Wasm target implements natively.
//
// Generate is deterministic: the same set gives the same bytes.
package regogen

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

// RuleID names a rule in decisions: "FILE#KEY/NAME".
func RuleID(f *policy.File, key, name string) string { return f.Path + "#" + key + "/" + name }

// ApproversByRule returns the `approvers:` of every require_approval rule
// that has them, by rule id; nil when none has.
func ApproversByRule(set *policy.Set) map[string]bundles.Approvers {
	var m map[string]bundles.Approvers
	for _, f := range set.Files {
		for _, t := range f.Tools {
			for _, r := range t.Rules {
				if r.Approvers == nil {
					continue
				}
				if m == nil {
					m = make(map[string]bundles.Approvers)
				}
				m[RuleID(f, t.Key, r.Name)] = bundles.Approvers{Subjects: r.Approvers.Subjects, Groups: r.Approvers.Groups}
			}
		}
	}
	return m
}

// DenyMessage is the message a stopping rule gives: its on_deny, else
// `Denied by rule "NAME"`.
func DenyMessage(r *policy.Rule) string {
	if r.HasOnDeny && r.OnDeny != "" {
		return r.OnDeny
	}
	return "Denied by rule " + strconv.Quote(r.Name)
}

// ApprovalMessage is the message of a call held for approval.
func ApprovalMessage(r *policy.Rule) string {
	if r.HasOnDeny && r.OnDeny != "" {
		return r.OnDeny
	}
	return "Approval required by rule " + strconv.Quote(r.Name)
}

// CounterMessage is the message when a counter's reservation is refused.
func CounterMessage(r *policy.Rule) string {
	if r.HasOnDeny && r.OnDeny != "" {
		return r.OnDeny
	}
	return "Rate limit exceeded for " + r.Name
}

// CounterLimit returns the limit of a rule's counter: the number in the
// rule's own lte condition on it, or that number minus one for lt.
func CounterLimit(toolKey string, r *policy.Rule) (int64, bool) {
	if r.State == nil {
		return 0, false
	}
	want := "state." + policy.CounterKey(toolKey, r.State.Counter)
	for _, c := range r.Conditions {
		if c.Path != want {
			continue
		}
		if c.Op != "lte" && c.Op != "lt" {
			continue
		}
		minus := int64(0)
		if c.Op == "lt" {
			minus = 1
		}
		switch n := c.Value.(type) {
		case int:
			if int64(n) == math.MinInt64 && minus == 1 {
				return math.MinInt64, true
			}
			return int64(n) - minus, true
		case int64:
			if n == math.MinInt64 && minus == 1 {
				return math.MinInt64, true
			}
			return n - minus, true
		case uint64:
			if n > math.MaxInt64 {
				return math.MaxInt64, true
			}
			return int64(n) - minus, true
		case float64:
			// Counters are whole numbers: x <= 2.5 is x <= 2. Beyond the
			// int64 range the limit is the range's end.
			f := math.Floor(n - float64(minus))
			switch {
			case f >= math.MaxInt64:
				return math.MaxInt64, true
			case f <= math.MinInt64:
				return math.MinInt64, true
			}
			return int64(f), true
		}
	}
	return 0, false
}

// HiddenMessage and NotPermittedMessage are steps 1 and 2 of policy.md §3.
func HiddenMessage(tool string) string       { return `Tool "` + tool + `" is hidden by policy` }
func NotPermittedMessage(tool string) string { return `Tool "` + tool + `" is not permitted by policy` }

// UnknownServerMessage is the message for a call to a server no policy governs.
func UnknownServerMessage(server string) string {
	return `Server "` + server + `" is not governed by any policy`
}

// CounterTable lists every counter a call of set may reserve — the
// enforced evaluate rules with state — in the order the generated Rego
// numbers them: the compact decision's [id, amount] pairs index it, and the
// bundle manifest carries it for the runtime. Amount is the fixed increment
// (0 for increment_from).
func CounterTable(set *policy.Set) []bundles.Reservation {
	var out []bundles.Reservation
	forEachCounter(set, func(f *policy.File, key string, r *policy.Rule) {
		res := bundles.Reservation{
			Key:     policy.CounterKey(key, r.State.Counter),
			Window:  r.State.Window,
			Rule:    RuleID(f, key, r.Name),
			Message: CounterMessage(r),
		}
		if r.State.IncrementFrom == "" {
			res.Amount = r.State.Increment
		}
		if n, ok := CounterLimit(key, r); ok {
			res.Limit = &n
		}
		out = append(out, res)
	})
	return out
}

// Data returns the bundle's data.json for set: the counter table the
// generated Rego's full decision reads. It is data, not Rego, so that a Wasm
// evaluation looks a counter up instead of building the table each time.
func Data(set *policy.Set) []byte {
	table := CounterTable(set)
	if table == nil {
		table = []bundles.Reservation{}
	}
	b, err := json.Marshal(map[string]any{"toolgate": map[string]any{"counter_table": table}})
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

// forEachCounter calls fn for each counter rule of set in id order:
// servers by name, their files by path, tools and rules in file order.
func forEachCounter(set *policy.Set, fn func(f *policy.File, key string, r *policy.Rule)) {
	for _, s := range set.Servers {
		for _, f := range s.Files {
			for ti := range f.Tools {
				t := &f.Tools[ti]
				for ri := range t.Rules {
					r := &t.Rules[ri]
					if isCounter(f, r) {
						fn(f, t.Key, r)
					}
				}
			}
		}
	}
}

// isCounter: a rule whose counter a call reserves.
func isCounter(f *policy.File, r *policy.Rule) bool {
	return r.State != nil && r.Action == policy.ActionEvaluate && f.Mode != policy.ModeShadow && r.Mode != policy.ModeShadow
}

// Generate returns the Rego for a linted set. header lines are written as
// comments at the top (the compiler's version, say).
func Generate(set *policy.Set, header ...string) []byte {
	g := &gen{}
	g.file(set, header)
	return []byte(g.b.String())
}

type gen struct {
	b      strings.Builder
	nRule  int
	nCond  int
	nGlob  int
	nClass int
	nTree  int
	// classes maps a call class's body to the rule that holds it.
	classes map[string]string
	// pending holds condition helpers to write after the current rule.
	pending []string
	// nCounter numbers counter rules as CounterTable does.
	nCounter int
}

func (g *gen) p(format string, args ...any) { fmt.Fprintf(&g.b, format, args...); g.b.WriteByte('\n') }

// entry is one step of a call's chain: a rule, or a pseudo-rule for hide
// (step 1) and default deny (step 2), with an optional guard (a glob match
// evaluated at run time, for tools that are not listed by name).
// allShadow reports whether every file governing s is in shadow mode: then
// its default deny (step 2) is logged, not enforced, like the rest of
// those files (policy.md §5). One enforced file makes it enforced.
func allShadow(s *policy.Server) bool {
	for _, f := range s.Files {
		if f.Mode != policy.ModeShadow {
			return false
		}
	}
	return true
}

type entry struct {
	guard  string
	shadow bool
	// one of:
	rule   *ruleGen
	hidden *policy.File // step 1, by this file
	denyBy *policy.File // step 2
}

type ruleGen struct {
	id     int
	file   *policy.File
	key    string
	rule   *policy.Rule
	shadow bool
	// holds are the expressions of an evaluate rule's conditions, which the
	// fast path of a call class repeats inline.
	holds []string
	// counterID indexes CounterTable, for a rule with a counter.
	counterID int
}

func (r *ruleGen) name(suffix string) string { return fmt.Sprintf("r%d_%s", r.id, suffix) }

type globGen struct {
	name string
	key  string
	re   *regexp.Regexp
}

func (g *gen) file(set *policy.Set, header []string) {
	g.p("# Code generated by toolgate from policy YAML. DO NOT EDIT.")
	for _, h := range header {
		g.p("# %s", h)
	}
	g.p("#")
	g.p("# Sources:")
	for _, f := range set.Files {
		g.p("#   %s (server %q)", f.Path, f.Server)
	}
	g.p("")
	g.p("package toolgate")
	g.p("")
	g.p("# decision is the decision contract (docs/policy.md §12): one object for every input.")
	g.p("# It is compact with each counter written out from counter_table.")
	g.p("decision := {")
	g.p("\t\"decision\": c.decision, \"rule\": c.rule, \"message\": c.message,")
	g.p("\t\"counters\": [counter(p) | some p in c.counters],")
	g.p("\t\"approval\": c.approval, \"shadow\": c.shadow,")
	g.p("} if {")
	g.p("\tc := compact")
	g.p("}")
	g.p("")
	g.p("# compact is decision with each counter as [id, amount], id indexing")
	g.p("# counter_table (and the bundle manifest's metadata.counters): the same")
	g.p("# decision in a fraction of the output, for the runtime's hot path.")
	g.p("compact := d if {")
	g.p("\td := server_decision(input.server)")
	g.p("} else := d if {")
	g.p("\td := deny(\"\", concat(\"\", [%s, input.server, %s]), [])", str(`Server "`), str(`" is not governed by any policy`))
	g.p("}")
	g.p("")
	g.p("# counter(p) writes out the counter of a compact [id, amount] pair from")
	g.p("# data.toolgate.counter_table, the bundle's data.json (see Data).")
	g.p("counter(p) := {\"key\": c.key, \"amount\": p[1], \"limit\": c.limit, \"window\": c.window, \"rule\": c.rule, \"message\": c.message} if {")
	g.p("\tc := data.toolgate.counter_table[p[0]]")
	g.p("}")
	g.p("")
	g.p("deny(rule, message, shadow) := {\"decision\": \"deny\", \"rule\": rule, \"message\": message, \"counters\": [], \"approval\": null, \"shadow\": shadow}")
	g.p("")
	g.p("# state(key) is a counter's value in the current window; counters the host did not send are 0.")
	g.p("state(key) := v if {")
	g.p("\tv := input.state[key]")
	g.p("} else := 0")
	g.p("")
	var servers []string
	serverRule := map[string]string{}
	for i, s := range set.Servers {
		name := fmt.Sprintf("s%d", i)
		servers = append(servers, s.Name)
		serverRule[s.Name] = name
		g.server(name, s)
	}
	g.p("# ── dispatch on the server name")
	root := g.tree(servers, func(n string) string { return serverRule[n] })
	g.p("server_decision(name) := d if {")
	g.p("\td := %s(name)", root)
	g.p("}")
}

func (g *gen) server(sname string, s *policy.Server) {
	g.p("# ════════════════════════════════════════════════════════════════════")
	g.p("# server %q (default %s)", s.Name, s.Default)
	for _, f := range s.Files {
		mode := ""
		if f.Mode == policy.ModeShadow {
			mode = " (shadow mode)"
		}
		g.p("#   %s%s", f.Path, mode)
	}
	g.p("# ════════════════════════════════════════════════════════════════════")
	g.p("")

	// Rules, in source order; globs, once each.
	var exactRules = map[string][]*ruleGen{}
	var globKeys []struct {
		glob  *globGen
		rules []*ruleGen
	}
	var wildRules []*ruleGen
	listed := map[string]bool{}
	globByKey := map[string]*globGen{}
	globOf := func(key string) *globGen {
		if gg := globByKey[key]; gg != nil {
			return gg
		}
		pat, _ := policy.GlobRegexp(key)
		gg := &globGen{name: fmt.Sprintf("g%d", g.nGlob), key: key, re: regexp.MustCompile(pat)}
		g.nGlob++
		globByKey[key] = gg
		g.p("# tool names matching %q", key)
		g.p("%s if regex.match(%s, input.tool.name)", gg.name, str(pat))
		g.p("")
		return gg
	}
	for _, f := range s.Files {
		for ti := range f.Tools {
			t := &f.Tools[ti]
			var rs []*ruleGen
			for ri := range t.Rules {
				rg := &ruleGen{id: g.nRule, file: f, key: t.Key, rule: &t.Rules[ri],
					shadow: f.Mode == policy.ModeShadow || t.Rules[ri].Mode == policy.ModeShadow}
				g.nRule++
				g.rule(rg)
				rs = append(rs, rg)
			}
			switch {
			case t.Key == policy.Wildcard:
				wildRules = append(wildRules, rs...)
			case policy.IsGlob(t.Key):
				globKeys = append(globKeys, struct {
					glob  *globGen
					rules []*ruleGen
				}{globOf(t.Key), rs})
			default:
				listed[t.Key] = true
				exactRules[t.Key] = append(exactRules[t.Key], rs...)
			}
		}
	}
	for _, f := range s.Files {
		for _, h := range f.Hide {
			if policy.IsGlob(h.Value) {
				globOf(h.Value)
			}
		}
	}

	// Known names: every exact tool key and exact hide entry.
	known := map[string]bool{}
	for k := range exactRules {
		known[k] = true
	}
	for _, f := range s.Files {
		for _, h := range f.Hide {
			if h.Value != policy.Wildcard && !policy.IsGlob(h.Value) {
				known[h.Value] = true
			}
		}
	}
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	sort.Strings(names)

	classOf := map[string]string{}
	for _, n := range names {
		var chain []entry
		for _, f := range s.Files {
			for _, h := range f.Hide {
				if h.Value == policy.Wildcard || h.Value == n || (policy.IsGlob(h.Value) && globByKey[h.Value].re.MatchString(n)) {
					chain = append(chain, entry{hidden: f, shadow: f.Mode == policy.ModeShadow})
					break
				}
			}
		}
		isListed := listed[n]
		for _, gk := range globKeys {
			if gk.glob.re.MatchString(n) {
				isListed = true
			}
		}
		if s.Default == "deny" && !isListed {
			chain = append(chain, entry{denyBy: s.Files[0], shadow: allShadow(s)})
		}
		for _, r := range exactRules[n] {
			chain = append(chain, entry{rule: r, shadow: r.shadow})
		}
		for _, gk := range globKeys {
			if gk.glob.re.MatchString(n) {
				for _, r := range gk.rules {
					chain = append(chain, entry{rule: r, shadow: r.shadow})
				}
			}
		}
		for _, r := range wildRules {
			chain = append(chain, entry{rule: r, shadow: r.shadow})
		}
		classOf[n] = g.class(fmt.Sprintf("tool %q of server %q", n, s.Name), n, chain)
	}

	// Tools not listed by name: globs are matched at run time.
	var chain []entry
	for fi, f := range s.Files {
		var guards []string
		all := false
		for _, h := range f.Hide {
			if h.Value == policy.Wildcard {
				all = true
			} else if policy.IsGlob(h.Value) {
				guards = append(guards, globByKey[h.Value].name)
			}
		}
		switch {
		case all:
			chain = append(chain, entry{hidden: f, shadow: f.Mode == policy.ModeShadow})
		case len(guards) == 1:
			chain = append(chain, entry{hidden: f, guard: guards[0], shadow: f.Mode == policy.ModeShadow})
		case len(guards) > 1:
			// One entry per file, however many of its globs match.
			hides := fmt.Sprintf("%s_hidden_by_f%d", sname, fi)
			g.p("# %s hides the tool", f.Path)
			for _, gd := range guards {
				g.p("%s if %s", hides, gd)
			}
			g.p("")
			chain = append(chain, entry{hidden: f, guard: hides, shadow: f.Mode == policy.ModeShadow})
		}
	}
	if s.Default == "deny" {
		guard := ""
		if len(globKeys) > 0 {
			anyName := sname + "_glob_listed"
			seen := map[string]bool{}
			for _, gk := range globKeys {
				if !seen[gk.glob.name] {
					seen[gk.glob.name] = true
					g.p("%s if %s", anyName, gk.glob.name)
				}
			}
			g.p("")
			guard = "not " + anyName
		}
		chain = append(chain, entry{denyBy: s.Files[0], guard: guard, shadow: allShadow(s)})
	}
	for _, gk := range globKeys {
		for _, r := range gk.rules {
			chain = append(chain, entry{rule: r, guard: gk.glob.name, shadow: r.shadow})
		}
	}
	for _, r := range wildRules {
		chain = append(chain, entry{rule: r, shadow: r.shadow})
	}
	unlisted := g.class(fmt.Sprintf("tools of server %q not listed by name", s.Name), "", chain)

	g.p("# ── dispatch on the tool name for server %q", s.Name)
	root := ""
	if len(names) > 0 {
		root = g.tree(names, func(n string) string { return classOf[n] })
	}
	g.p("%s := d if {", sname)
	if len(names) > 0 {
		g.p("\td := %s(input.tool.name)", root)
		g.p("} else := d if {")
	}
	g.p("\td := %s", unlisted)
	g.p("}")
	g.p("")
}

// tree writes a balanced comparison tree that maps each of names (sorted)
// to the complete rule leaf(name), and returns the root function's name.
func (g *gen) tree(names []string, leaf func(string) string) string {
	sort.Strings(names)
	name := fmt.Sprintf("t%d", g.nTree)
	g.nTree++
	if len(names) <= 4 {
		for _, n := range names {
			g.p("%s(%s) := %s", name, str(n), leaf(n))
		}
		if len(names) == 0 {
			g.p("%s(_) := x if { x := 1; x == 0 }", name)
		}
		g.p("")
		return name
	}
	mid := len(names) / 2
	left := g.tree(names[:mid], leaf)
	right := g.tree(names[mid:], leaf)
	pivot := str(names[mid])
	g.p("%s(n) := d if {", name)
	g.p("\tn < %s", pivot)
	g.p("\td := %s(n)", left)
	g.p("}")
	g.p("")
	g.p("%s(n) := d if {", name)
	g.p("\tn >= %s", pivot)
	g.p("\td := %s(n)", right)
	g.p("}")
	g.p("")
	return name
}
