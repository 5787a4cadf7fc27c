package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Set is every policy file of one build, checked together.
type Set struct {
	// Files are sorted by path.
	Files []*File
	// Servers are sorted by name; each holds its files in path order.
	Servers []*Server
}

// Server is the files that govern one MCP server.
type Server struct {
	Name  string
	Files []*File
	// Default is the files' common default ("allow" or "deny").
	Default string
}

// IsTestFile reports whether a file name is a policy test: it ends in
// _test.yaml (policy.md §1). A name ending in _test.yml is a policy, of
// the server named like it.
func IsTestFile(name string) bool {
	return strings.HasSuffix(name, "_test.yaml")
}

func isPolicyFile(name string) bool {
	return (strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) && !IsTestFile(name)
}

// Find lists the policy files under the given files and folders (folders
// are walked; *_test.yaml files are left out, given by name too: they are
// policy tests, not policies), sorted, with slash paths. No paths means
// "policies".
func Find(paths []string) ([]string, error) {
	if len(paths) == 0 {
		paths = []string{"policies"}
	}
	seen := map[string]bool{}
	var out []string
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("reading policies: %w", err)
		}
		if !info.IsDir() {
			if IsTestFile(info.Name()) {
				continue
			}
			p := filepath.ToSlash(filepath.Clean(root))
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
			continue
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p != root && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				return nil
			}
			if isPolicyFile(d.Name()) {
				p = filepath.ToSlash(filepath.Clean(p))
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading policies under %s: %w", root, err)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Source is one policy file's path and bytes.
type Source struct {
	Path string
	Data []byte
}

// ReadSources reads the files Find lists. No paths means "policies".
func ReadSources(paths []string) ([]Source, error) {
	if len(paths) == 0 {
		paths = []string{"policies"}
	}
	files, err := Find(paths)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no policy files (*.yaml) under %s", strings.Join(paths, ", "))
	}
	out := make([]Source, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading policy: %w", err)
		}
		out = append(out, Source{f, data})
	}
	return out, nil
}

// Load parses and lints sources. The set is usable only when there are no
// diagnostics.
func Load(sources []Source) (*Set, []Diagnostic) {
	var files []*File
	var diags []Diagnostic
	for _, s := range sources {
		f, d := Parse(s.Path, s.Data)
		diags = append(diags, d...)
		files = append(files, f)
	}
	set, d := Lint(files)
	return set, append(diags, d...)
}

// Lint checks files together: files of one server must agree on default, a
// counter may be defined once per tool, and every state. condition must
// read a counter some rule defines.
func Lint(files []*File) (*Set, []Diagnostic) {
	set := &Set{Files: append([]*File(nil), files...)}
	sort.SliceStable(set.Files, func(i, j int) bool { return set.Files[i].Path < set.Files[j].Path })
	byName := map[string]*Server{}
	for _, f := range set.Files {
		s := byName[f.Server]
		if s == nil {
			s = &Server{Name: f.Server}
			byName[f.Server] = s
			set.Servers = append(set.Servers, s)
		}
		s.Files = append(s.Files, f)
	}
	sort.Slice(set.Servers, func(i, j int) bool { return set.Servers[i].Name < set.Servers[j].Name })
	var diags []Diagnostic
	for _, s := range set.Servers {
		diags = append(diags, lintServer(s)...)
	}
	return set, diags
}

// CounterKey returns "<scope>.<counter>".
func CounterKey(toolKey, counter string) string { return scopeOf(toolKey) + "." + counter }

func lintServer(s *Server) []Diagnostic {
	var diags []Diagnostic
	first := s.Files[0]
	s.Default = first.Default
	for _, f := range s.Files[1:] {
		if f.Default != first.Default {
			pos := f.DefaultPos
			if pos.Line == 0 {
				pos = Pos{1, 1}
			}
			diags = append(diags, Diagnostic{f.Path, pos, fmt.Sprintf(
				"default: %q in %s disagrees with default %q in %s; both files govern server %q and must agree",
				f.Default, f.Path, first.Default, first.Path, s.Name)})
		}
	}
	type def struct {
		path string
		pos  Pos
	}
	defined := map[string]def{}
	for _, f := range s.Files {
		for _, t := range f.Tools {
			for _, r := range t.Rules {
				if r.State == nil {
					continue
				}
				key := CounterKey(t.Key, r.State.Counter)
				if d, ok := defined[key]; ok {
					diags = append(diags, Diagnostic{f.Path, r.State.Pos, fmt.Sprintf(
						"tools.%s: rule %q: counter %q is already defined for this tool at %s:%d:%d",
						t.Key, r.Name, r.State.Counter, d.path, d.pos.Line, d.pos.Col)})
					continue
				}
				defined[key] = def{f.Path, r.State.Pos}
			}
		}
	}
	for _, f := range s.Files {
		for _, t := range f.Tools {
			for _, r := range t.Rules {
				for _, c := range append(append([]Condition(nil), r.Conditions...), r.When...) {
					if !strings.HasPrefix(c.Path, "state.") {
						continue
					}
					scope, counter, err := SplitStatePath(c.Path)
					if err != nil {
						continue
					}
					if _, ok := defined[scope+"."+counter]; !ok {
						diags = append(diags, Diagnostic{f.Path, c.Pos, fmt.Sprintf(
							"tools.%s: rule %q: %s reads counter %q of scope %q, which no rule of server %q defines (add a rule with state: {counter: %s, window: …} under %s)",
							t.Key, r.Name, c.Path, counter, scope, s.Name, counter, scopeKeyHint(scope))})
					}
				}
			}
		}
	}
	return diags
}

func scopeKeyHint(scope string) string {
	if scope == GlobalScope {
		return `"*"`
	}
	return fmt.Sprintf("%q", scope)
}
