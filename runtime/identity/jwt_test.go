package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testIssuer   = "https://idp.example.com/"
	testAudience = "toolgate"
)

// testKey is a signing key a test generated, with its kid and algorithm.
type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv any
	pub  any
}

func rsaKey(t testing.TB, kid string) testKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid, jose.RS256, k, &k.PublicKey}
}

func ecKey(t testing.TB, kid string) testKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid, jose.ES256, k, &k.PublicKey}
}

func edKey(t testing.TB, kid string) testKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid, jose.EdDSA, priv, pub}
}

func (k testKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.pub, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign makes a compact JWT of claims; opts may embed the key, etc.
func (k testKey) sign(t testing.TB, claims any, opts ...func(*jose.SignerOptions)) string {
	t.Helper()
	so := (&jose.SignerOptions{}).WithType("JWT")
	for _, o := range opts {
		o(so)
	}
	sk := jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}
	if so.EmbedJWK {
		sk.Key = k.priv
	}
	s, err := jose.NewSigner(sk, so)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func jwks(keys ...testKey) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk())
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// jwksServer serves a JWKS the test can swap and counts its requests.
type jwksServer struct {
	*httptest.Server
	body   atomic.Pointer[[]byte]
	status atomic.Int32
	hits   atomic.Int64
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	s := &jwksServer{}
	s.set(body)
	s.status.Store(200)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(int(s.status.Load()))
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte) { s.body.Store(&body) }

