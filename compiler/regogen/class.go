package regogen

import (
	"fmt"
	"strings"
)

// class writes the decision of one call class — a tool listed by name, or
// the tools of a server that are not — from its chain, and returns the name
// of the complete rule holding it. Classes with the same chain share one rule.
func (g *gen) class(desc, tool string, chain []entry) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...); b.WriteByte('\n') }
	const self = "@@"

	type piece struct{ guard, value string }
	var stops, woulds, approvals, counters []piece
	// fast: the expressions that, all holding, mean no rule stops the call
	// and none asks for approval, so it is allowed; written inline, they
	// spare the common case the calls of the full chain. fastOK turns false
	// for a chain the fast path cannot express.
	var fast []string
	var fastCounters []string
	fastOK := true
	for _, e := range chain {
		switch {
		case e.shadow:
		case e.hidden != nil || e.denyBy != nil:
			switch {
			case e.guard == "":
				fastOK = false
			case strings.HasPrefix(e.guard, "not "):
				fast = append(fast, strings.TrimPrefix(e.guard, "not "))
			default:
				fast = append(fast, "not "+e.guard)
			}
		case e.rule.rule.Action == "require_approval":
			if e.guard != "" || len(e.rule.rule.When) == 0 {
				fastOK = false
			} else {
				fast = append(fast, "not "+e.rule.name("when"))
			}
		case e.rule.rule.Action == "deny" && e.guard == "" && len(e.rule.rule.When) > 0:
			fast = append(fast, "not "+e.rule.name("when"))
		case e.rule.rule.Action == "evaluate" && e.guard == "" && len(e.rule.rule.When) == 0:
			fast = append(fast, e.rule.holds...)
			if st := e.rule.rule.State; st != nil {
				if st.IncrementFrom != "" {
					fast = append(fast, fmt.Sprintf("a%d := %s", e.rule.id, e.rule.name("amount")))
					fastCounters = append(fastCounters, fmt.Sprintf("[%d, a%d]", e.rule.counterID, e.rule.id))
				} else {
					fastCounters = append(fastCounters, fmt.Sprintf("[%d, %d]", e.rule.counterID, st.Increment))
				}
			}
		default:
			fastOK = false
		}
	}
	for _, e := range chain {
		switch {
		case e.hidden != nil:
			msg := str(HiddenMessage(tool))
			if tool == "" {
				msg = `concat("", [` + str(`Tool "`) + `, input.tool.name, ` + str(`" is hidden by policy`) + `])`
			}
			rule := str(e.hidden.Path + "#hide")
			if e.shadow {
				woulds = append(woulds, piece{e.guard, obj("would", str("deny"), "rule", rule, "message", msg)})
			} else {
				stops = append(stops, piece{e.guard, obj("rule", rule, "message", msg)})
			}
		case e.denyBy != nil:
			msg := str(NotPermittedMessage(tool))
			if tool == "" {
				msg = `concat("", [` + str(`Tool "`) + `, input.tool.name, ` + str(`" is not permitted by policy`) + `])`
			}
			if e.shadow {
				woulds = append(woulds, piece{e.guard, obj("would", str("deny"), "rule", str(e.denyBy.Path+"#default"), "message", msg)})
			} else {
				stops = append(stops, piece{e.guard, obj("rule", str(e.denyBy.Path+"#default"), "message", msg)})
			}
		case e.rule != nil:
			r := e.rule
			switch {
			case e.shadow:
				woulds = append(woulds, piece{e.guard, r.name("would")})
			case r.rule.Action == "require_approval":
				approvals = append(approvals, piece{e.guard, r.name("approval")})
			default:
				stops = append(stops, piece{e.guard, r.name("stop")})
				if r.rule.State != nil && r.rule.Action == "evaluate" {
					counters = append(counters, piece{e.guard, r.name("counter")})
				}
			}
		}
	}
	firstOf := func(name string, ps []piece) bool {
		if len(ps) == 0 {
			return false
		}
		for i, p := range ps {
			head := name + " := x if {"
			if i > 0 {
				head = "} else := x if {"
			}
			w("%s", head)
			if p.guard != "" {
				w("\t%s", p.guard)
			}
			w("\tx := %s", p.value)
		}
		w("}")
		return true
	}
	listOf := func(ps []piece) string {
		if len(ps) == 0 {
			return "[]"
		}
		parts := make([]string, len(ps))
		for i, p := range ps {
			cond := "x := " + p.value
			if p.guard != "" {
				cond = p.guard + "; " + cond
			}
			parts[i] = "[x | " + cond + "]"
		}
		out := parts[0]
		for _, p := range parts[1:] {
			out = "array.concat(" + out + ", " + p + ")"
		}
		return out
	}
	shadow := "[]"
	if len(woulds) > 0 {
		w("%s_shadow := %s", self, listOf(woulds))
		shadow = self + "_shadow"
	}
	counterList := "[]"
	if len(counters) > 0 {
		w("%s_counters := %s", self, listOf(counters))
		counterList = self + "_counters"
	}
	hasStop := firstOf(self+"_stop", stops)
	hasApproval := firstOf(self+"_approval", approvals)

	allow := obj("decision", str("allow"), "rule", `""`, "message", `""`, "counters", counterList, "approval", "null", "shadow", shadow)
	branches := 0
	if fastOK && len(fast) > 0 {
		// The fast path: every rule passes. Its counters are the chain's,
		// written as a literal (every counter rule here applies).
		w("%s := %s if {", self, obj("decision", str("allow"), "rule", `""`, "message", `""`,
			"counters", "["+strings.Join(fastCounters, ", ")+"]", "approval", "null", "shadow", shadow))
		for _, f := range fast {
			w("\t%s", f)
		}
		branches++
	}
	branch := func(cond, value string) {
		if branches == 0 {
			w("%s := d if {", self)
		} else {
			w("} else := d if {")
		}
		w("\t%s", cond)
		w("\td := %s", value)
		branches++
	}
	if hasStop {
		branch("x := "+self+"_stop", "deny(x.rule, x.message, "+shadow+")")
	}
	if hasApproval {
		branch("a := "+self+"_approval", obj("decision", str("require_approval"), "rule", "a.rule", "message", "a.message",
			"counters", counterList, "approval", obj("rule", "a.rule", "timeout_seconds", "a.timeout_seconds"), "shadow", shadow))
	}
	if branches == 0 {
		w("%s := %s", self, allow)
	} else {
		w("} else := %s", allow)
	}

	body := b.String()
	if name, ok := g.classes[body]; ok {
		g.p("# %s: same chain as %s", desc, name)
		g.p("")
		return name
	}
	name := fmt.Sprintf("call%d", g.nClass)
	g.nClass++
	if g.classes == nil {
		g.classes = map[string]string{}
	}
	g.classes[body] = name
	g.p("# ── %s", desc)
	g.p("%s", strings.ReplaceAll(strings.TrimSuffix(body, "\n"), self, name))
	g.p("")
	return name
}
