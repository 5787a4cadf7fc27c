package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/toolgate/toolgate/bundles"
)

// Authenticator establishes the caller of an HTTP request to the MCP
// endpoint of server (the proxy's --server name). It reads the request's
// headers only, never its body. An error wraps one of ErrNoCredential,
// ErrInvalidToken, ErrExpired, ErrNotGranted or ErrUnavailable; on error the
// request must not be forwarded. Implementations are safe for concurrent
// use.
type Authenticator interface {
	Authenticate(r *http.Request, server string) (bundles.Identity, error)
}

var (
	_ Authenticator = (*Grants)(nil)
	_ Authenticator = (*JWT)(nil)
	_ Authenticator = chain(nil)
)

// MaxTokenLength is the longest bearer token accepted, in bytes; a longer
// one is ErrInvalidToken. JWTs with many claims run to a few KiB.
const MaxTokenLength = 16 << 10

// authError is an Authenticator's error: a kind (one of the sentinel
// errors), a description safe to send to the client, and the cause, for
// logs.
type authError struct {
	kind  error
	desc  string
	cause error
	// unrecognised marks an ErrInvalidToken from an authenticator that does
	// not know this kind of token at all (an unknown grant hash, a token that
	// is not a JWS), so that [Chain] prefers another authenticator's word.
	unrecognised bool
}

func (e *authError) Error() string {
	s := e.kind.Error()
	if e.desc != "" {
		s += ": " + e.desc
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *authError) Is(target error) bool { return target == e.kind }
func (e *authError) Unwrap() error        { return e.cause }

func fail(kind error, desc string) error { return &authError{kind: kind, desc: desc} }

func failWith(kind error, desc string, cause error) error {
	return &authError{kind: kind, desc: desc, cause: cause}
}

func unrecognised(desc string) error {
	return &authError{kind: ErrInvalidToken, desc: desc, unrecognised: true}
}

// ParseBearer returns the bearer token of h's Authorization header
// (RFC 6750 §2.1: "Bearer" in any case, then the token68). No header, or
// one of another scheme (Basic, …), is ErrNoCredential; an empty, malformed
// or over-long token, or several Authorization headers, is ErrInvalidToken.
// Tokens in the query string or the body are not read.
func ParseBearer(h http.Header) (string, error) {
	vals := h.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", fail(ErrNoCredential, "send Authorization: Bearer <token>")
	case 1:
	default:
		return "", fail(ErrInvalidToken, "more than one Authorization header")
	}
	v := strings.Trim(vals[0], " \t")
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fail(ErrNoCredential, "the Authorization scheme is not Bearer; send Authorization: Bearer <token>")
	}
	token := strings.TrimLeft(rest, " ")
	switch {
	case token == "":
		return "", fail(ErrInvalidToken, "empty bearer token")
	case len(token) > MaxTokenLength:
		return "", fail(ErrInvalidToken, fmt.Sprintf("bearer token longer than %d bytes", MaxTokenLength))
	case !isToken68(token):
		return "", fail(ErrInvalidToken, "malformed bearer token")
	}
	return token, nil
}

// isToken68 reports whether s is an RFC 7235 token68: letters, digits,
// "-._~+/", then any number of "=".
func isToken68(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0 {
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// Chain returns an Authenticator that tries each of auths in order (nil
// entries are skipped; with none, every request is ErrInvalidToken or
// ErrNoCredential). The first success wins. A definite answer —
// ErrNoCredential, ErrExpired, ErrNotGranted — ends the chain; on
// ErrInvalidToken or ErrUnavailable the next one is tried. When all fail,
// the error returned is, in this order of preference: an ErrInvalidToken
// from an authenticator that recognised the token (a JWT with a bad
// signature), an ErrUnavailable, then a generic "unknown token".
func Chain(auths ...Authenticator) Authenticator {
	var c chain
	for _, a := range auths {
		if a != nil {
			c = append(c, a)
		}
	}
	return c
}

type chain []Authenticator

func (c chain) Authenticate(r *http.Request, server string) (bundles.Identity, error) {
	if _, err := ParseBearer(r.Header); err != nil {
		return bundles.Identity{}, err
	}
	var recognised, unavailable error
	for _, a := range c {
		id, err := a.Authenticate(r, server)
		if err == nil {
			return id, nil
		}
		var ae *authError
		switch {
		case errors.Is(err, ErrUnavailable):
			if unavailable == nil {
				unavailable = err
			}
		case errors.Is(err, ErrInvalidToken):
			if recognised == nil && !(errors.As(err, &ae) && ae.unrecognised) {
				recognised = err
			}
		default:
			return bundles.Identity{}, err
		}
	}
	switch {
	case recognised != nil:
		return bundles.Identity{}, recognised
	case unavailable != nil:
		return bundles.Identity{}, unavailable
	}
	return bundles.Identity{}, fail(ErrInvalidToken, "unknown or revoked token")
}

// StatusCode returns the HTTP status for an Authenticator's error: 401 for
// every refusal — no credential, a bad or expired one, and one not granted
// this server (the proxy's contract; its challenge says
// error="insufficient_scope") — and 503 for ErrUnavailable.
func StatusCode(err error) int {
	switch {
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusUnauthorized
}

// WriteUnauthorized answers a request an Authenticator refused with err:
// the status of [StatusCode], a WWW-Authenticate challenge (RFC 6750 §3:
// `Bearer realm="REALM"`, plus error="invalid_token" or
// error="insufficient_scope" and an error_description, except for
// ErrNoCredential, which carries no error code), Cache-Control: no-store,
// and a small JSON body {"error": …, "error_description": …}. realm ""
// means "toolgate". ErrUnavailable gets 503 with Retry-After and no
// challenge. Nothing of the token is ever written: descriptions are this
// package's own fixed texts.
func WriteUnauthorized(w http.ResponseWriter, err error, realm string) {
	if realm == "" {
		realm = "toolgate"
	}
	code, desc := "invalid_token", "the token is not valid"
	var ae *authError
	if errors.As(err, &ae) && ae.desc != "" {
		desc = ae.desc
	}
	challenge := `Bearer realm="` + quotable(realm) + `"`
	status := StatusCode(err)
	switch {
	case errors.Is(err, ErrNoCredential):
		code, desc = "unauthorized", "this endpoint needs Authorization: Bearer <token>"
	case errors.Is(err, ErrNotGranted):
		code = "insufficient_scope"
	case errors.Is(err, ErrExpired):
		desc = "the token has expired"
	case errors.Is(err, ErrUnavailable):
		code, desc, challenge = "temporarily_unavailable", "credentials cannot be checked now; retry shortly", ""
	}
	h := w.Header()
	if challenge != "" {
		if code != "unauthorized" {
			challenge += `, error="` + code + `", error_description="` + quotable(desc) + `"`
		}
		h.Set("WWW-Authenticate", challenge)
	}
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "30")
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, desc})
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// quotable makes s fit in an RFC 6750 quoted string: printable ASCII
// without '"' or '\'; anything else becomes '?', quotes become "'".
func quotable(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c == '"':
			b[i] = '\''
		case c == '\\' || c < 0x20 || c > 0x7e:
			b[i] = '?'
		}
	}
	return string(b)
}

// StripAuthorization removes the client's credentials from h before a
// request is forwarded: every Authorization and Proxy-Authorization header,
// whatever the case of its key (a map filled by hand need not be
// canonical).
func StripAuthorization(h http.Header) {
	for k := range h {
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Proxy-Authorization") {
			delete(h, k)
		}
	}
}
