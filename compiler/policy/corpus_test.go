package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// corpusDir holds PolicyLayer's public v1 templates; the shared folder sits
// beside the repository (../shared from the module root), in CI as here.
const corpusDir = "../../../shared/corpus/policylayer-templates"

// corpusFiles returns the corpus's policy files, failing the test when the
// folder is missing: every one of them must lint clean (policy.md).
func corpusFiles(tb testing.TB) []string {
	tb.Helper()
	if _, err := os.Stat(corpusDir); err != nil {
		tb.Fatalf("policy corpus missing: %v (the shared folder must be checked out beside the repository, so that %s exists from compiler/policy)", err, corpusDir)
	}
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatalf("no *.yaml files in %s", corpusDir)
	}
	return files
}

func TestCorpusLintsClean(t *testing.T) {
	files := corpusFiles(t)
	var sources []Source
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, Source{Path: filepath.Base(path), Data: data})
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, diags := Parse(filepath.Base(path), data)
			for _, d := range diags {
				t.Errorf("%s", d)
			}
			if got, want := f.Server, strings.TrimSuffix(filepath.Base(path), ".yaml"); got != want {
				t.Errorf("server: got %q, want %q", got, want)
			}
			if f.Version != "1" {
				t.Errorf("version: got %q, want \"1\"", f.Version)
			}
			if f.Default != "allow" && f.Default != "deny" {
				t.Errorf("default: got %q, want allow or deny", f.Default)
			}
			wantKeys, wantRules := yamlToolKeys(t, data)
			var gotKeys []string
			for _, tl := range f.Tools {
				gotKeys = append(gotKeys, tl.Key)
				if got, want := len(tl.Rules), wantRules[tl.Key]; got != want {
					t.Errorf("tools.%s: got %d rules, want %d", tl.Key, got, want)
				}
				if tl.Pos.Line < 1 || tl.Pos.Col < 1 {
					t.Errorf("tools.%s: position %v, want a line and column", tl.Key, tl.Pos)
				}
			}
			if !slices.Equal(gotKeys, wantKeys) {
				t.Errorf("tool keys:\ngot  %q\nwant %q", gotKeys, wantKeys)
			}
		})
	}
	// Each file governs its own server, so the corpus also lints clean as
	// one set.
	set, diags := Load(sources)
	for _, d := range diags {
		t.Errorf("Load: %s", d)
	}
	if got, want := len(set.Servers), len(files); got != want {
		t.Errorf("servers: got %d, want %d", got, want)
	}
	for _, w := range Warnings(set) {
		t.Errorf("the corpus draws a warning: %s", w)
	}
}

// yamlToolKeys reads the keys of `tools`, in file order, and each key's
// number of rules, straight from the YAML.
func yamlToolKeys(t *testing.T, data []byte) ([]string, map[string]int) {
	t.Helper()
	var doc struct {
		Tools yaml.Node `yaml:"tools"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	rules := map[string]int{}
	for i := 0; i+1 < len(doc.Tools.Content); i += 2 {
		key := doc.Tools.Content[i].Value
		keys = append(keys, key)
		var tool struct {
			Rules []any `yaml:"rules"`
		}
		if err := doc.Tools.Content[i+1].Decode(&tool); err != nil {
			t.Fatal(err)
		}
		rules[key] = len(tool.Rules)
	}
	return keys, rules
}
