package differential

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"strings"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/compiler/regogen"
)

// The random policies and inputs draw from small shared pools, so that
// policy values and input values often meet: the same tool names, argument
// paths and numbers written in different ways.

var (
	exactTools = []string{"get_user", "get_repo", "list_repos", "create_issue", "delete_repo", "run", "a", "ab", "é", "tool.v2"}
	globTools  = []string{"get_*", "*_repo", "?", "??", "*_repo*", "[a-c]*", "[!g]?", "list_*", "*é*", "get_?ser"}
	// callTools adds names no key lists, and names only globs match.
	callTools = []string{"get_anything", "x_repo", "b", "zz", "", "éé", "listing", "get_", "list_x", "cé", "delete_repo_2", "RUN"}
	servers   = []string{"alpha", "beta"}

	argPaths  = []string{"args.a", "args.b", "args.amount", "args.s", "args.list", "args.o", "args.o.x", "args.o.y.z", "args.a.b"}
	miscPaths = []string{"identity.subject", "identity.groups", "identity.claims.role", "identity.claims.o.k",
		"server", "tool.name", "tool.annotations.readOnlyHint", "tool.annotations.destructiveHint"}

	// yamlScalars are condition values as YAML literals: every kind, numbers
	// written several ways, strings that look like numbers, booleans, null.
	yamlScalars = []string{"5", "5.0", "0", "-0.0", "-3", "2.5", "0.1", "1e21", "1.0e+21", "0x10",
		"123456789012345678901234567890", "9007199254740993", "18446744073709551615",
		`"5"`, `"5.0"`, `"true"`, `"false"`, `"<nil>"`, `"abc"`, `"héllo"`, `""`, `"1e+21"`, `"2.5"`, `"eng"`, `"alice"`,
		"yes", "true", "false", "null", "~", `"get_user"`, `"alpha"`, `"-0"`,
		`"1.2345678901234568e+29"`, `"9.007199254740992e+15"`, `"1.8446744073709552e+19"`, `"5e+06"`, "5000000"}
	yamlNumbers = []string{"5", "5.0", "0", "-3", "2.5", "0.1", "1e21", "3", "1", "2", "-0.0",
		"123456789012345678901234567890", "9007199254740993", "18446744073709551615"}
	regexes = []string{"^a", "5", "^$", "é", "[0-9]+", "^true$", "(?i)ABC", "x.y", "^get_", "^.$", `\d\.\d`, "^5$",
		// Go's regexp and the older RE2 in OPA's Wasm read these differently
		// unless the compiler rewrites them: a (?<name>) group, Unicode
		// classes with characters newer than RE2's tables (U+1E4D0, Kawi).
		`^(?<g>[a-z]+)$`, `^\pL+$`, `^\p{Kawi}`, `\PL`}

	// jsonValues are argument (and claim, annotation) values as JSON.
	jsonValues = []string{"5", "5.0", "5.00", "-0", "0", "-3", "2.5", "1e21", "1E21", "1e+21", "1000000000000000000000",
		"123456789012345678901234567890", "123456789012345678901234567891", "9007199254740993", "9007199254740992",
		"0.1", "0.30000000000000004", "18446744073709551615", "-0.0", "16", "3", "2.7", "-2.7", "1",
		`"5"`, `"5.0"`, `"true"`, `"false"`, `"<nil>"`, `"abc"`, `"xabcx"`, `"ABC"`, `"héllo"`, `""`, `"1e+21"`, `"2.5"`, `"yes"`, `"  5"`,
		`"x.y"`, `"get_user"`, `"eng"`, `"2.5e0"`, `"\u00e9"`, `"a\nb"`,
		"true", "false", "null",
		"[]", "[5]", `["5", true]`, `["eng", "ops"]`, "[[5]]", "[null]", `["abc", 2.5]`,
		"{}", `{"x": 5}`, `{"z": "abc"}`,
		"5000000", `"5e+06"`, `"5000000"`, "\"\U0001e4d0\"", "\"\U00011f00x\"", `"ab"`, "1000000000000000000001", `"9007199254740993"`, `"18446744073709551615"`, `"1.2345678901234568e+29"`}
)