// claims returns valid claims at now, with changes applied.
func claims(now time.Time, changes map[string]any) map[string]any {
	c := map[string]any{
		"iss":    testIssuer,
		"aud":    []string{"other", testAudience},
		"sub":    "alice",
		"exp":    now.Add(time.Hour).Unix(),
		"iat":    now.Add(-time.Minute).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"groups": []string{"eng", "oncall"},
		"email":  "alice@example.com",
	}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func newTestJWT(t *testing.T, src string, clock *fakeClock, change func(*JWTConfig)) *JWT {
	t.Helper()
	cfg := JWTConfig{JWKS: src, Issuer: testIssuer, Audience: []string{testAudience}}
	if change != nil {
		change(&cfg)
	}
	j, err := NewJWT(cfg, WithClock(clock.Now), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestJWTVerifiesEachKeyType(t *testing.T) {
	clock := newClock()
	keys := []testKey{rsaKey(t, "rsa-1"), ecKey(t, "ec-1"), edKey(t, "ed-1")}
	srv := newJWKSServer(t, jwks(keys...))
	j := newTestJWT(t, srv.URL, clock, nil)
	for _, k := range keys {
		id, err := j.Authenticate(bearer(k.sign(t, claims(clock.Now(), nil))), "github")
		if err != nil {
			t.Errorf("%s: %v", k.alg, err)
			continue
		}
		if id.Subject != "alice" || !reflect.DeepEqual(id.Groups, []string{"eng", "oncall"}) {
			t.Errorf("%s: identity %+v", k.alg, id)
		}
		var all map[string]any
		if err := json.Unmarshal(id.Claims, &all); err != nil || all["email"] != "alice@example.com" || all["iss"] != testIssuer {
			t.Errorf("%s: claims %s (%v)", k.alg, id.Claims, err)
		}
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1 (cached)", n)
	}
}

func TestJWTRefusals(t *testing.T) {
	clock := newClock()
	good := rsaKey(t, "rsa-1")
	ec := ecKey(t, "ec-1")
	other := rsaKey(t, "rsa-1") // same kid, different key: an attacker's
	srv := newJWKSServer(t, jwks(good, ec))
	j := newTestJWT(t, srv.URL, clock, nil)
	now := clock.Now()

	// HS256 keyed with the public key's bytes: the classic confusion attack.
	pubDER, _ := x509.MarshalPKIXPublicKey(good.pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hsToken := func(secret []byte) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: secret, KeyID: "rsa-1"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(claims(now, nil)).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	jwkJSON, _ := json.Marshal(good.jwk())
	b64 := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(claims(now, nil))
	noneToken := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(payload) + "."
	noneKid := b64([]byte(`{"alg":"none","kid":"rsa-1"}`)) + "." + b64(payload) + "."
	// A good token with its payload swapped for one granting more.
	valid := good.sign(t, claims(now, nil))
	parts := strings.Split(valid, ".")
	forgedPayload, _ := json.Marshal(claims(now, map[string]any{"sub": "root"}))
	forged := parts[0] + "." + b64(forgedPayload) + "." + parts[2]
	// ES256 header on a token signed by the RSA key's kid.
	wrongType := ec.sign(t, claims(now, nil), func(o *jose.SignerOptions) {})
	wrongTypeParts := strings.Split(wrongType, ".")
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "rsa-1"})
	wrongType = b64(hdr) + "." + wrongTypeParts[1] + "." + wrongTypeParts[2]

	for _, tc := range []struct {
		name, token string
		want        error
		desc        string
	}{
		{"wrong issuer", good.sign(t, claims(now, map[string]any{"iss": "https://evil.example.com/"})), ErrInvalidToken, "wrong issuer"},
		{"wrong audience", good.sign(t, claims(now, map[string]any{"aud": "someone-else"})), ErrInvalidToken, "wrong audience"},
		{"no audience", good.sign(t, claims(now, map[string]any{"aud": nil})), ErrInvalidToken, "wrong audience"},
		{"expired", good.sign(t, claims(now, map[string]any{"exp": now.Add(-2 * time.Minute).Unix()})), ErrExpired, "expired"},
		{"no exp", good.sign(t, claims(now, map[string]any{"exp": nil})), ErrInvalidToken, "no exp"},
		{"not yet valid", good.sign(t, claims(now, map[string]any{"nbf": now.Add(5 * time.Minute).Unix()})), ErrInvalidToken, "not valid yet"},
		{"issued in the future", good.sign(t, claims(now, map[string]any{"iat": now.Add(5 * time.Minute).Unix()})), ErrInvalidToken, "issued in the future"},
		{"no subject", good.sign(t, claims(now, map[string]any{"sub": nil})), ErrInvalidToken, "no sub claim"},
		{"groups not strings", good.sign(t, claims(now, map[string]any{"groups": []any{1, 2}})), ErrInvalidToken, "groups claim"},
		{"alg none", noneToken, ErrInvalidToken, ""},
		{"alg none with kid", noneKid, ErrInvalidToken, ""},
		{"HS256 with the PEM public key", hsToken(pubPEM), ErrInvalidToken, "algorithm not accepted"},
		{"HS256 with the DER public key", hsToken(pubDER), ErrInvalidToken, "algorithm not accepted"},
		{"HS256 with the JWK", hsToken(jwkJSON), ErrInvalidToken, "algorithm not accepted"},
		{"other key, same kid", other.sign(t, claims(now, nil)), ErrInvalidToken, "bad signature"},
		{"embedded attacker key", other.sign(t, claims(now, nil), func(o *jose.SignerOptions) { o.EmbedJWK = true }), ErrInvalidToken, ""},
		{"payload swapped", forged, ErrInvalidToken, "bad signature"},
		{"alg does not fit the key", wrongType, ErrInvalidToken, "unknown key"},
		{"ES384 not allowed", func() string {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return testKey{"ec-1", jose.ES384, k, &k.PublicKey}.sign(t, claims(now, nil))
		}(), ErrInvalidToken, "algorithm not accepted"},
		{"garbage", "a.b.c", ErrInvalidToken, "malformed"},
		{"opaque token", "tg_abcdef", ErrInvalidToken, "not a JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.Authenticate(bearer(tc.token), "github")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.desc) {
				t.Errorf("err = %v, want it to say %q", err, tc.desc)
			}
			t.Logf("%v", err)
			if strings.Contains(err.Error(), tc.token) {
				t.Error("the error holds the token")
			}
		})
	}
	// Within the clock skew, a just-expired token still passes.
	if _, err := j.Authenticate(bearer(good.sign(t, claims(now, map[string]any{"exp": now.Add(-30 * time.Second).Unix()}))), "github"); err != nil {
		t.Errorf("within skew: %v", err)
	}
	if _, err := j.Authenticate(bearer(valid), "github"); err != nil {
		t.Errorf("the valid token: %v", err)
	}
}

