package regogen

import (
	"fmt"
	"strings"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

// rule writes one source rule's block: its when, its conditions, and the
// outputs its kind has (stop, would, approval, counter).
func (g *gen) rule(r *ruleGen) {
	rl := r.rule
	id := RuleID(r.file, r.key, rl.Name)
	g.p("# ── %s:%d:%d  tools.%s  rule %q", r.file.Path, rl.Pos.Line, rl.Pos.Col, r.key, rl.Name)
	desc := rl.Action
	if r.shadow {
		desc += ", shadow mode"
	}
	if rl.RateLimit != nil {
		desc += fmt.Sprintf(", rate_limit %d/%s", rl.RateLimit.N, rl.RateLimit.Window)
	}
	g.p("#    (%s)", desc)
	applies := ""
	if len(rl.When) > 0 {
		g.p("%s if {", r.name("when"))
		for _, c := range rl.When {
			g.p("\t%s", g.cond(c))
		}
		g.p("}")
		applies = r.name("when")
	}
	stops := ""
	switch rl.Action {
	case policy.ActionEvaluate:
		g.p("%s if {", r.name("holds"))
		for _, c := range rl.Conditions {
			e := g.cond(c)
			r.holds = append(r.holds, e)
			g.p("\t%s", e)
		}
		g.p("}")
		stops = "not " + r.name("holds")
		if applies != "" {
			stops = applies + "; " + stops
		}
	case policy.ActionDeny:
		stops = applies
	}
	body := func(cond string) string {
		if cond == "" {
			return ""
		}
		return " if { " + cond + " }"
	}
	switch {
	case rl.Action == policy.ActionRequireApproval && r.shadow:
		g.p("%s := %s%s", r.name("would"), obj("would", str("require_approval"), "rule", str(id), "message", str(ApprovalMessage(rl))), body(applies))
	case rl.Action == policy.ActionRequireApproval:
		g.p("%s := %s%s", r.name("approval"), obj("rule", str(id), "timeout_seconds", fmt.Sprint(int64(rl.ApprovalTimeout.Seconds())), "message", str(ApprovalMessage(rl))), body(applies))
	case r.shadow:
		g.p("%s := %s%s", r.name("would"), obj("would", str("deny"), "rule", str(id), "message", str(DenyMessage(rl))), body(stops))
	default:
		g.p("%s := %s%s", r.name("stop"), obj("rule", str(id), "message", str(DenyMessage(rl))), body(stops))
	}
	if rl.State != nil && rl.Action == policy.ActionEvaluate && !r.shadow {
		g.counter(r, id, applies)
	}
	for _, h := range g.pending {
		g.b.WriteString(h)
	}
	g.pending = g.pending[:0]
	g.p("")
}

func (g *gen) counter(r *ruleGen, id, applies string) {
	rl := r.rule
	st := rl.State
	g.p("# counter %d: %s (counter_table[%d])", g.nCounter, policy.CounterKey(r.key, st.Counter), g.nCounter)
	cid := g.nCounter
	r.counterID = cid
	g.nCounter++
	fields := func(amount string) string {
		return fmt.Sprintf("[%d, %s]", cid, amount)
	}
	pre := ""
	if applies != "" {
		pre = applies + "; "
	}
	if st.IncrementFrom == "" {
		g.p("%s := %s%s", r.name("counter"), fields(fmt.Sprint(st.Increment)), bodyOf(applies))
		return
	}
	from := ref("input.arguments", strings.Split(strings.TrimPrefix(st.IncrementFrom, "args."), ".")[0:])
	g.p("# the amount is %s, a number within the int64 range, truncated toward zero", st.IncrementFrom)
	g.p("%s := n if {", r.name("amount"))
	g.p("\tx := %s", from)
	g.p("\tis_number(x)")
	g.p("\tx >= 0")
	g.p("\tx < 9223372036854775808")
	g.p("\tn := floor(x)")
	g.p("} else := n if {")
	g.p("\tx := %s", from)
	g.p("\tis_number(x)")
	g.p("\tx < 0")
	g.p("\tx > -9223372036854775809")
	g.p("\tn := ceil(x)")
	g.p("}")
	g.p("%s := %s if { %s%s := %s }", r.name("counter"), fields("n"), pre, "n", r.name("amount"))
	g.p("# no amount (missing, not a number, out of range): the host denies the call")
	g.p("# with %q when it reaches this counter, reserving in turn", bundles.MsgNoAmount)
	g.p("%s := %s if { %snot %s }", r.name("counter"), fields("null"), pre, r.name("amount"))
}

func bodyOf(cond string) string {
	if cond == "" {
		return ""
	}
	return " if { " + cond + " }"
}

// obj writes an object literal from key, value-literal pairs.
func obj(kv ...string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(str(kv[i]) + ": " + kv[i+1])
	}
	b.WriteString("}")
	return b.String()
}