type gen struct {
	r *rand.Rand
	// defined holds the counters ("scope.counter") each server defines so far.
	defined map[string][]string
	nCount  int
}

func (g *gen) pick(xs []string) string { return xs[g.r.Intn(len(xs))] }
func (g *gen) chance(p float64) bool   { return g.r.Float64() < p }

func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// policy returns the sources of one random policy set: one to three files
// per server, in several folders, some naming their server.
func (g *gen) policy() []policy.Source {
	g.defined = map[string][]string{}
	var out []policy.Source
	for _, srv := range servers {
		def := "allow"
		if g.chance(0.4) {
			def = "deny"
		}
		n := 1 + g.r.Intn(3)
		for i := 0; i < n; i++ {
			path := fmt.Sprintf("policies/team%d/%s.yaml", g.r.Intn(4), srv)
			named := g.chance(0.4)
			if named {
				path = fmt.Sprintf("policies/team%d/%s-%d.yml", g.r.Intn(4), srv, i)
			}
			if dup(out, path) {
				continue
			}
			out = append(out, policy.Source{Path: path, Data: []byte(g.file(srv, def, named))})
		}
	}
	return out
}

func dup(srcs []policy.Source, path string) bool {
	for _, s := range srcs {
		if s.Path == path {
			return true
		}
	}
	return false
}

func (g *gen) file(srv, def string, named bool) string {
	var b strings.Builder
	b.WriteString("version: \"1\"\n")
	if named {
		fmt.Fprintf(&b, "server: %s\n", srv)
	}
	if def == "deny" || g.chance(0.3) {
		fmt.Fprintf(&b, "default: %s\n", def)
	}
	if g.chance(0.1) {
		b.WriteString("mode: shadow\n")
	}
	if g.chance(0.5) {
		seen := map[string]bool{}
		var hide []string
		for i, n := 0, 1+g.r.Intn(3); i < n; i++ {
			var h string
			switch {
			case g.chance(0.05):
				h = "*"
			case g.chance(0.4):
				h = g.pick(globTools)
			default:
				h = g.pick(exactTools)
			}
			if !seen[h] {
				seen[h] = true
				hide = append(hide, q(h))
			}
		}
		fmt.Fprintf(&b, "hide: [%s]\n", strings.Join(hide, ", "))
	}
	keys := map[string]bool{}
	b.WriteString("tools:\n")
	for i, n := 0, g.r.Intn(6); i < n; i++ {
		var key string
		switch {
		case g.chance(0.2):
			key = "*"
		case g.chance(0.35):
			key = g.pick(globTools)
		default:
			key = g.pick(exactTools)
		}
		if keys[key] {
			continue
		}
		keys[key] = true
		fmt.Fprintf(&b, "  %s:\n", q(key))
		switch {
		case g.chance(0.08):
			continue // listed, no rules
		case g.chance(0.05):
			b.WriteString("    rules: []\n")
			continue
		}
		b.WriteString("    rules:\n")
		for j, m := 0, 1+g.r.Intn(4); j < m; j++ {
			g.rule(&b, srv, key, j)
		}
	}
	return b.String()
}

var ruleNames = []string{"limit", `hourly "issue" limit`, "größe", "no deletes", "a/b#c"}

