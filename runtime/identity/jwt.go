package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/toolgate/toolgate/bundles"
)

// DefaultAlgorithms are the signature algorithms accepted when
// JWTConfig.Algorithms is empty. Do not modify it.
var DefaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

const (
	defaultClockSkew          = time.Minute
	defaultRefreshInterval    = 10 * time.Minute
	defaultMinRefreshInterval = 30 * time.Second
	// maxJWKSSize is the largest JWKS document read, in bytes.
	maxJWKSSize = 1 << 20
	// maxJWKSKeys is the most keys a JWKS may hold.
	maxJWKSKeys = 100
	// maxKeyTries bounds the keys tried for a token without a kid.
	maxKeyTries = 10
)

// asymmetric are the algorithms a JWKS may verify. HMAC (HS256, …) is not
// among them: its key is a shared secret, and a verifier that accepted it
// could be fooled into using a public key as the secret. "none" is never
// accepted.
var asymmetric = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// JWTConfig configures [NewJWT]: the proxy flags --jwks, --jwt-issuer and
// --jwt-audience, and claim names. JWKS, Issuer and Audience are required;
// every other zero value means the default it names.
type JWTConfig struct {
	// JWKS is where the verification keys are: an https:// URL (http:// only
	// for a loopback host), or a file path. It is read when first needed,
	// again every RefreshInterval, and when a token names a kid it lacks
	// (at most once per MinRefreshInterval).
	JWKS string
	// Issuer must equal the token's iss exactly.
	Issuer string
	// Audience lists accepted audiences: the token's aud must hold one.
	Audience []string
	// Algorithms lists the accepted signature algorithms; empty means
	// DefaultAlgorithms. Allowed: RS256/384/512, PS256/384/512,
	// ES256/384/512, EdDSA; never "none" or HMAC.
	Algorithms []string
	// ClockSkew is the leeway for exp, nbf and iat; zero means 1m. A
	// negative value is an error.
	ClockSkew time.Duration
	// SubjectClaim names the claim giving identity.subject (a non-empty
	// string); empty means "sub".
	SubjectClaim string
	// GroupsClaim names the claim giving identity.groups: a list of
	// strings, or one string of names separated by spaces or commas; a token
	// without it has no groups. Empty means "groups".
	GroupsClaim string
	// ServersClaim names the claim listing the servers the token may reach
	// (same forms as groups; "*" means all); a token without it reaches
	// none. Empty means the token may reach every server.
	ServersClaim string
	// RefreshInterval is how old the JWKS may grow before it is read again
	// (on the next token); zero means 10m.
	RefreshInterval time.Duration
	// MinRefreshInterval is the least time between two reads of the JWKS,
	// whatever triggers them (an unknown kid, a failed read): it keeps a
	// flood of tokens with made-up kids from hammering the JWKS URL. Zero
	// means 30s.
	MinRefreshInterval time.Duration
}

// JWT authenticates bearer tokens that are JWTs (compact JWS) signed by an
// OIDC provider, verified with go-jose against the provider's JWKS. Checks:
// the algorithm is allowed (header alg, and the key's alg and type), the
// signature verifies with a JWKS key of the header's kid (symmetric keys in
// the JWKS are ignored; a key embedded in the token never used), iss equals
// the issuer, aud holds an audience, exp is present and not past, nbf and
// iat not in the future (each with the clock skew), and the subject claim
// is a non-empty string. identity.claims holds every claim of the token.
//
// JWT is safe for concurrent use. There is nothing to close.
type JWT struct {
	cfg  JWTConfig
	algs []jose.SignatureAlgorithm
	s    settings
	read func(context.Context) ([]byte, error)

	keys atomic.Pointer[keySet]

	fetch   sync.Mutex // serialises JWKS reads; guards lastTry
	lastTry time.Time  // when the JWKS was last read, successfully or not
}

// keySet is one JWKS as read.
type keySet struct {
	keys    []jose.JSONWebKey
	fetched time.Time
}

