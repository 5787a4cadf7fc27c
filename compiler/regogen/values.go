package regogen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/toolgate/toolgate/compiler/policy"
	"math"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// lit returns v as a Rego (JSON) literal.
func lit(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return str(x)
	}
	panic(fmt.Sprintf("regogen: no literal for %T", v))
}

// numLit returns a policy number as conditions compare it with a call's:
// the float64 nearest to it, as PolicyLayer compares (the host sends the
// call's numbers as float64s too: docs/semantics-choices.md, choice 12).
// Only whole numbers beyond 2^53 change: 9007199254740993 compares as
// 9007199254740992. Its text form (eq against a string) stays as written.
func numLit(v any) string {
	f, ok := policy.Number(v)
	if !ok {
		panic(fmt.Sprintf("regogen: %T is no number", v))
	}
	return lit(f)
}

// str returns s as a Rego string literal (JSON syntax, no HTML escaping).
func str(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// eqAlternatives returns Rego bodies over variable x, any of which holding
// means x eq v (policy.md §3): numerically equal when both are numbers,
// otherwise equal plain text forms.
func eqAlternatives(x string, v any) []string {
	switch val := v.(type) {
	case nil:
		return []string{x + " == null", x + ` == "<nil>"`}
	case bool:
		return []string{x + " == " + lit(val), x + " == " + str(strconv.FormatBool(val))}
	case string:
		alts := []string{x + " == " + str(val)}
		// A string that is a number's text form also equals that number,
		// compared exactly (docs/semantics-choices.md, choice 9). "-0" is
		// no number's text form here: a call's -0 reads as 0.
		if f, err := strconv.ParseFloat(val, 64); err == nil && !math.IsInf(f, 0) && policy.TextForm(f) == val && val != "-0" {
			alts = append(alts, "is_number("+x+"); "+x+" == "+lit(f))
		}
		switch val {
		case "true", "false":
			alts = append(alts, x+" == "+val)
		case "<nil>":
			alts = append(alts, x+" == null")
		}
		return alts
	}
	if _, ok := policy.Number(v); ok {
		return []string{"is_number(" + x + "); " + x + " == " + numLit(v), x + " == " + str(policy.TextForm(v))}
	}
	panic(fmt.Sprintf("regogen: eq on %T", v))
}

// wasmPattern returns a regex condition's pattern (RE2 syntax as Go's
// regexp reads it, policy.md §3) in a form the RE2 inside OPA's Wasm
// reads the same way. That RE2 is older than Go's regexp: it refuses the
// (?<name>…) spelling of a named group, so the call was denied, and its
// Unicode tables lack the newest characters, scripts and case foldings
// (\pL, \p{Kawi}, (?i)Ꟁ). A pattern using any of them is written out by
// Go's own parser: named groups as (?P<name>…), Unicode classes as the
// explicit ranges of Go's tables, literals matched ignoring case beyond
// ASCII as classes of their case-folding orbits. Any other pattern is left
// as the policy wrote it. Lint has compiled the
// pattern with Go's regexp; one that does not parse is returned unchanged.
func wasmPattern(p string) string {
	re, err := syntax.Parse(p, syntax.Perl)
	if err != nil {
		return p
	}
	folds := foldsBeyondASCII(re)
	if !folds && !strings.Contains(p, "(?<") && !strings.Contains(p, `\p`) && !strings.Contains(p, `\P`) {
		return p
	}
	if folds {
		expandFolds(re)
	}
	return re.String()
}

// foldsBeyondASCII reports whether re matches a literal ignoring case (?i)
// with a character beyond ASCII, whose case folding RE2's older tables may
// not know (Unicode 14's Ꟁ/ꟁ).
func foldsBeyondASCII(re *syntax.Regexp) bool {
	if re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase != 0 {
		for _, r := range re.Rune {
			if r >= 0x80 {
				return true
			}
		}
	}
	for _, sub := range re.Sub {
		if foldsBeyondASCII(sub) {
			return true
		}
	}
	return false
}

// expandFolds replaces each literal matched ignoring case with classes of
// each character's case-folding orbit, by Go's tables: the pattern then
// needs no folding from the engine that runs it.
func expandFolds(re *syntax.Regexp) {
	for _, sub := range re.Sub {
		expandFolds(sub)
	}
	if re.Op != syntax.OpLiteral || re.Flags&syntax.FoldCase == 0 {
		return
	}
	subs := make([]*syntax.Regexp, 0, len(re.Rune))
	for _, r := range re.Rune {
		orbit := []rune{r}
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			orbit = append(orbit, f)
		}
		slices.Sort(orbit)
		class := make([]rune, 0, 2*len(orbit))
		for _, o := range orbit {
			class = append(class, o, o)
		}
		subs = append(subs, &syntax.Regexp{Op: syntax.OpCharClass, Rune: class})
	}
	if len(subs) == 1 {
		*re = *subs[0]
		return
	}
	*re = syntax.Regexp{Op: syntax.OpConcat, Sub: subs}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ref turns a dotted path into a Rego reference under base.
func ref(base string, elems []string) string {
	var b strings.Builder
	b.WriteString(base)
	for _, e := range elems {
		if identRE.MatchString(e) && !regoKeyword(e) {
			b.WriteString("." + e)
		} else {
			b.WriteString("[" + str(e) + "]")
		}
	}
	return b.String()
}

func regoKeyword(s string) bool {
	switch s {
	case "as", "default", "else", "false", "import", "package", "not", "null", "true", "with", "some", "in", "every", "if", "contains":
		return true
	}
	return false
}
