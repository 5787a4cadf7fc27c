package identity

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

func TestParseBearer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		token  string
		want   error
	}{
		{"plain", []string{"Bearer tg_abc-_"}, "tg_abc-_", nil},
		{"case and spaces", []string{"  bearer   a.b.c  "}, "a.b.c", nil},
		{"padding", []string{"Bearer abc+/=="}, "abc+/==", nil},
		{"none", nil, "", ErrNoCredential},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", ErrNoCredential},
		{"scheme only", []string{"Bearer"}, "", ErrInvalidToken},
		{"scheme and space", []string{"Bearer "}, "", ErrInvalidToken},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", ErrInvalidToken},
		{"inner space", []string{"Bearer a b"}, "", ErrInvalidToken},
		{"bad char", []string{`Bearer a"b`}, "", ErrInvalidToken},
		{"padding in the middle", []string{"Bearer a=b"}, "", ErrInvalidToken},
		{"only padding", []string{"Bearer =="}, "", ErrInvalidToken},
		{"too long", []string{"Bearer " + strings.Repeat("a", MaxTokenLength+1)}, "", ErrInvalidToken},
		{"tab", []string{"Bearer\ta"}, "", ErrNoCredential},
	} {
		h := http.Header{}
		for _, v := range tc.values {
			h.Add("Authorization", v)
		}
		got, err := ParseBearer(h)
		if !errors.Is(err, tc.want) || got != tc.token {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.name, got, err, tc.token, tc.want)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer tg_abc", "bearer a.b.c", "Basic x", "Bearer ", "Bearer a==", "Bearer \x00", "BEARER  x=y"} {
		f.Add(s)
	}
	// Every refusal is one of these fixed texts: nothing of the header
	// value is ever repeated.
	refusals := map[string]bool{}
	for _, v := range []string{"", "Basic x", "Bearer", "Bearer a b", "Bearer " + strings.Repeat("a", MaxTokenLength+1)} {
		h := http.Header{}
		if v != "" {
			h.Set("Authorization", v)
		}
		_, err := ParseBearer(h)
		refusals[err.Error()] = true
	}
	_, err := ParseBearer(http.Header{"Authorization": {"a", "b"}})
	refusals[err.Error()] = true
	f.Fuzz(func(t *testing.T, v string) {
		token, err := ParseBearer(http.Header{"Authorization": {v}})
		if err != nil {
			if !errors.Is(err, ErrNoCredential) && !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v is neither ErrNoCredential nor ErrInvalidToken", err)
			}
			if token != "" || !refusals[err.Error()] {
				t.Fatalf("ParseBearer(%q) = %q, %v: not a fixed refusal", v, token, err)
			}
			return
		}
		if token == "" || len(token) > MaxTokenLength || !strings.Contains(v, token) || !isToken68(token) {
			t.Fatalf("ParseBearer(%q) = %q", v, token)
		}
		if !strings.EqualFold(strings.Fields(v)[0], "Bearer") || strings.Fields(v)[1] != token {
			t.Fatalf("ParseBearer(%q) = %q: not the word after Bearer", v, token)
		}
	})
}