// NewJWT checks cfg and returns a JWT. It does not read the JWKS yet: the
// first token does, or call [JWT.Refresh] to find a problem at start-up.
// Options: WithClock, WithLogger, WithHTTPClient.
func NewJWT(cfg JWTConfig, opts ...Option) (*JWT, error) {
	var errs []error
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms
	}
	var algs []jose.SignatureAlgorithm
	for _, a := range cfg.Algorithms {
		switch {
		case asymmetric[a]:
			algs = append(algs, jose.SignatureAlgorithm(a))
		case strings.EqualFold(a, "none"):
			errs = append(errs, errors.New(`jwt: algorithm "none" is never accepted`))
		case strings.HasPrefix(strings.ToUpper(a), "HS"):
			errs = append(errs, fmt.Errorf("jwt: algorithm %q (HMAC) cannot be verified with a JWKS's public keys", a))
		default:
			errs = append(errs, fmt.Errorf("jwt: unknown algorithm %q; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA", a))
		}
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("jwt: set the issuer (--jwt-issuer): tokens from any issuer would be accepted"))
	}
	if len(cfg.Audience) == 0 || slices.Contains(cfg.Audience, "") {
		errs = append(errs, errors.New("jwt: set the audience (--jwt-audience): tokens minted for other services would be accepted"))
	}
	if cfg.ClockSkew < 0 || cfg.RefreshInterval < 0 || cfg.MinRefreshInterval < 0 {
		errs = append(errs, errors.New("jwt: clock skew and refresh intervals cannot be negative"))
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = defaultClockSkew
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = defaultRefreshInterval
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = defaultMinRefreshInterval
	}
	if cfg.SubjectClaim == "" {
		cfg.SubjectClaim = "sub"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	j := &JWT{cfg: cfg, algs: algs, s: newSettings(opts)}
	read, err := j.reader(cfg.JWKS)
	if err != nil {
		errs = append(errs, err)
	}
	j.read = read
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return j, nil
}

// reader returns the function that reads the JWKS document at src.
func (j *JWT) reader(src string) (func(context.Context) ([]byte, error), error) {
	if src == "" {
		return nil, errors.New("jwt: set the JWKS (--jwks FILE|URL)")
	}
	if !strings.HasPrefix(src, "https://") && !strings.HasPrefix(src, "http://") {
		return func(context.Context) ([]byte, error) {
			f, err := os.Open(src)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			return readAtMost(f, maxJWKSSize)
		}, nil
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("jwt: JWKS URL %q is not a URL", src)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("jwt: JWKS URL %q: use https (plain http is allowed only on loopback)", src)
	}
	client := j.s.client
	if client == nil {
		client = &http.Client{
			Timeout: 10 * time.Second,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 5 {
					return errors.New("too many redirects")
				}
				if req.URL.Scheme != "https" && !isLoopback(req.URL.Hostname()) {
					return errors.New("redirected away from https")
				}
				return nil
			},
		}
	}
	return func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/jwk-set+json, application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
		}
		return readAtMost(resp.Body, maxJWKSSize)
	}, nil
}

func readAtMost(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Refresh reads the JWKS now, whatever the refresh intervals, and makes it
// the key set in force; on error the keys in force stay. The proxy may call
// it at start-up and on SIGHUP.
func (j *JWT) Refresh(ctx context.Context) error {
	j.fetch.Lock()
	defer j.fetch.Unlock()
	return j.refreshLocked(ctx)
}

// refreshLocked reads the JWKS; j.fetch is held.
func (j *JWT) refreshLocked(ctx context.Context) error {
	now := j.s.now()
	j.lastTry = now
	// One read serves every waiting caller: the caller that happens to
	// trigger it going away must not cut it short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	raw, err := j.read(ctx)
	if err != nil {
		err = fmt.Errorf("reading JWKS %s: %w", j.cfg.JWKS, err)
		j.s.log.Error("JWKS not read; the keys in force stay", "jwks", j.cfg.JWKS, "err", err)
		return err
	}
	keys, skipped, err := parseJWKS(raw)
	if err != nil {
		err = fmt.Errorf("JWKS %s: %w", j.cfg.JWKS, err)
		j.s.log.Error("JWKS refused; the keys in force stay", "jwks", j.cfg.JWKS, "err", err)
		return err
	}
	for _, s := range skipped {
		j.s.log.Warn("JWKS key skipped", "jwks", j.cfg.JWKS, "reason", s)
	}
	j.keys.Store(&keySet{keys: keys, fetched: now})
	j.s.log.Debug("JWKS read", "jwks", j.cfg.JWKS, "keys", len(keys))
	return nil
}

// parseJWKS reads a JWK Set, keeping the public signature keys go-jose can
// use; a key it cannot use (symmetric, for encryption, of an unknown type)
// is skipped with a reason, so that one odd key does not lose the others.
func parseJWKS(raw []byte) ([]jose.JSONWebKey, []string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, nil, fmt.Errorf("%d keys; at most %d are read", len(doc.Keys), maxJWKSKeys)
	}
	var keys []jose.JSONWebKey
	var skipped []string
	for i, rk := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rk); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue // an encryption key
		}
		if _, sym := k.Key.([]byte); sym {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): symmetric keys are never used", i, k.KeyID))
			continue
		}
		pub := k.Public()
		if !pub.Valid() || !pub.IsPublic() {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): not a usable public key", i, k.KeyID))
			continue
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, skipped, errors.New("no usable signature key")
	}
	return keys, skipped, nil
}

