package identity

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func BenchmarkGrantsAuthenticate(b *testing.B) {
	path := filepath.Join(b.TempDir(), "grants.yaml")
	var token string
	var file strings.Builder
	file.WriteString("grants:\n")
	for i := 0; i < 1000; i++ {
		tok, hash, _ := NewToken()
		fmt.Fprintf(&file, "  - {label: g%d, token_sha256: %s, subject: s, servers: [github]}\n", i, hash)
		token = tok
	}
	if err := os.WriteFile(path, []byte(file.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	g, err := OpenGrants(path)
	if err != nil {
		b.Fatal(err)
	}
	r := bearer(token)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.Authenticate(r, "github"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJWTVerify(b *testing.B) {
	clock := newClock()
	for _, k := range []testKey{rsaKey(b, "rsa"), ecKey(b, "ec"), edKey(b, "ed")} {
		b.Run(string(k.alg), func(b *testing.B) {
			srv := newJWKSServer(b, jwks(k))
			j, err := NewJWT(JWTConfig{JWKS: srv.URL, Issuer: testIssuer, Audience: []string{testAudience}}, WithClock(clock.Now))
			if err != nil {
				b.Fatal(err)
			}
			token := k.sign(b, claims(clock.Now(), nil))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := j.Verify(context.Background(), token, "github"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestJWTRotationUnderLoad verifies tokens from many goroutines while the
// JWKS rotates and the clock runs (run with -race).
func TestJWTRotationUnderLoad(t *testing.T) {
	clock := newClock()
	a, c := ecKey(t, "a"), edKey(t, "c")
	srv := newJWKSServer(t, jwks(a))
	j := newTestJWT(t, srv.URL, clock, func(cfg *JWTConfig) { cfg.MinRefreshInterval = time.Second })
	tokA := a.sign(t, claims(clock.Now(), nil))
	tokC := c.sign(t, claims(clock.Now(), nil))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []error
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := j.Verify(context.Background(), tokA, "github"); err != nil {
					mu.Lock()
					bad = append(bad, err)
					mu.Unlock()
				}
				j.Verify(context.Background(), tokC, "github") // may or may not pass yet
			}
		}()
	}
	for i := 0; i < 20; i++ {
		srv.set(jwks(a, c))
		clock.Add(2 * time.Second)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d verifications of a key that never left failed, e.g. %v", len(bad), bad[0])
	}
	if _, err := j.Verify(context.Background(), tokC, "github"); err != nil {
		t.Errorf("the new key after rotation: %v", err)
	}
}
