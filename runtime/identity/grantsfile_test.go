package identity

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	hashA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hashB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

func TestGrantsFileParse(t *testing.T) {
	src := `# who may call
grants:
  - label: alice-laptop
    token_sha256: ` + strings.ToUpper(hashA) + `
    subject: alice
    groups: [eng, oncall]
    claims:
      team: platform
      level: 3
      ratio: 0.5
      admin: false
      tags: [a, b]
      nested: {x: null}
      since: 2024-01-02
    servers: [github, jira]
    expires: 2027-01-01
  - label: ci.runner_1
    token_sha256: ` + hashB + `
    subject: ci
    servers: ["*"]
    expires: 2026-06-30T12:00:00+02:00
`
	got, err := ParseGrants("grants.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Grant{{
		Label:       "alice-laptop",
		TokenSHA256: hashA,
		Subject:     "alice",
		Groups:      []string{"eng", "oncall"},
		Claims:      []byte(`{"admin":false,"level":3,"nested":{"x":null},"ratio":0.5,"since":"2024-01-02","tags":["a","b"],"team":"platform"}`),
		Servers:     []string{"github", "jira"},
		Expires:     time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
	}, {
		Label:       "ci.runner_1",
		TokenSHA256: hashB,
		Subject:     "ci",
		Servers:     []string{"*"},
		Expires:     time.Date(2026, 6, 30, 10, 0, 0, 0, time.UTC),
	}}
	if len(got) != len(want) {
		t.Fatalf("got %d grants, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.Expires.Equal(w.Expires) {
			t.Errorf("grant %d expires %v, want %v", i, g.Expires, w.Expires)
		}
		g.Expires, w.Expires = time.Time{}, time.Time{}
		if string(g.Claims) != string(w.Claims) {
			t.Errorf("grant %d claims\n got %s\nwant %s", i, g.Claims, w.Claims)
		}
		g.Claims, w.Claims = nil, nil
		if !reflect.DeepEqual(g, w) {
			t.Errorf("grant %d\n got %+v\nwant %+v", i, g, w)
		}
	}
	if !got[0].Allows("github") || got[0].Allows("slack") || got[0].Allows("") {
		t.Error("alice-laptop: Allows wrong")
	}
	if !got[1].Allows("slack") || !got[1].Allows("") {
		t.Error(`"*" must allow every server`)
	}
}

func TestGrantsFileEmpty(t *testing.T) {
	for _, src := range []string{"", "# nothing yet\n", "grants:\n", "grants: []\n", "~\n"} {
		got, err := ParseGrants("g.yaml", []byte(src))
		if err != nil || len(got) != 0 {
			t.Errorf("%q: got %v, %v; want no grants, no error", src, got, err)
		}
	}
}