// keySetFor returns the key set to verify with, reading the JWKS first when
// none is loaded (waiting) or when it is older than RefreshInterval (if no
// other read is under way; the old set serves meanwhile). Reads are spaced
// at least MinRefreshInterval apart.
func (j *JWT) keySetFor(ctx context.Context) *keySet {
	set := j.keys.Load()
	now := j.s.now()
	if set != nil && now.Sub(set.fetched) < j.cfg.RefreshInterval {
		return set
	}
	if set == nil {
		j.fetch.Lock()
	} else if !j.fetch.TryLock() {
		return set
	}
	defer j.fetch.Unlock()
	if cur := j.keys.Load(); cur != set {
		return cur // read by another caller meanwhile
	}
	if j.lastTry.IsZero() || now.Sub(j.lastTry) >= j.cfg.MinRefreshInterval {
		j.refreshLocked(ctx)
	}
	return j.keys.Load()
}

// refreshForKid reads the JWKS again because a token names kid, which set
// lacks, unless a read happened within MinRefreshInterval. It returns the
// key set then in force.
func (j *JWT) refreshForKid(ctx context.Context, set *keySet, kid string) *keySet {
	j.fetch.Lock()
	defer j.fetch.Unlock()
	if cur := j.keys.Load(); cur != set {
		return cur // read by another caller meanwhile: try that one
	}
	now := j.s.now()
	if !j.lastTry.IsZero() && now.Sub(j.lastTry) < j.cfg.MinRefreshInterval {
		return set
	}
	j.s.log.Info("token names a key the JWKS lacks; reading it again", "jwks", j.cfg.JWKS, "kid", kid)
	j.refreshLocked(ctx)
	return j.keys.Load()
}

// Authenticate implements [Authenticator] with the request's bearer token
// verified as a JWT: the identity its claims give, if it may reach server.
func (j *JWT) Authenticate(r *http.Request, server string) (bundles.Identity, error) {
	token, err := ParseBearer(r.Header)
	if err != nil {
		return bundles.Identity{}, err
	}
	return j.Verify(r.Context(), token, server)
}

// Verify checks token as [JWT.Authenticate] does, without a request.
func (j *JWT) Verify(ctx context.Context, token, server string) (bundles.Identity, error) {
	if strings.Count(token, ".") != 2 {
		return bundles.Identity{}, unrecognised("not a JWT")
	}
	tok, err := jwt.ParseSigned(token, j.algs)
	if err != nil {
		var algErr *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &algErr) {
			return bundles.Identity{}, failWith(ErrInvalidToken, "signature algorithm not accepted", err)
		}
		return bundles.Identity{}, failWith(ErrInvalidToken, "malformed JWT", err)
	}
	if len(tok.Headers) != 1 {
		return bundles.Identity{}, fail(ErrInvalidToken, "malformed JWT")
	}
	hdr := tok.Headers[0]
	set := j.keySetFor(ctx)
	if set == nil {
		return bundles.Identity{}, fail(ErrUnavailable, "the key set could not be read")
	}
	candidates := j.candidates(set, hdr)
	if len(candidates) == 0 && hdr.KeyID != "" {
		set = j.refreshForKid(ctx, set, hdr.KeyID)
		candidates = j.candidates(set, hdr)
	}
	if len(candidates) == 0 {
		return bundles.Identity{}, fail(ErrInvalidToken, "signed with an unknown key")
	}
	var payload []byte
	for _, k := range candidates {
		var raw json.RawMessage
		if err = tok.Claims(k.Key, &raw); err == nil {
			payload = raw
			break
		}
	}
	if payload == nil {
		return bundles.Identity{}, failWith(ErrInvalidToken, "bad signature", err)
	}
	return j.identity(payload, server)
}

