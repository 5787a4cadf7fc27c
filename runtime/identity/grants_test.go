package identity

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a log sink safe for the watcher's goroutine.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func bearer(token string) *http.Request {
	r := httptest.NewRequest("POST", "/mcp", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// eventually polls cond until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGrantsLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grants.yaml")
	clock := newClock()
	alice, aliceHash, _ := NewToken()
	ci, ciHash, _ := NewToken()
	if err := AddGrant(path, Grant{Label: "alice", TokenSHA256: aliceHash, Subject: "alice", Groups: []string{"eng"},
		Claims: []byte(`{"team":"platform"}`), Servers: []string{"github"}}); err != nil {
		t.Fatal(err)
	}
	if err := AddGrant(path, Grant{Label: "ci", TokenSHA256: ciHash, Subject: "ci", Expires: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	g, err := OpenGrants(path, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	id, err := g.Authenticate(bearer(alice), "github")
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "alice" || len(id.Groups) != 1 || id.Groups[0] != "eng" || string(id.Claims) != `{"team":"platform"}` {
		t.Errorf("identity = %+v", id)
	}
	for _, tc := range []struct {
		name   string
		req    *http.Request
		server string
		want   error
	}{
		{"other server", bearer(alice), "jira", ErrNotGranted},
		{"no server", bearer(alice), "", ErrNotGranted},
		{"unknown token", bearer("tg_" + strings.Repeat("A", 43)), "github", ErrInvalidToken},
		{"the hash as token", bearer(aliceHash), "github", ErrInvalidToken},
		{"no header", bearer(""), "github", ErrNoCredential},
	} {
		if _, err := g.Authenticate(tc.req, tc.server); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := g.Authenticate(bearer(ci), "anything"); err != nil {
		t.Errorf("ci before expiry: %v", err)
	}
	clock.Add(time.Hour)
	if _, err := g.Authenticate(bearer(ci), "anything"); !errors.Is(err, ErrExpired) {
		t.Errorf("ci at expiry: err = %v, want ErrExpired", err)
	}
	if _, err := g.Lookup(alice); err != nil {
		t.Errorf("alice never expires: %v", err)
	}
}

func TestGrantsOpenFails(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenGrants(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("grants:\n  - label: x\n"), 0o600)
	if _, err := OpenGrants(bad); err == nil || !strings.Contains(err.Error(), "bad.yaml:2:5") {
		t.Errorf("bad file: err = %v", err)
	}
}

// TestGrantsHotReload adds, revokes and expires grants while the proxy's
// Grants watches the file, and checks that a bad file keeps the grants in
// force.
func TestGrantsHotReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grants.yaml")
	if err := os.WriteFile(path, []byte("grants: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	var logs syncBuffer
	g, err := OpenGrants(path, WithClock(clock.Now), WithPollInterval(50*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v", err)
		}
	}()
	works := func(token string) func() bool {
		return func() bool { _, err := g.Authenticate(bearer(token), "github"); return err == nil }
	}
	refused := func(token string) func() bool {
		return func() bool { _, err := g.Authenticate(bearer(token), "github"); return err != nil }
	}

	alice, aliceHash, _ := NewToken()
	if works(alice)() {
		t.Fatal("alice works before being added")
	}
	if err := AddGrant(path, Grant{Label: "alice", TokenSHA256: aliceHash, Subject: "alice"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an added grant works", works(alice))

	bob, bobHash, _ := NewToken()
	if err := AddGrant(path, Grant{Label: "bob", TokenSHA256: bobHash, Subject: "bob", Expires: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob works", works(bob))
	clock.Add(time.Minute)
	if _, err := g.Authenticate(bearer(bob), "github"); !errors.Is(err, ErrExpired) {
		t.Errorf("bob after expiry: err = %v, want ErrExpired", err)
	}

	// A broken file is refused; alice keeps working.
	good, _ := os.ReadFile(path)
	if err := writeAtomic(path, append(append([]byte{}, good...), "  - label: [oops\n"...)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad file is logged", func() bool { return strings.Contains(logs.String(), "grants file refused") })
	if err := g.Reload(); err == nil {
		t.Error("Reload of a bad file: no error")
	}
	if !works(alice)() {
		t.Error("alice stopped working after a bad file")
	}
	// A deleted or empty file keeps the grants too.
	os.Remove(path)
	if err := g.Reload(); err == nil || !works(alice)() {
		t.Errorf("after deleting the file: Reload err = %v, alice works = %v", err, works(alice)())
	}
	os.WriteFile(path, nil, 0o600)
	if err := g.Reload(); err == nil || !strings.Contains(err.Error(), "grants: []") || !works(alice)() {
		t.Errorf("empty file: Reload err = %v, alice works = %v", err, works(alice)())
	}
	writeAtomic(path, good)
	if err := RevokeGrant(path, "alice"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a revoked grant stops working", refused(alice))
	if _, err := g.Authenticate(bearer(alice), "github"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("revoked: err = %v, want ErrInvalidToken", err)
	}
	if n := len(g.List()); n != 1 {
		t.Errorf("List has %d grants, want 1 (bob)", n)
	}
	// Replaced by rename, as git does.
	carol, carolHash, _ := NewToken()
	tmp := filepath.Join(dir, "new.yaml")
	os.WriteFile(tmp, []byte("grants:\n  - {label: carol, token_sha256: "+carolHash+", subject: carol, servers: [github]}\n"), 0o600)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a renamed-in file is loaded", works(carol))
	if works(alice)() || g.List()[0].Label != "carol" {
		t.Error("the renamed-in file is not the only one in force")
	}
	if strings.Contains(logs.String(), alice) || strings.Contains(logs.String(), carol) {
		t.Error("a token was logged")
	}
}

// TestGrantsWrittenInPlace: a grants file written in place, in two pieces
// 10 ms apart (as some editors write), is read once whole: the first piece
// alone does not parse, and is never read — neither on the notification
// nor by the poll (every 5 ms here, so one falls between the pieces).
func TestGrantsWrittenInPlace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grants.yaml")
	if err := os.WriteFile(path, []byte("grants: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	g, err := OpenGrants(path, WithPollInterval(5*time.Millisecond), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	alice, aliceHash, _ := NewToken()
	// The whole file as AddGrant writes it.
	model := filepath.Join(t.TempDir(), "model.yaml")
	os.WriteFile(model, []byte("grants: []\n"), 0o600)
	if err := AddGrant(model, Grant{Label: "alice", TokenSHA256: aliceHash, Subject: "alice", Servers: []string{"github"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(model)
	whole := string(raw)
	if _, err := ParseGrants("half", raw[:30]); err == nil {
		t.Fatalf("the first piece %q parses: the test would prove nothing", raw[:30])
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(whole[:30])
	time.Sleep(10 * time.Millisecond)
	f.WriteString(whole[30:])
	f.Close()
	eventually(t, "alice works", func() bool { _, err := g.Authenticate(bearer(alice), "github"); return err == nil })
	if strings.Contains(logs.String(), "refused") {
		t.Errorf("the half-written file was read:\n%s", logs.String())
	}
}