func TestGrantsFileErrors(t *testing.T) {
	grant := func(extra string) string {
		return "grants:\n  - label: a\n    token_sha256: " + hashA + "\n    subject: s\n    servers: [x]\n" + extra
	}
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"not a mapping", "- a\n", []string{"g.yaml:1:1: a grants file is a mapping"}},
		{"unknown top key", "grant: []\n", []string{`g.yaml:1:1: unknown key "grant"`}},
		{"grants not a list", "grants: {a: 1}\n", []string{"g.yaml:1:9: grants: must be a list"}},
		{"unknown grant key", grant("    expiry: 2027-01-01\n"), []string{`g.yaml:6:5: unknown key "expiry"`}},
		{"repeated key", grant("    subject: t\n"), []string{`g.yaml:6:5: "subject" is set twice`}},
		{"missing fields", "grants:\n  - label: a\n", []string{"g.yaml:2:5: the grant has no token_sha256", "g.yaml:2:5: the grant has no subject", "g.yaml:2:5: the grant has no servers"}},
		{"bad hash", "grants:\n  - label: a\n    token_sha256: tg_secret\n    subject: s\n    servers: [x]\n", []string{"g.yaml:3:19: token_sha256 must be 64 hex digits"}},
		{"bad label", "grants:\n  - label: alice laptop\n    token_sha256: " + hashA + "\n    subject: s\n    servers: [x]\n", []string{`g.yaml:2:12: label "alice laptop"`}},
		{"empty servers", "grants:\n  - label: a\n    token_sha256: " + hashA + "\n    subject: s\n    servers: []\n", []string{"g.yaml:5:14: servers is empty"}},
		{"star mixed", "grants:\n  - label: a\n    token_sha256: " + hashA + "\n    subject: s\n    servers: ['*', x]\n", []string{`g.yaml:5:14: servers: "*" means every server`}},
		{"servers scalar", "grants:\n  - label: a\n    token_sha256: " + hashA + "\n    subject: s\n    servers: x\n", []string{"g.yaml:5:14: servers must be a list"}},
		{"bad expiry", grant("    expires: next year\n"), []string{`g.yaml:6:14: expires: "next year" is neither`}},
		{"yaml space time", grant("    expires: 2027-01-01 10:00:00\n"), []string{"g.yaml:6:14: expires:"}},
		{"claims list", grant("    claims: [a]\n"), []string{"g.yaml:6:13: claims must be a mapping"}},
		{"claims inf", grant("    claims: {x: .inf}\n"), []string{"g.yaml:6:17: claim value .inf is not a JSON number"}},
		{"claims binary", grant("    claims: {x: !!binary aGk=}\n"), []string{"g.yaml:6:17: claim value of type !!binary"}},
		{"alias", "grants:\n  - &g\n    label: a\n  - *g\n", []string{"g.yaml:2:5: anchors (&g)", "g.yaml:4:5: aliases (*g)"}},
		{"duplicate label", grant("  - label: a\n    token_sha256: " + hashB + "\n    subject: s\n    servers: [x]\n"), []string{`g.yaml:6:5: label "a" is used twice (first at line 2)`}},
		{"duplicate hash", grant("  - label: b\n    token_sha256: " + strings.ToUpper(hashA) + "\n    subject: s\n    servers: [x]\n"), []string{`g.yaml:6:5: token_sha256 of "b" is also that of the grant at line 2`}},
		{"syntax", "grants: [\n", []string{"g.yaml: "}},
		{"two documents", "grants: []\n---\ngrants: []\n", []string{"g.yaml:2:1: a second YAML document"}},
		{"too large", "#" + strings.Repeat("x", MaxGrantsFileSize), []string{"larger than"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseGrants("g.yaml", []byte(tc.src))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestGrantsFileTooMany(t *testing.T) {
	var b strings.Builder
	b.WriteString("grants:\n")
	for i := 0; i <= MaxGrants; i++ {
		b.WriteString("  - {}\n")
	}
	_, err := ParseGrants("g.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "at most 10000") {
		t.Fatalf("err = %v", err)
	}
}

func TestGrantsFileAddRevoke(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grants.yaml")
	_, hash1, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := AddGrant(path, Grant{Label: "alice", TokenSHA256: hash1, Subject: "alice", Groups: []string{"eng"},
		Claims: []byte(`{"big":12345678901234567890,"f":1.5e300,"l":[1,"x",null,true],"team":"platform"}`), Expires: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", fi.Mode().Perm())
	}
	// A reviewer's comments survive the edits.
	raw, _ := os.ReadFile(path)
	commented := "# Reviewed by security.\n" + strings.Replace(string(raw), "  - label: alice", "  # Alice's laptop\n  - label: alice", 1)
	if err := os.WriteFile(path, []byte(commented), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	_, hash2, _ := NewToken()
	if err := AddGrant(path, Grant{Label: "bob", TokenSHA256: hash2, Subject: "bob", Servers: []string{"github"}}); err != nil {
		t.Fatal(err)
	}
	if err := AddGrant(path, Grant{Label: "bob", TokenSHA256: HashToken("other"), Subject: "bob"}); !errors.Is(err, ErrGrantExists) {
		t.Errorf("adding bob twice: err = %v, want ErrGrantExists", err)
	}
	if err := AddGrant(path, Grant{Label: "carol", TokenSHA256: hash2, Subject: "carol"}); !errors.Is(err, ErrGrantExists) {
		t.Errorf("adding bob's hash again: err = %v, want ErrGrantExists", err)
	}
	grants, err := ReadGrants(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(grants) != 2 || grants[0].Label != "alice" || grants[1].Label != "bob" {
		t.Fatalf("grants = %+v", grants)
	}
	if got, want := string(grants[0].Claims), `{"big":12345678901234567890,"f":1.5e+300,"l":[1,"x",null,true],"team":"platform"}`; got != want {
		t.Errorf("claims = %s, want %s", got, want)
	}
	if !grants[0].Expires.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || !reflect.DeepEqual(grants[0].Servers, []string{"*"}) {
		t.Errorf("alice = %+v", grants[0])
	}
	raw, _ = os.ReadFile(path)
	for _, want := range []string{"# Reviewed by security.", "# Alice's laptop", "expires: \"2027-01-01\"", "servers: [github]"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("file lacks %q:\n%s", want, raw)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's own 0640 kept", fi.Mode().Perm())
	}

	if err := RevokeGrant(path, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := RevokeGrant(path, "alice"); !errors.Is(err, ErrNoSuchGrant) {
		t.Errorf("revoking twice: err = %v, want ErrNoSuchGrant", err)
	}
	if err := RevokeGrant(filepath.Join(dir, "none.yaml"), "x"); err == nil {
		t.Error("revoking in a missing file: no error")
	}
	grants, err = ReadGrants(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(grants) != 1 || grants[0].Label != "bob" {
		t.Fatalf("after revoke: %+v", grants)
	}
	raw, _ = os.ReadFile(path)
	if !strings.Contains(string(raw), "# Reviewed by security.") || strings.Contains(string(raw), hash1) {
		t.Errorf("after revoke:\n%s", raw)
	}
}

func TestGrantsFileEditRefusesBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grants.yaml")
	bad := "grants:\n  - label: a\n"
	os.WriteFile(path, []byte(bad), 0o600)
	err := AddGrant(path, Grant{Label: "b", TokenSHA256: hashB, Subject: "b"})
	if err == nil || !strings.Contains(err.Error(), "grants.yaml:2:5") {
		t.Errorf("err = %v, want the file's problems with positions", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != bad {
		t.Errorf("a bad file was rewritten:\n%s", raw)
	}
	// An edit that would make a bad file is not written either.
	if err := AddGrant(path+"2", Grant{Label: "b", TokenSHA256: "xyz", Subject: "b"}); err == nil {
		t.Error("a grant with a bad hash was written")
	}
}

func TestGrantsFileFlowListAndComments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grants.yaml")
	os.WriteFile(path, []byte("# only a comment\ngrants: []  # none yet\n"), 0o600)
	if err := AddGrant(path, Grant{Label: "a", TokenSHA256: hashA, Subject: "s"}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), "# only a comment") || !strings.Contains(string(raw), "\n  - label: a\n") {
		t.Errorf("file:\n%s", raw)
	}
}

func TestGrantTokens(t *testing.T) {
	tok, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != len(TokenPrefix)+43 || !isToken68(tok) {
		t.Errorf("token %q: want tg_ + 43 base64url characters", tok)
	}
	if hash != HashToken(tok) || len(hash) != 64 {
		t.Errorf("hash %q", hash)
	}
	tok2, _, _ := NewToken()
	if tok2 == tok {
		t.Error("two tokens are equal")
	}
	if got := HashToken("test"); got != hashA {
		t.Errorf("HashToken(test) = %s", got)
	}
}

func FuzzGrantsFile(f *testing.F) {
	f.Add([]byte("grants:\n  - label: a\n    token_sha256: " + hashA + "\n    subject: s\n    servers: ['*']\n    claims: {a: [1, {b: 2}]}\n    expires: 2027-01-01\n"))
	f.Add([]byte("grants: [{label: a, token_sha256: " + hashA + ", subject: s, servers: [x]}, {label: a}]\n"))
	f.Add([]byte("grants:\n  - &x {label: a}\n  - *x\n  - <<: *x\n"))
	f.Add([]byte("grants: !!map {? [a]: b}\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		grants, err := ParseGrants("f.yaml", data)
		if err != nil {
			return
		}
		labels, hashes := map[string]bool{}, map[string]bool{}
		for _, g := range grants {
			if !ValidLabel(g.Label) || labels[g.Label] || hashes[g.TokenSHA256] || len(g.TokenSHA256) != 64 || g.Subject == "" || len(g.Servers) == 0 {
				t.Fatalf("accepted an invalid grant %+v", g)
			}
			labels[g.Label], hashes[g.TokenSHA256] = true, true
			if g.Claims != nil && g.Claims[0] != '{' {
				t.Fatalf("claims %s are not an object", g.Claims)
			}
		}
	})
}
