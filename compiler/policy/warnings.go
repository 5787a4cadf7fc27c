package policy

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
)

// TextForm is the "plain text form" policy.md §3 compares by in eq: what
// Go's fmt %v prints for the value as PolicyLayer decodes it. A policy's
// YAML ints stay ints ("5000000"), its YAML floats and every JSON number in
// a call are float64 ("5e+06").
func TextForm(v any) string {
	if v == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%v", v)
}

// Warnings returns what in a set that lints clean is allowed but most
// likely not what its author meant, each at its place; `toolgate lint`
// prints them and still passes. They change no decision:
//
//   - an eq, neq, in or not_in value that is a quoted number a call's
//     number never equals by text (leading zeros, a string id, aside) ("12345678" against 12345678,
//     whose text form is 1.2345678e+07; "5.0" against 5): a blocklist
//     written so lets the number through;
//   - an increment_from whose rule does not refuse a negative amount
//     (policy.md §3 takes any number): a call with one lowers its counter.
func Warnings(set *Set) []Diagnostic {
	var out []Diagnostic
	for _, srv := range set.Servers {
		out = append(out, serverWarnings(srv)...)
	}
	return out
}

func serverWarnings(srv *Server) []Diagnostic {
	var out []Diagnostic
	for _, f := range srv.Files {
		for _, tl := range f.Tools {
			for _, r := range tl.Rules {
				for _, c := range append(append([]Condition(nil), r.Conditions...), r.When...) {
					if c.Generated {
						continue
					}
					if s, ok := quotedNumberNoCallEquals(c); ok {
						n, _ := strconv.ParseFloat(s, 64)
						out = append(out, Diagnostic{f.Path, c.Pos, fmt.Sprintf(
							"warning: %s %s %q: a call's number %s never equals this string (by text a number reads %s); write the number without quotes to compare numbers",
							c.Path, c.Op, s, s, TextForm(n))})
					}
				}
				if st := r.State; st != nil && st.IncrementFrom != "" && r.Action == ActionEvaluate && !refusesNegative(srv, tl.Key, st.IncrementFrom) {
					out = append(out, Diagnostic{f.Path, r.Pos, fmt.Sprintf(
						"warning: rule %q: increment_from %s takes negative amounts too, which lower the counter; add {path: %s, op: gte, value: 0} to the conditions of a rule of %q to refuse them",
						r.Name, st.IncrementFrom, st.IncrementFrom, tl.Key)})
				}
			}
		}
	}
	return out
}

// quotedNumberNoCallEquals returns the first string value of c that reads
// as a number but is not that number's text form, where c compares by eq.
func quotedNumberNoCallEquals(c Condition) (string, bool) {
	var values []any
	switch c.Op {
	case "eq", "neq":
		values = []any{c.Value}
	case "in", "not_in":
		values, _ = c.Value.([]any)
	}
	// contains is left out: on a string argument it is a substring test,
	// where a quoted number ("1.50") is what its author means.
	for _, v := range values {
		s, ok := v.(string)
		if !ok || (len(s) > 1 && s[0] == '0' && s[1] >= '0' && s[1] <= '9') {
			continue // "02139", "007": a string id, meant as a string
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) && TextForm(f) != s {
			return s, true
		}
	}
	return "", false
}

// refusesNegative reports whether an enforced evaluate rule of srv that
// every call of key passes through (one under key, under a glob matching
// it, or under "*") stops a
// negative value at path in step 3, before counters are reserved: a
// condition gt or gte a number ≥ 0.
func refusesNegative(srv *Server, key, path string) bool {
	for _, f := range srv.Files {
		if f.Mode == "shadow" {
			continue
		}
		for _, tl := range f.Tools {
			if tl.Key != key && tl.Key != "*" && !globCovers(tl.Key, key) {
				continue
			}
			for _, r := range tl.Rules {
				if r.Action != ActionEvaluate || r.Mode == "shadow" {
					continue
				}
				for _, c := range r.Conditions {
					if n, ok := Number(c.Value); ok && n >= 0 && c.Path == path && (c.Op == "gt" || c.Op == "gte") {
						return true
					}
				}
			}
		}
	}
	return false
}

// globCovers reports whether glob is a glob key matching every tool key
// names: key is an exact name the glob matches.
func globCovers(glob, key string) bool {
	if !IsGlob(glob) || IsGlob(key) || key == "*" {
		return false
	}
	re, err := GlobRegexp(glob)
	if err != nil {
		return false
	}
	ok, _ := regexp.MatchString(re, key)
	return ok
}