func (g *gen) rule(b *strings.Builder, srv, key string, j int) {
	name := fmt.Sprintf("r%d", j)
	if g.chance(0.3) {
		name = fmt.Sprintf("%s %d", g.pick(ruleNames), j)
	}
	fmt.Fprintf(b, "      - name: %s\n", q(name))
	scope := key
	if key == "*" {
		scope = policy.GlobalScope
	}
	writeConds := func(field string, conds []string) {
		fmt.Fprintf(b, "        %s:\n", field)
		for _, c := range conds {
			fmt.Fprintf(b, "          - %s\n", c)
		}
	}
	when := func(p float64) {
		if g.chance(p) {
			writeConds("when", g.conds(srv, 1+g.r.Intn(2)))
		}
	}
	switch x := g.r.Float64(); {
	case x < 0.18:
		b.WriteString("        action: deny\n")
		when(0.6)
	case x < 0.32:
		b.WriteString("        action: require_approval\n")
		when(0.6)
		if g.chance(0.5) {
			fmt.Fprintf(b, "        approval_timeout: %s\n", g.pick([]string{"30m", "1h", "90s", "1h30m", "2s"}))
		}
	case x < 0.45:
		w := g.pick([]string{"minute", "hour", "day"})
		if g.define(srv, scope+"._rate_"+w) {
			fmt.Fprintf(b, "        rate_limit: %d/%s\n", 1+g.r.Intn(5), w)
			when(0.3)
			break
		}
		fallthrough
	case x < 0.7:
		g.nCount++
		counter := fmt.Sprintf("c%d", g.nCount)
		g.define(srv, scope+"."+counter)
		fmt.Fprintf(b, "        state: {counter: %s, window: %s", counter, g.pick([]string{"minute", "hour", "day"}))
		switch {
		case g.chance(0.3):
			fmt.Fprintf(b, ", increment_from: %s", g.pick([]string{"args.amount", "args.amount", "args.o.x", "args.a"}))
		case g.chance(0.4):
			fmt.Fprintf(b, ", increment: %d", 1+g.r.Intn(3))
		}
		b.WriteString("}\n")
		var conds []string
		if g.chance(0.8) {
			op := g.pick([]string{"lte", "lte", "lt"})
			val := fmt.Sprint(g.r.Intn(6))
			if g.chance(0.1) {
				val = g.pick([]string{"2.5", "-1", "3.0", "-1.5", "1e21", "18446744073709551615", "9223372036854775807"})
			}
			conds = append(conds, fmt.Sprintf("{path: %s, op: %s, value: %s}", q("state."+scope+"."+counter), op, val))
		}
		conds = append(conds, g.conds(srv, g.r.Intn(2))...)
		if len(conds) == 0 {
			conds = g.conds(srv, 1)
		}
		writeConds("conditions", conds)
		when(0.3)
	default:
		writeConds("conditions", g.conds(srv, 1+g.r.Intn(3)))
		when(0.3)
	}
	if g.chance(0.5) {
		fmt.Fprintf(b, "        on_deny: %s\n", q(g.pick([]string{"Stop: é ünïcode", "", "Too big", `say "no"`, "Rate limit of 1 per minute reached. Try again later."})))
	}
	if g.chance(0.12) {
		b.WriteString("        mode: shadow\n")
	}
}

// define records a counter of srv; false if it is already defined.
func (g *gen) define(srv, key string) bool {
	for _, k := range g.defined[srv] {
		if k == key {
			return false
		}
	}
	g.defined[srv] = append(g.defined[srv], key)
	return true
}

func (g *gen) conds(srv string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		var path string
		switch x := g.r.Float64(); {
		case x < 0.15 && len(g.defined[srv]) > 0:
			path = "state." + g.pick(g.defined[srv])
		case x < 0.4:
			path = g.pick(miscPaths)
		default:
			path = g.pick(argPaths)
		}
		op := g.pick(policy.Operators)
		var val string
		switch op {
		case "eq", "neq", "contains":
			val = g.pick(yamlScalars)
		case "in", "not_in":
			var vs []string
			for j, m := 0, g.r.Intn(4); j < m; j++ {
				vs = append(vs, g.pick(yamlScalars))
			}
			val = "[" + strings.Join(vs, ", ") + "]"
		case "lt", "lte", "gt", "gte":
			val = g.pick(yamlNumbers)
		case "exists":
			val = g.pick([]string{"true", "false"})
		case "regex":
			val = q(g.pick(regexes))
		}
		out = append(out, fmt.Sprintf("{path: %s, op: %s, value: %s}", q(path), op, val))
	}
	return out
}