// TestJWTKeyRotation rotates the JWKS mid-test: a new kid is picked up at
// once (rate limits permitting), a removed kid stops working after the
// refresh, and made-up kids cannot make the proxy hammer the JWKS URL.
func TestJWTKeyRotation(t *testing.T) {
	clock := newClock()
	k1, k2, k3 := rsaKey(t, "k1"), ecKey(t, "k2"), edKey(t, "k3")
	srv := newJWKSServer(t, jwks(k1, k2))
	j := newTestJWT(t, srv.URL, clock, func(c *JWTConfig) {
		c.MinRefreshInterval = 30 * time.Second
		c.RefreshInterval = 10 * time.Minute
	})
	ok := func(k testKey) error {
		_, err := j.Authenticate(bearer(k.sign(t, claims(clock.Now(), nil))), "github")
		return err
	}
	if err := j.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ok(k1); err != nil {
		t.Fatal(err)
	}
	if err := ok(k2); err != nil {
		t.Fatal(err)
	}
	hits := srv.hits.Load()

	// Rotate: k3 in, k1 out.
	srv.set(jwks(k2, k3))
	clock.Add(31 * time.Second)
	if err := ok(k3); err != nil {
		t.Fatalf("new kid after rotation: %v", err)
	}
	if got := srv.hits.Load(); got != hits+1 {
		t.Errorf("JWKS fetched %d more times for the new kid, want 1", got-hits)
	}
	if err := ok(k1); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "unknown key") {
		t.Errorf("removed kid after refresh: err = %v, want unknown key", err)
	}
	// A flood of made-up kids within the minimum interval fetches nothing.
	hits = srv.hits.Load()
	for i := 0; i < 50; i++ {
		fake := k1
		fake.kid = "made-up-" + time.Duration(i).String()
		if err := ok(fake); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("made-up kid: err = %v", err)
		}
		clock.Add(100 * time.Millisecond)
	}
	if got := srv.hits.Load(); got != hits {
		t.Errorf("made-up kids caused %d JWKS fetches within the minimum interval, want 0", got-hits)
	}
	// After the minimum interval one more fetch is allowed.
	clock.Add(30 * time.Second)
	ok(k1)
	ok(k1)
	if got := srv.hits.Load(); got != hits+1 {
		t.Errorf("%d fetches after the interval, want 1", got-hits)
	}
	// The set is read again when it grows older than RefreshInterval, even
	// for known kids: k2 removed is seen without an unknown kid.
	srv.set(jwks(k3))
	if err := ok(k2); err != nil {
		t.Fatalf("k2 while the cached set is fresh: %v", err)
	}
	clock.Add(10 * time.Minute)
	if err := ok(k3); err != nil {
		t.Fatal(err)
	}
	if err := ok(k2); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("k2 after the periodic refresh: err = %v", err)
	}
}

