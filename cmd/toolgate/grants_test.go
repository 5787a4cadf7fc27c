package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/runtime/identity"
)

// runGrants runs toolgate with args in-process, as main does, and returns
// stdout, stderr and the exit code main would use.
func runGrants(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRoot()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	var ue usageError
	var pe problemError
	switch {
	case err == nil:
	case errors.As(err, &pe):
		code = 1
		stderr.WriteString(err.Error())
	case errors.As(err, &ue):
		code = 2
		stderr.WriteString(err.Error())
	default:
		code = 1
		stderr.WriteString(err.Error())
	}
	return stdout.String(), stderr.String(), code
}

func TestGrantsCommandRoundTrip(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "grants.yaml")

	out, errOut, code := runGrants(t, "grants", "add", "alice-laptop", "--grants-file", file,
		"--subject", "alice", "--groups", "eng, oncall", "--servers", "github,jira", "--expires", "2099-01-01")
	if code != 0 {
		t.Fatalf("add: exit %d: %s", code, errOut)
	}
	token := strings.TrimSpace(out)
	if !strings.HasPrefix(token, identity.TokenPrefix) || strings.Count(out, "\n") != 1 {
		t.Fatalf("add printed %q; want the token alone on one line", out)
	}
	raw, _ := os.ReadFile(file)
	if strings.Contains(string(raw), token) || !strings.Contains(string(raw), identity.HashToken(token)) {
		t.Fatalf("the file holds the token, or not its hash:\n%s", raw)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(errOut, token) {
		t.Error("the token was printed on stderr too")
	}

	// The token works against the file the command wrote.
	g, err := identity.OpenGrants(file)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	id, err := g.Authenticate(r, "jira")
	if err != nil || id.Subject != "alice" || strings.Join(id.Groups, ",") != "eng,oncall" {
		t.Fatalf("authenticate: %+v, %v", id, err)
	}

	out2, _, code := runGrants(t, "grants", "add", "ci", "--grants-file", file, "--subject", "ci-bot")
	if code != 0 || strings.TrimSpace(out2) == token {
		t.Fatalf("second add: exit %d, token %q", code, out2)
	}
	out, _, code = runGrants(t, "grants", "list", "--grants-file", file)
	if code != 0 || !strings.Contains(out, "alice-laptop  alice") || !strings.Contains(out, "2099-01-01T00:00:00Z") ||
		!strings.Contains(out, "ci") || !strings.Contains(out, "*") || strings.Contains(out, token) {
		t.Errorf("list: exit %d\n%s", code, out)
	}
	out, _, code = runGrants(t, "grants", "list", "--grants-file", file, "--json")
	var rows []struct {
		Label   string   `json:"label"`
		Servers []string `json:"servers"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 2 || rows[1].Servers[0] != "*" {
		t.Errorf("list --json: exit %d\n%s", code, out)
	}

	if _, errOut, code := runGrants(t, "grants", "revoke", "alice-laptop", "--grants-file", file); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Authenticate(r, "jira"); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("revoked token: err = %v", err)
	}
	if _, errOut, code := runGrants(t, "grants", "revoke", "alice-laptop", "--grants-file", file); code != 1 || !strings.Contains(errOut, "no such grant") {
		t.Errorf("revoking again: exit %d (%s), want 1", code, errOut)
	}
	if _, errOut, code := runGrants(t, "grants", "add", "ci", "--grants-file", file, "--subject", "x"); code != 1 || !strings.Contains(errOut, "grant exists") {
		t.Errorf("adding a label twice: exit %d (%s), want 1", code, errOut)
	}
}

func TestGrantsCommandUsage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "grants.yaml")
	for _, args := range [][]string{
		{"grants", "add", "x", "--subject", "s"},                                // no file
		{"grants", "add", "x", "--grants-file", file},                           // no subject
		{"grants", "add", "--grants-file", file, "--subject", "s"},              // no label
		{"grants", "add", "bad label", "--grants-file", file, "--subject", "s"}, // bad label
		{"grants", "add", "x", "--grants-file", file, "--subject", "s", "--expires", "soon"},
		{"grants", "add", "x", "--grants-file", file, "--subject", "s", "--expires", "2001-01-01"},
		{"grants", "add", "x", "--grants-file", file, "--subject", "s", "--servers", "*,github"},
		{"grants", "add", "x", "--grants-file", file, "--subject", "s", "--no-such-flag"},
		{"grants", "revoke", "--grants-file", file},
		{"grants", "list"},
		{"grants", "nonsense"},
	} {
		out, errOut, code := runGrants(t, args...)
		if code != 2 {
			t.Errorf("%q: exit %d (%s), want 2", args, code, errOut)
		}
		if out != "" && !strings.Contains(out, "Usage") {
			t.Errorf("%q printed %q on stdout", args, out)
		}
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Error("a usage error wrote the file")
	}
	// A broken file: exit 1, with positions, and untouched.
	os.WriteFile(file, []byte("grants:\n  - label: x\n"), 0o600)
	if _, errOut, code := runGrants(t, "grants", "add", "y", "--grants-file", file, "--subject", "s"); code != 1 || !strings.Contains(errOut, "grants.yaml:2:5") {
		t.Errorf("broken file: exit %d (%s)", code, errOut)
	}
	if _, errOut, code := runGrants(t, "grants", "list", "--grants-file", file); code != 1 || !strings.Contains(errOut, "grants.yaml:2:5") {
		t.Errorf("list of a broken file: exit %d (%s)", code, errOut)
	}
}
