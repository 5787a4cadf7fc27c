package policy

import (
	"os"
	"regexp"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse and Lint: they never panic, and
// every diagnostic points at a real place and says something. A file that
// lints clean holds only what Parse promises.
func FuzzParse(f *testing.F) {
	for _, path := range corpusFiles(f) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, tc := range lintCases {
		for _, s := range tc.files {
			f.Add(s.Data)
		}
	}
	if data, err := os.ReadFile("testdata/extensions.yaml"); err == nil {
		f.Add(data)
	}
	// Corners of YAML: a value that contains itself, explicit tags, a
	// byte-order mark, a NUL, an empty document, complex keys.
	for _, s := range []string{
		"version: \"1\"\ntools:\n  a:\n    rules:\n      - name: r\n        conditions:\n          - {path: args.a, op: in, value: &x [*x]}\n",
		"version: \"1\"\ntools:\n  a:\n    rules:\n      - name: r\n        conditions:\n          - {path: args.a, op: eq, value: !!timestamp 2001-01-01}\n",
		"version: \"1\"\ntools:\n  a:\n    rules:\n      - {name: r, conditions: [{path: args.a, op: eq, value: !!binary aGVsbG8=}]}\n",
		"\ufeffversion: \"1\"\ndefault: nope\n",
		"version: \"1\"\n\x00",
		"---\n...\n",
		"version: \"1\"\ntools:\n  ? [a]\n  : {rules: []}\n",
		"version: &v \"1\"\ntools: {<<: *v, a: *v}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, diags := Parse("team/fuzz.yaml", data)
		if file == nil {
			t.Fatal("Parse returned a nil file")
		}
		// Two files of one server exercise Lint's cross-file checks.
		other, more := Parse("other/fuzz.yaml", data)
		_, lintDiags := Lint([]*File{file, other})
		diags = append(append(diags, more...), lintDiags...)
		for _, d := range diags {
			if d.Pos.Line < 1 || d.Pos.Col < 1 || d.Msg == "" || d.Path == "" {
				t.Errorf("bad diagnostic %q (pos %v)", d.String(), d.Pos)
			}
		}
		if len(diags) == 0 {
			checkClean(t, file)
		}
	})
}

// checkClean asserts what a file without diagnostics promises.
func checkClean(t *testing.T, f *File) {
	t.Helper()
	if f.Version != "1" || (f.Default != "allow" && f.Default != "deny") || f.Server == "" {
		t.Errorf("clean file: version %q, default %q, server %q", f.Version, f.Default, f.Server)
	}
	for _, h := range f.Hide {
		if h.Value == "" {
			t.Errorf("clean file hides an empty name")
		}
		if IsGlob(h.Value) {
			if _, err := globMatcher(h.Value); err != nil {
				t.Errorf("hide %q: %v", h.Value, err)
			}
		}
	}
	for _, tl := range f.Tools {
		if IsGlob(tl.Key) {
			if _, err := globMatcher(tl.Key); err != nil {
				t.Errorf("tools.%s: %v", tl.Key, err)
			}
		}
		for _, r := range tl.Rules {
			if r.Name == "" {
				t.Errorf("tools.%s: clean rule without a name", tl.Key)
			}
			switch r.Action {
			case ActionEvaluate:
				if len(r.Conditions) == 0 {
					t.Errorf("tools.%s: rule %q: clean evaluate rule without conditions", tl.Key, r.Name)
				}
			case ActionDeny:
				if len(r.Conditions) != 0 {
					t.Errorf("tools.%s: rule %q: clean deny rule with conditions", tl.Key, r.Name)
				}
			case ActionRequireApproval:
				if r.ApprovalTimeout <= 0 {
					t.Errorf("tools.%s: rule %q: approval timeout %v", tl.Key, r.Name, r.ApprovalTimeout)
				}
			default:
				t.Errorf("tools.%s: rule %q: action %q", tl.Key, r.Name, r.Action)
			}
			if s := r.State; s != nil {
				if s.Counter == "" || Windows[s.Window] == 0 || (s.IncrementFrom == "" && s.Increment < 1) {
					t.Errorf("tools.%s: rule %q: state %+v", tl.Key, r.Name, *s)
				}
			}
			for _, c := range append(append([]Condition(nil), r.Conditions...), r.When...) {
				if checkPath(c.Path) != nil || !contains(Operators, c.Op) || !c.HasValue {
					t.Errorf("tools.%s: rule %q: condition %+v", tl.Key, r.Name, c)
				}
			}
		}
	}
}

func globMatcher(glob string) (*regexp.Regexp, error) {
	re, err := GlobRegexp(glob)
	if err != nil {
		return nil, err
	}
	return regexp.Compile(re)
}