// candidates returns the keys of set that may verify a token with header h:
// those of its kid (every key when it has none, up to maxKeyTries) whose
// type fits the alg, and whose own alg, when set, is the same.
func (j *JWT) candidates(set *keySet, h jose.Header) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range set.keys {
		if h.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		if !keyFits(k.Key, h.Algorithm) {
			continue
		}
		out = append(out, k)
		if len(out) == maxKeyTries {
			break
		}
	}
	return out
}

// keyFits reports whether a public key's type (and curve) suits alg.
func keyFits(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// identity checks the verified claims and maps them to an identity.
func (j *JWT) identity(payload []byte, server string) (bundles.Identity, error) {
	var std jwt.Claims
	if err := json.Unmarshal(payload, &std); err != nil {
		return bundles.Identity{}, failWith(ErrInvalidToken, "malformed claims", err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return bundles.Identity{}, failWith(ErrInvalidToken, "malformed claims", err)
	}
	if std.Expiry == nil {
		return bundles.Identity{}, fail(ErrInvalidToken, "the token has no exp")
	}
	want := jwt.Expected{Issuer: j.cfg.Issuer, AnyAudience: j.cfg.Audience, Time: j.s.now()}
	switch err := std.ValidateWithLeeway(want, j.cfg.ClockSkew); {
	case err == nil:
	case errors.Is(err, jwt.ErrExpired):
		return bundles.Identity{}, fail(ErrExpired, "the token has expired")
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return bundles.Identity{}, fail(ErrInvalidToken, "wrong issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return bundles.Identity{}, fail(ErrInvalidToken, "wrong audience")
	case errors.Is(err, jwt.ErrNotValidYet):
		return bundles.Identity{}, fail(ErrInvalidToken, "the token is not valid yet")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return bundles.Identity{}, fail(ErrInvalidToken, "the token is issued in the future")
	default:
		return bundles.Identity{}, failWith(ErrInvalidToken, "claims not accepted", err)
	}
	subject, _ := all[j.cfg.SubjectClaim].(string)
	if subject == "" {
		return bundles.Identity{}, fail(ErrInvalidToken, fmt.Sprintf("no %s claim (a non-empty string) to name the caller", j.cfg.SubjectClaim))
	}
	groups, ok := nameList(all[j.cfg.GroupsClaim])
	if !ok {
		return bundles.Identity{}, fail(ErrInvalidToken, fmt.Sprintf("the %s claim is neither a list of strings nor a string", j.cfg.GroupsClaim))
	}
	if j.cfg.ServersClaim != "" {
		servers, ok := nameList(all[j.cfg.ServersClaim])
		if !ok {
			return bundles.Identity{}, fail(ErrInvalidToken, fmt.Sprintf("the %s claim is neither a list of strings nor a string", j.cfg.ServersClaim))
		}
		if !(&Grant{Servers: servers}).Allows(server) {
			return bundles.Identity{}, fail(ErrNotGranted, fmt.Sprintf("this token may not reach server %q", server))
		}
	}
	claims, err := json.Marshal(all)
	if err != nil {
		return bundles.Identity{}, failWith(ErrInvalidToken, "malformed claims", err)
	}
	return bundles.Identity{Subject: subject, Groups: groups, Claims: claims}, nil
}

// nameList reads a claim holding names: a list of strings, or one string
// of names separated by spaces or commas; absent (nil) is no names.
func nameList(v any) ([]string, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case string:
		return strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }), true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			if s != "" {
				out = append(out, s)
			}
		}
		return out, true
	}
	return nil, false
}
