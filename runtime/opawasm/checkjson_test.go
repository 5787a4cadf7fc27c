package opawasm

import (
	"bytes"
	"encoding/json"
	"regexp"
	"testing"
	"unicode/utf8"
)

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		in    string
		depth int
		want  int
	}{
		{`{}`, 1, jsonOK},
		{` {"a": [1, -2.5e+3, true, false, null, "x\n\u00e9\ud83d\ude00"]} `, 2, jsonOK},
		{`{"a": [1]}`, 1, jsonTooDeep},
		{`1`, 0, jsonOK},
		{`[]`, 0, jsonTooDeep},
		{``, 5, jsonSyntax},
		{`{`, 5, jsonSyntax},
		{`{"a":1,}`, 5, jsonSyntax},
		{`[1,]`, 5, jsonSyntax},
		{`{} {}`, 5, jsonSyntax},
		{`{}, "a": 1`, 5, jsonSyntax},
		{`01`, 5, jsonSyntax},
		{`1.`, 5, jsonSyntax},
		{`-`, 5, jsonSyntax},
		{`1e`, 5, jsonSyntax},
		{`"\x"`, 5, jsonSyntax},
		{`"\u12"`, 5, jsonSyntax},
		{"\"\x01\"", 5, jsonSyntax},
		{"\"\xff\"", 5, jsonSyntax},
		{`"\ud800"`, 5, jsonSyntax},
		{`"\udc00"`, 5, jsonSyntax},
		{`"\ud800\u0041"`, 5, jsonSyntax},
		{`tru`, 5, jsonSyntax},
		{`{"a" 1}`, 5, jsonSyntax},
		{`{1:1}`, 5, jsonSyntax},
	}
	for _, tt := range tests {
		if got := checkJSON([]byte(tt.in), tt.depth); got != tt.want {
			t.Errorf("checkJSON(%q, %d) = %d, want %d", tt.in, tt.depth, got, tt.want)
		}
	}
}

func TestCheckJSONAllocs(t *testing.T) {
	b := []byte(`{"a": [1, {"b": "c\u00e9"}, null], "d": {"e": {"f": [true, false, -1.5e3]}}}`)
	if n := testing.AllocsPerRun(100, func() { checkJSON(b, 64) }); n != 0 {
		t.Errorf("checkJSON allocates %v times", n)
	}
}

// refDepth is the nesting depth of valid JSON.
func refDepth(b []byte) int {
	depth, max, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case inStr && c == '"':
			inStr = false
		case inStr:
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
			max = maxInt(max, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return max
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)

// FuzzCheckJSON checks that checkJSON never panics and agrees with
// encoding/json's Valid (plus UTF-8 validity) on inputs within the depth
// limit, differing only on surrogate escapes, which it checks more strictly.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `{"a":[1,2,{"b":null}]}`, `"\ud83d\ude00"`, `"\ud800"`, `-0.5e-7`, `[[[[[[]]]]]]`,
		`{"a":"\u00e9\n"}`, "\"\xc3\xa9\"", `{"a":1,}`, `  true  `, `{}{}`,
	} {
		f.Add([]byte(s), 4)
	}
	f.Fuzz(func(t *testing.T, b []byte, depth int) {
		depth = depth % 100
		if depth < 0 {
			depth = -depth
		}
		got := checkJSON(b, depth)
		valid := json.Valid(b) && utf8.Valid(b)
		switch {
		case valid && refDepth(b) > depth:
			if got != jsonTooDeep && !(got == jsonSyntax && surrogateEscape.Match(b)) {
				t.Fatalf("checkJSON(%q, %d) = %d, want too deep (depth %d)", b, depth, got, refDepth(b))
			}
		case valid:
			if got != jsonOK && !surrogateEscape.Match(b) {
				t.Fatalf("checkJSON(%q, %d) = %d, want OK", b, depth, got)
			}
		default:
			if got == jsonOK {
				t.Fatalf("checkJSON(%q, %d) = OK, encoding/json says invalid", b, depth)
			}
		}
		if got == jsonOK && !isObject(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
			t.Fatalf("isObject(%q) = false", b)
		}
	})
}