func TestWriteUnauthorized(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		realm     string
		status    int
		challenge string
		code      string
	}{
		{"no credential", fail(ErrNoCredential, "send it"), "", 401, `Bearer realm="toolgate"`, "unauthorized"},
		{"invalid", fail(ErrInvalidToken, "bad signature"), "", 401,
			`Bearer realm="toolgate", error="invalid_token", error_description="bad signature"`, "invalid_token"},
		{"expired", fail(ErrExpired, "whatever"), "acme", 401,
			`Bearer realm="acme", error="invalid_token", error_description="the token has expired"`, "invalid_token"},
		{"not granted", fail(ErrNotGranted, `this token may not reach server "git\"hub"`), "", 401,
			`Bearer realm="toolgate", error="insufficient_scope", error_description="this token may not reach server 'git?'hub'"`, "insufficient_scope"},
		{"foreign error", errors.New("boom"), "r\"\n", 401,
			`Bearer realm="r'?", error="invalid_token", error_description="the token is not valid"`, "invalid_token"},
		{"unavailable", fail(ErrUnavailable, "x"), "", 503, "", "temporarily_unavailable"},
	} {
		rec := httptest.NewRecorder()
		WriteUnauthorized(rec, tc.err, tc.realm)
		if rec.Code != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, rec.Code, tc.status)
		}
		if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
			t.Errorf("%s: WWW-Authenticate\n got %s\nwant %s", tc.name, got, tc.challenge)
		}
		if rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", tc.name, rec.Header())
		}
		var body struct {
			Error string `json:"error"`
			Desc  string `json:"error_description"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error != tc.code || body.Desc == "" {
			t.Errorf("%s: body %s (%v)", tc.name, rec.Body, err)
		}
	}
}

func TestStripAuthorization(t *testing.T) {
	h := http.Header{
		"Authorization":       {"Bearer secret"},
		"authorization":       {"Bearer secret2"},
		"Proxy-Authorization": {"Basic x"},
		"Mcp-Session-Id":      {"s1"},
		"Accept":              {"application/json"},
	}
	StripAuthorization(h)
	if len(h) != 2 || h.Get("Mcp-Session-Id") != "s1" || h.Get("Accept") == "" {
		t.Errorf("after strip: %v", h)
	}
}

// TestChainOverHTTP serves an endpoint guarded by grants then JWT to a real
// HTTP client: every refusal is a 401 with a challenge, and the
// upstream sees neither the client's token nor a request it refused.
func TestChainOverHTTP(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	grantsPath := filepath.Join(dir, "grants.yaml")
	alice, aliceHash, _ := NewToken()
	old, oldHash, _ := NewToken()
	AddGrant(grantsPath, Grant{Label: "alice", TokenSHA256: aliceHash, Subject: "alice", Servers: []string{"github"}})
	AddGrant(grantsPath, Grant{Label: "old", TokenSHA256: oldHash, Subject: "old", Expires: clock.Now().Add(-time.Second)})
	grants, err := OpenGrants(grantsPath, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	k := ecKey(t, "ec")
	srv := newJWKSServer(t, jwks(k))
	j := newTestJWT(t, srv.URL, clock, nil)
	auth := Chain(grants, nil, j)

	secretFile := filepath.Join(dir, "jira.key")
	os.WriteFile(secretFile, []byte("jira-secret\n"), 0o600)
	t.Setenv("TEST_GH_TOKEN", "gh-secret")
	creds, err := ParseUpstreamHeaders([]string{"Authorization=Bearer env:TEST_GH_TOKEN", "X-Jira-Key=file:" + secretFile})
	if err != nil {
		t.Fatal(err)
	}

	var upstreamSaw http.Header
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := auth.Authenticate(r, "github")
		if err != nil {
			WriteUnauthorized(w, err, "")
			return
		}
		out := r.Header.Clone()
		StripAuthorization(out)
		creds.Apply(out)
		upstreamSaw = out
		json.NewEncoder(w).Encode(id)
	})
	ts := httptest.NewServer(handler)
	defer ts.Close()
	call := func(authz string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", ts.URL, strings.NewReader("{}"))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	resp, body := call("Bearer " + alice)
	var id bundles.Identity
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &id) != nil || id.Subject != "alice" {
		t.Fatalf("alice: %d %s", resp.StatusCode, body)
	}
	if got := upstreamSaw.Get("Authorization"); got != "Bearer gh-secret" || upstreamSaw.Get("X-Jira-Key") != "jira-secret" {
		t.Errorf("upstream saw Authorization %q, X-Jira-Key %q", got, upstreamSaw.Get("X-Jira-Key"))
	}
	resp, body = call("Bearer " + k.sign(t, claims(clock.Now(), nil)))
	if resp.StatusCode != 200 || !strings.Contains(body, `"Subject":"alice"`) {
		t.Fatalf("JWT: %d %s", resp.StatusCode, body)
	}

	upstreamSaw = nil
	badSig := k.sign(t, claims(clock.Now(), nil))
	badSig = badSig[:len(badSig)-4] + "AAAA"
	for _, tc := range []struct {
		name, authz, challenge string
		status                 int
	}{
		{"none", "", `Bearer realm="toolgate"`, 401},
		{"unknown grant", "Bearer tg_" + strings.Repeat("x", 43), `Bearer realm="toolgate", error="invalid_token", error_description="unknown or revoked token"`, 401},
		{"expired grant", "Bearer " + old, `Bearer realm="toolgate", error="invalid_token", error_description="the token has expired"`, 401},
		{"JWT bad signature", "Bearer " + badSig, `Bearer realm="toolgate", error="invalid_token", error_description="bad signature"`, 401},
		{"JWT wrong audience", "Bearer " + k.sign(t, claims(clock.Now(), map[string]any{"aud": "x"})), `Bearer realm="toolgate", error="invalid_token", error_description="wrong audience"`, 401},
	} {
		resp, body := call(tc.authz)
		if resp.StatusCode != tc.status || resp.Header.Get("WWW-Authenticate") != tc.challenge {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tc.status, tc.challenge)
		}
		if token := strings.TrimPrefix(tc.authz, "Bearer "); token != "" && strings.Contains(body+resp.Header.Get("WWW-Authenticate"), token) {
			t.Errorf("%s: the answer echoes the token", tc.name)
		}
	}
	if upstreamSaw != nil {
		t.Error("a refused request reached the upstream")
	}
	// Granted, but not this server.
	grantsOther, _ := OpenGrants(grantsPath, WithClock(clock.Now))
	if _, err := Chain(grantsOther, j).Authenticate(bearer(alice), "jira"); !errors.Is(err, ErrNotGranted) || StatusCode(err) != 401 {
		t.Errorf("alice on jira: %v", err)
	}
}