func TestJWTUnavailable(t *testing.T) {
	clock := newClock()
	k := rsaKey(t, "k")
	srv := newJWKSServer(t, jwks(k))
	srv.status.Store(500)
	j := newTestJWT(t, srv.URL, clock, nil)
	_, err := j.Authenticate(bearer(k.sign(t, claims(clock.Now(), nil))), "github")
	if !errors.Is(err, ErrUnavailable) || StatusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("JWKS down, nothing cached: err = %v (status %d), want ErrUnavailable", err, StatusCode(err))
	}
	// Back up: after the minimum interval the next token reads it.
	srv.status.Store(200)
	clock.Add(31 * time.Second)
	if _, err := j.Authenticate(bearer(k.sign(t, claims(clock.Now(), nil))), "github"); err != nil {
		t.Fatal(err)
	}
	// Down again: the cached keys keep working past the refresh interval.
	srv.status.Store(500)
	clock.Add(time.Hour)
	if _, err := j.Authenticate(bearer(k.sign(t, claims(clock.Now(), nil))), "github"); err != nil {
		t.Errorf("cached keys while the JWKS is down: %v", err)
	}
	if err := j.Refresh(context.Background()); err == nil {
		t.Error("Refresh with the JWKS down: no error")
	}
	// A JWKS with only unusable keys is refused.
	srv.status.Store(200)
	srv.set([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`))
	if err := j.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "no usable signature key") {
		t.Errorf("symmetric-only JWKS: err = %v", err)
	}
}

func TestJWTFileAndClaimMapping(t *testing.T) {
	clock := newClock()
	k := edKey(t, "ed")
	path := filepath.Join(t.TempDir(), "jwks.json")
	// One odd key (symmetric) beside the good one is skipped, not fatal.
	set := `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"ed"},` + strings.TrimPrefix(string(jwks(k)), `{"keys":[`)
	if err := os.WriteFile(path, []byte(set), 0o600); err != nil {
		t.Fatal(err)
	}
	j := newTestJWT(t, path, clock, func(c *JWTConfig) {
		c.Algorithms = []string{"EdDSA"}
		c.SubjectClaim = "email"
		c.GroupsClaim = "roles"
		c.ServersClaim = "mcp_servers"
	})
	for _, tc := range []struct {
		name    string
		changes map[string]any
		server  string
		groups  []string
		want    error
	}{
		{"string list", map[string]any{"roles": "admin, ops dev", "mcp_servers": "github jira"}, "jira", []string{"admin", "ops", "dev"}, nil},
		{"array", map[string]any{"roles": []string{"a"}, "mcp_servers": []string{"github"}}, "github", []string{"a"}, nil},
		{"all servers", map[string]any{"mcp_servers": "*"}, "x", nil, nil},
		{"server not listed", map[string]any{"mcp_servers": []string{"github"}}, "jira", nil, ErrNotGranted},
		{"no servers claim", nil, "github", nil, ErrNotGranted},
		{"servers claim not a list", map[string]any{"mcp_servers": 3}, "github", nil, ErrInvalidToken},
	} {
		id, err := j.Authenticate(bearer(k.sign(t, claims(clock.Now(), tc.changes))), tc.server)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && (id.Subject != "alice@example.com" || !reflect.DeepEqual(id.Groups, tc.groups)) {
			t.Errorf("%s: identity %+v", tc.name, id)
		}
	}
}

func TestJWTConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  JWTConfig
		want string
	}{
		{"none", JWTConfig{JWKS: "k.json", Issuer: "i", Audience: []string{"a"}, Algorithms: []string{"none"}}, `"none" is never accepted`},
		{"HMAC", JWTConfig{JWKS: "k.json", Issuer: "i", Audience: []string{"a"}, Algorithms: []string{"RS256", "HS256"}}, "HMAC"},
		{"unknown alg", JWTConfig{JWKS: "k.json", Issuer: "i", Audience: []string{"a"}, Algorithms: []string{"RSA-OAEP"}}, "unknown algorithm"},
		{"no issuer", JWTConfig{JWKS: "k.json", Audience: []string{"a"}}, "--jwt-issuer"},
		{"no audience", JWTConfig{JWKS: "k.json", Issuer: "i"}, "--jwt-audience"},
		{"no JWKS", JWTConfig{Issuer: "i", Audience: []string{"a"}}, "--jwks"},
		{"plain http", JWTConfig{JWKS: "http://idp.example.com/jwks", Issuer: "i", Audience: []string{"a"}}, "use https"},
		{"negative skew", JWTConfig{JWKS: "k.json", Issuer: "i", Audience: []string{"a"}, ClockSkew: -time.Second}, "negative"},
	} {
		if _, err := NewJWT(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewJWT(JWTConfig{JWKS: "http://127.0.0.1:1/jwks", Issuer: "i", Audience: []string{"a"}}); err != nil {
		t.Errorf("http on loopback: %v", err)
	}
}