// input returns a random call for a policy set.
func (g *gen) input(set *policy.Set) bundles.Input {
	var in bundles.Input
	switch x := g.r.Float64(); {
	case x < 0.05:
		in.Server = "gamma"
	case x < 0.07:
		in.Server = ""
	default:
		in.Server = g.pick(servers)
	}
	switch x := g.r.Float64(); {
	case x < 0.5:
		in.Tool = g.pick(exactTools)
	case x < 0.9:
		in.Tool = g.pick(callTools)
	default:
		in.Tool = g.pick(globTools) // a name with glob characters in it
	}
	if g.chance(0.6) {
		in.Arguments = json.RawMessage(g.object(map[string]func() string{
			"a": g.value, "b": g.value, "amount": g.amount, "s": g.value, "list": g.list,
			"o": func() string {
				if g.chance(0.2) {
					return g.value()
				}
				return g.object(map[string]func() string{"x": g.amount, "y": func() string {
					return g.object(map[string]func() string{"z": g.value})
				}})
			},
			"a.b": g.value,
		}))
	}
	if g.chance(0.5) {
		in.Annotations = json.RawMessage(g.object(map[string]func() string{
			"readOnlyHint": g.hint, "destructiveHint": g.hint, "openWorldHint": g.hint,
		}))
	}
	in.Identity.Subject = g.pick([]string{"alice", "bob", "", "5", "true", "é"})
	for _, gr := range []string{"eng", "ops", "5", "true"} {
		if g.chance(0.3) {
			in.Identity.Groups = append(in.Identity.Groups, gr)
		}
	}
	if g.chance(0.5) {
		in.Identity.Claims = json.RawMessage(g.object(map[string]func() string{
			"role": g.value, "o": func() string { return g.object(map[string]func() string{"k": g.value}) },
		}))
	}
	in.State = g.state(set)
	return in
}

// state gives some of the counters values around their limits.
func (g *gen) state(set *policy.Set) []bundles.CounterValue {
	var out []bundles.CounterValue
	seen := map[string]bool{}
	for _, f := range set.Files {
		for _, t := range f.Tools {
			for i := range t.Rules {
				r := &t.Rules[i]
				if r.State == nil || g.chance(0.3) {
					continue
				}
				key := policy.CounterKey(t.Key, r.State.Counter)
				if seen[key] {
					continue
				}
				seen[key] = true
				limit, ok := regogen.CounterLimit(t.Key, r)
				if !ok {
					limit = 3
				}
				v := limit + int64(g.r.Intn(5)) - 3
				if g.chance(0.05) {
					v = 1 << 62
				}
				out = append(out, bundles.CounterValue{Key: key, Value: v})
			}
		}
	}
	if g.chance(0.1) {
		out = append(out, bundles.CounterValue{Key: "nobody.counts", Value: 7})
	}
	return out
}

func (g *gen) value() string { return g.pick(jsonValues) }

func (g *gen) amount() string {
	return g.pick([]string{"1", "2", "3", "0", "2.7", "-2.7", `"3"`, "null", "1e21", "4.0", "1E1", "0.5", "true", "[2]", "9223372036854775807", "9223372036854775808"})
}

func (g *gen) hint() string { return g.pick([]string{"true", "false", `"true"`, "null", "1"}) }

func (g *gen) list() string {
	var vs []string
	for i, n := 0, g.r.Intn(4); i < n; i++ {
		vs = append(vs, g.value())
	}
	return "[" + strings.Join(vs, ",") + "]"
}

// object writes a JSON object with a random subset of fields.
func (g *gen) object(fields map[string]func() string) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		if g.chance(0.6) {
			parts = append(parts, q(k)+":"+fields[k]())
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}