// valueRef is the Rego reference a condition path reads.
func valueRef(path string) string {
	switch {
	case path == "server":
		return "input.server"
	case path == "tool.name":
		return "input.tool.name"
	case path == "identity.subject":
		return "input.identity.subject"
	case path == "identity.groups":
		return "input.identity.groups"
	case strings.HasPrefix(path, "identity.claims."):
		return ref("input.identity.claims", strings.Split(strings.TrimPrefix(path, "identity.claims."), "."))
	case strings.HasPrefix(path, "tool.annotations."):
		return ref("input.tool.annotations", strings.Split(strings.TrimPrefix(path, "tool.annotations."), "."))
	case strings.HasPrefix(path, "args."):
		return ref("input.arguments", strings.Split(strings.TrimPrefix(path, "args."), "."))
	case strings.HasPrefix(path, "state."):
		scope, counter, _ := policy.SplitStatePath(path)
		return "state(" + str(scope+"."+counter) + ")"
	}
	panic("regogen: unchecked path " + path)
}

// cond returns one Rego expression that holds exactly when c holds
// (policy.md §3: a condition on a missing value fails, except exists).
func (g *gen) cond(c policy.Condition) string {
	v := valueRef(c.Path)
	switch c.Op {
	case "exists":
		if c.Value.(bool) {
			return v + " != null"
		}
		// A rule of its own: `not` over a comparison whose operand is
		// undefined does not hold in OPA, so "missing" must be spelled out.
		name := fmt.Sprintf("c%d", g.nCond)
		g.nCond++
		g.pending = append(g.pending, fmt.Sprintf("# %s is present and not null\n%s if %s != null\n", c.Path, name, v))
		return "not " + name
	case "lt", "lte", "gt", "gte":
		op := map[string]string{"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[c.Op]
		return g.helper(c, v, false, func(x string) []string {
			return []string{"is_number(" + x + "); " + x + " " + op + " " + numLit(c.Value)}
		})
	case "regex":
		return g.helper(c, v, false, func(x string) []string {
			return []string{"is_string(" + x + "); regex.match(" + str(wasmPattern(c.Value.(string))) + ", " + x + ")"}
		})
	case "eq":
		return g.helper(c, v, false, func(x string) []string { return eqAlternatives(x, c.Value) })
	case "neq":
		return g.helper(c, v, true, func(x string) []string { return eqAlternatives(x, c.Value) })
	case "in", "not_in":
		return g.helper(c, v, c.Op == "not_in", func(x string) []string {
			var alts []string
			for _, e := range c.Value.([]any) {
				alts = append(alts, eqAlternatives(x, e)...)
			}
			if len(alts) == 0 {
				alts = []string{"false"}
			}
			return alts
		})
	case "contains":
		return g.helper(c, v, false, func(x string) []string {
			var alts []string
			if s, ok := c.Value.(string); ok {
				alts = append(alts, "is_string("+x+"); contains("+x+", "+str(s)+")")
			}
			e := "e" + x[1:]
			for _, a := range eqAlternatives(e, c.Value) {
				alts = append(alts, "is_array("+x+"); some "+e+" in "+x+"; "+a)
			}
			return alts
		})
	}
	panic("regogen: unchecked operator " + c.Op)
}

// helper returns the expression for a condition on value v whose
// alternatives (any of which holding means the condition holds) alts gives
// over a variable. One alternative is written inline, bound to a variable
// of its own (a call costs Wasm time); several become a function with one
// definition each. neq and not_in negate it, and still fail on a missing
// value, since the binding fails first.
func (g *gen) helper(c policy.Condition, v string, negate bool, alts func(x string) []string) string {
	n := g.nCond
	g.nCond++
	x := fmt.Sprintf("x%d", n)
	inline := alts(x)
	if len(inline) == 1 && (!negate || !strings.Contains(inline[0], ";")) {
		if negate {
			return x + " := " + v + "; not " + inline[0]
		}
		return x + " := " + v + "; " + inline[0]
	}
	name := fmt.Sprintf("c%d", n)
	var defs strings.Builder
	for _, a := range inline {
		fmt.Fprintf(&defs, "%s(%s) if { %s }\n", name, x, a)
	}
	g.pending = append(g.pending, fmt.Sprintf("# %s %s %s\n%s", c.Path, c.Op, showValue(c.Value), defs.String()))
	if negate {
		return x + " := " + v + "; not " + name + "(" + x + ")"
	}
	return name + "(" + v + ")"
}

func showValue(v any) string {
	if v == nil {
		return "null"
	}
	if l, ok := v.([]any); ok {
		parts := make([]string, len(l))
		for i, e := range l {
			parts[i] = showValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return lit(v)
}
