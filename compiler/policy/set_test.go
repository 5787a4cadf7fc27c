package policy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// writeTree creates files (slash paths) under dir.
func writeTree(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("version: \"1\"\n# "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeTree(t, dir,
		"policies/z.yaml",
		"policies/payments/stripe.yaml",
		"policies/payments/stripe_test.yaml", // a policy test
		"policies/payments/stripe_test.yml",  // a policy (of server stripe_test): only _test.yaml is a test
		"policies/platform/github.yml",
		"policies/platform/README.md",
		"policies/platform/notes.yaml.bak",
		"policies/.git/config.yaml", // dotted folder
		"policies/.hidden/x/a.yaml", // inside a dotted folder
		"policies/a.yaml",
		"policies/.dotfile.yaml", // a dotted file is still a policy
		"other/extra.yaml",
		".cfg/only.yaml",
	)
	tests := []struct {
		name  string
		paths []string
		want  []string
	}{
		{"no paths means policies", nil, []string{
			"policies/.dotfile.yaml",
			"policies/a.yaml",
			"policies/payments/stripe.yaml",
			"policies/payments/stripe_test.yml",
			"policies/platform/github.yml",
			"policies/z.yaml",
		}},
		{"a folder", []string{"policies/payments"}, []string{"policies/payments/stripe.yaml", "policies/payments/stripe_test.yml"}},
		{"a folder with a trailing slash", []string{"policies/platform/"}, []string{"policies/platform/github.yml"}},
		{"folders and files, sorted and once each", []string{"other", "policies/z.yaml", "policies/platform", "./policies/z.yaml"}, []string{
			"other/extra.yaml",
			"policies/platform/github.yml",
			"policies/z.yaml",
		}},
		{"a named test file is a test, not a policy (policy.md §1)", []string{"policies/payments/stripe_test.yaml"}, nil},
		{"a dotted root folder is walked", []string{".cfg"}, []string{".cfg/only.yaml"}},
		{"a named file is taken as given", []string{"policies/.git/../platform/README.md"}, []string{"policies/platform/README.md"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Find(tc.paths)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	t.Run("absolute folder", func(t *testing.T) {
		got, err := Find([]string{filepath.Join(dir, "policies", "platform")})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{filepath.ToSlash(filepath.Join(dir, "policies", "platform", "github.yml"))}
		if !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("missing path", func(t *testing.T) {
		_, err := Find([]string{"policies", "nope"})
		if err == nil || !strings.Contains(err.Error(), "nope") || !os.IsNotExist(unwrapAll(err)) {
			t.Errorf("got %v, want a not-exist error naming nope", err)
		}
	})
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

func TestReadSources(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeTree(t, dir, "policies/b.yaml", "policies/a/x.yaml", "policies/a/x_test.yaml", "policies/.old/y.yaml", "empty/README.md")
	got, err := ReadSources(nil)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range got {
		paths = append(paths, s.Path)
		if want := "version: \"1\"\n# " + s.Path + "\n"; string(s.Data) != want {
			t.Errorf("%s: got %q, want %q", s.Path, s.Data, want)
		}
	}
	if want := []string{"policies/a/x.yaml", "policies/b.yaml"}; !slices.Equal(paths, want) {
		t.Errorf("paths: got %q, want %q", paths, want)
	}
	if _, err := ReadSources([]string{"empty"}); err == nil || !strings.Contains(err.Error(), "no policy files") || !strings.Contains(err.Error(), "empty") {
		t.Errorf("folder without policies: got %v, want an error naming it", err)
	}
	if err := os.RemoveAll("policies/a"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove("policies/b.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSources(nil); err == nil || !strings.Contains(err.Error(), "under policies") {
		t.Errorf("no paths, no policies: got %v, want an error naming the default folder policies", err)
	}
	if _, err := ReadSources([]string{"missing"}); err == nil {
		t.Errorf("missing folder: got no error")
	}
}

// TestTestFileNamedYml: a test file named *_test.yml is a policy, and lint
// says to rename it.
func TestTestFileNamedYml(t *testing.T) {
	_, diags := Parse("policies/github_test.yml", []byte("cases:\n  - {name: a, tool: t, expect: allow}\n"))
	if len(diags) == 0 || !strings.Contains(diags[0].String(), "policies/github_test.yml:1:1: unknown field \"cases\": policy tests are files named *_test.yaml") {
		t.Fatalf("diagnostics: %v", diags)
	}
}

func TestIsTestFile(t *testing.T) {
	for name, want := range map[string]bool{
		"github_test.yaml": true, "github_test.yml": false, "github.yaml": false,
		"test.yaml": false, "github_tests.yaml": false, "_test.yaml": true,
	} {
		if got := IsTestFile(name); got != want {
			t.Errorf("IsTestFile(%q): got %v, want %v", name, got, want)
		}
	}
}

func TestServerName(t *testing.T) {
	for path, want := range map[string]string{
		"policies/platform/github.yaml": "github",
		"stripe.yml":                    "stripe",
		`policies\win\slack.yaml`:       "slack",
		"noext":                         "noext",
		"a/b.c.yaml":                    "b.c",
	} {
		if got := ServerName(path); got != want {
			t.Errorf("ServerName(%q): got %q, want %q", path, got, want)
		}
	}
}

func TestGlobRegexp(t *testing.T) {
	tests := []struct {
		glob    string
		want    string // the regexp, "" for an error
		match   []string
		noMatch []string
	}{
		{"get_*", `^get_.*$`, []string{"get_", "get_issue", "get_a_b"}, []string{"get", "list_get_x", "Get_x"}},
		{"*_repo", `^.*_repo$`, []string{"_repo", "create_repo"}, []string{"create_repos", "repo"}},
		{"?", `^.$`, []string{"a", "_", "é", "日"}, []string{"", "ab"}},
		{"[ab]x", `^[ab]x$`, []string{"ax", "bx"}, []string{"cx", "x", "abx"}},
		{"[!a]x", `^[^a]x$`, []string{"bx", "éx"}, []string{"ax", "x"}},
		{"[a-c]?", `^[a-c].$`, []string{"a1", "cz"}, []string{"d1", "a"}},
		{"créer_*", `^créer_.*$`, []string{"créer_ticket"}, []string{"creer_ticket"}},
		{"日本?", `^日本.$`, []string{"日本語"}, []string{"日本", "日本語語"}},
		{"[é日]", `^[é日]$`, []string{"é", "日"}, []string{"e"}},
		{"a.b+c", `^a\.b\+c$`, []string{"a.b+c"}, []string{"axb+c", "a.bbc"}},
		{`a\b`, `^a\\b$`, []string{`a\b`}, []string{"ab"}},
		{"[ab", "", nil, nil},
		{"[]x", "", nil, nil},
		{"[!]", "", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.glob, func(t *testing.T) {
			got, err := GlobRegexp(tc.glob)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			re := regexp.MustCompile(got)
			for _, s := range tc.match {
				if !re.MatchString(s) {
					t.Errorf("%q does not match %q, want a match", tc.glob, s)
				}
			}
			for _, s := range tc.noMatch {
				if re.MatchString(s) {
					t.Errorf("%q matches %q, want none", tc.glob, s)
				}
			}
		})
	}
}

func TestIsGlob(t *testing.T) {
	for key, want := range map[string]bool{
		"*": false, "get_issue": false, "get_*": true, "?": true, "[ab]": true, "a]": false,
	} {
		if got := IsGlob(key); got != want {
			t.Errorf("IsGlob(%q): got %v, want %v", key, got, want)
		}
	}
}

// A bad glob in a tools key or a hide entry is a lint error.
func TestBadGlobLint(t *testing.T) {
	_, diags := Load(one(`
version: "1"
hide: ["[ab"]
tools:
  "get_[]":
    rules: []
`))
	checkDiags(t, diags, []want{
		{"p.yaml:2:8", `hide: "[ab": bad glob pattern: unclosed [`},
		{"p.yaml:4:3", `tools: "get_[]": bad glob pattern: empty character class`},
	})
}
