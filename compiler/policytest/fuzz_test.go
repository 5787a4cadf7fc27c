package policytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

// FuzzParse feeds arbitrary bytes to Parse and builds every case's input:
// neither panics; Parse returns a file or an error, never both or neither;
// each error line names the file; a file Parse accepts holds only what
// `toolgate test` relies on (cases, each named, with a tool and a known
// expectation); an input that builds has JSON objects where §6 wants them.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("../../policies/*/*_test.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed test files (%v)", err)
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"cases: []",
		"server: s\ncases:\n  - {name: a, tool: t, expect: allow, args: {x: .inf}}\n",
		"cases:\n  - {name: a, tool: t, expect: deny, args: {x: {1: 2}}, state: {t.c: 99999999999999999999}}\n",
		"cases:\n  - {name: a, tool: t, expect: deny, identity: {subject: s, claims: {k: &x [*x]}}}\n",
		"cases:\n  - &c {name: a, tool: t, expect: deny}\n  - *c\n",
		"cases:\n  - {name: a, tool: t, expect: require_approval, annotations: {destructiveHint: true}, message: ~}\n",
		"---\n...\n",
		"cases: !!binary aGVsbG8=\n",
	} {
		f.Add([]byte(s))
	}
	const path = "policies/fuzz_test.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(path, data)
		if (file == nil) == (err == nil) {
			t.Fatalf("Parse returned file %v and error %v", file, err)
		}
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path) {
					t.Errorf("error line does not name the file: %q", line)
				}
			}
			return
		}
		if len(file.Cases) == 0 || file.Path != path {
			t.Fatalf("accepted file: %d cases, path %q", len(file.Cases), file.Path)
		}
		for _, c := range file.Cases {
			switch bundles.Outcome(c.Expect) {
			case bundles.Allow, bundles.Deny, bundles.RequireApproval:
			default:
				t.Errorf("accepted case %q expects %q", c.Name, c.Expect)
			}
			if c.Name == "" || c.Tool == "" {
				t.Errorf("accepted case without name or tool: %+v", c)
			}
			in, err := c.Input("srv")
			if err != nil {
				continue // reported to the user as that case's failure
			}
			for name, raw := range map[string]json.RawMessage{"arguments": in.Arguments, "annotations": in.Annotations, "claims": in.Identity.Claims} {
				if raw != nil && (!json.Valid(raw) || raw[0] != '{') {
					t.Errorf("case %q: %s is not a JSON object: %s", c.Name, name, raw)
				}
			}
			for i := 1; i < len(in.State); i++ {
				if in.State[i-1].Key >= in.State[i].Key {
					t.Errorf("case %q: state not sorted by key: %v", c.Name, in.State)
				}
			}
		}
	})
}
