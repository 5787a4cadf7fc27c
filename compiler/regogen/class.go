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
	var stops, woulds, approvals, counters, counterErrs []piece
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
			stops = append(stops, piece{e.guard, obj("rule", str(e.denyBy.Path+"#default"), "message", msg)})
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
					if r.rule.State.IncrementFrom != "" {
						counterErrs = append(counterErrs, piece{e.guard, r.name("counter_error")})
					}
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
	hasCErr := firstOf(self+"_counter_error", counterErrs)
	hasApproval := firstOf(self+"_approval", approvals)

	allow := obj("decision", str("allow"), "rule", `""`, "message", `""`, "counters", counterList, "approval", "null", "shadow", shadow)
	branches := 0
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
	if hasCErr {
		branch("x := "+self+"_counter_error", "deny(x.rule, x.message, "+shadow+")")
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
