package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestHTTPProxyWithJWT: bearer JWTs verified against a JWKS the test serves
// with a key it generates: a good token reaches the server with its
// subject; one signed by another key, for another audience, or expired is
// refused with 401.
func TestHTTPProxyWithJWT(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(set)
	}))
	defer jwksSrv.Close()
	sign := func(k *ecdsa.PrivateKey, aud string, exp time.Time) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		claims := map[string]any{"iss": "https://idp.example", "aud": aud, "sub": "alice@example.com", "groups": []string{"eng"},
			"iat": time.Now().Add(-time.Minute).Unix(), "exp": exp.Unix()}
		tok, err := jwt.Signed(s).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	up := startHTTPUpstream(t)
	endpoint, _, _ := startHTTPProxy(t, up.URL, nil, "--jwks", jwksSrv.URL, "--jwt-issuer", "https://idp.example", "--jwt-audience", "toolgate")

	for name, tok := range map[string]string{
		"another key":      sign(stranger, "toolgate", time.Now().Add(time.Hour)),
		"another audience": sign(key, "someone-else", time.Now().Add(time.Hour)),
		"expired":          sign(key, "toolgate", time.Now().Add(-time.Hour)),
	} {
		req, _ := http.NewRequest("POST", endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: status %d, WWW-Authenticate %q", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	cs, err := connectHTTP(t, endpoint, sign(key, "toolgate", time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call(t, cs, "echo", map[string]any{"text": "jwt"}); err != nil || res.IsError || text(res) != "echo: jwt" {
		t.Fatalf("a call with a good JWT: %v %+v", err, res)
	}
}
