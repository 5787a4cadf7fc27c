// Package identity establishes who is calling the proxy: the runtime stage
// that fills a decision input's identity (policy.md §5, the identity.*
// paths) before the policy decides a call.
//
// Over Streamable HTTP a caller presents "Authorization: Bearer TOKEN". The
// token is either a grant's (a random token whose sha256 a grants file,
// kept in git, lists with the identity it stands for: [Grants]) or a JWT an
// OIDC provider signed ([JWT], verified against its JWKS). An
// [Authenticator] turns a request into a [bundles.Identity], or into one of
// the errors below; [Chain] tries several; [WriteUnauthorized] answers a
// refused request (RFC 6750). [StripAuthorization] removes the client's
// credential before a call is forwarded, and [UpstreamCredentials] adds the
// proxy's own credentials for the server (from files or the environment,
// never from a policy) to calls the policy allowed.
//
// Over stdio the local user started the process: [Local] and [FromEnv] give
// the identity from --identity/--groups or TOOLGATE_IDENTITY/TOOLGATE_GROUPS.
//
// The grants file and `toolgate grants add|revoke|list` are described on
// [ParseGrants], [AddGrant] and [RevokeGrant].
package identity

import "errors"

// Errors of an [Authenticator]: every error it returns wraps exactly one of
// these (test with [errors.Is]); [WriteUnauthorized] and [StatusCode] turn
// them into an HTTP answer. An error's text never holds the token.
var (
	// ErrNoCredential: the request has no Authorization header, or one with
	// a scheme other than Bearer. HTTP 401 without an error code (RFC 6750
	// §3.1).
	ErrNoCredential = errors.New("no bearer token")
	// ErrInvalidToken: the token is malformed, unknown, revoked, or fails
	// verification (signature, issuer, audience, not yet valid, …). HTTP 401,
	// error="invalid_token".
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired: the token (its grant's expires, or its JWT exp) has
	// passed. HTTP 401, error="invalid_token".
	ErrExpired = errors.New("token expired")
	// ErrNotGranted: the token is valid but may not reach this server.
	// HTTP 401 (the proxy's contract), error="insufficient_scope".
	ErrNotGranted = errors.New("token not granted this server")
	// ErrUnavailable: the token could not be checked now (the JWKS could not
	// be fetched and none is cached). HTTP 503: the caller may retry.
	ErrUnavailable = errors.New("credentials cannot be checked now")
)

// ErrNoSuchGrant: [RevokeGrant] found no grant with that label.
var ErrNoSuchGrant = errors.New("no such grant")

// ErrGrantExists: [AddGrant] was given a label (or token hash) that the
// grants file already holds.
var ErrGrantExists = errors.New("grant exists")
