package proxy

import (
	"context"
	"net/http"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/identity"
)

// identityKey is the request-context key of the caller's identity.
type identityKey struct{}

// Authenticated wraps next so that every request must carry a credential
// auth accepts for server: a refused request is answered 401 (403 when the
// credential is valid but not granted this server, 503 when the identity
// provider cannot be reached) with a WWW-Authenticate header, is reported to
// refused (for the audit log) and never reaches next; an accepted one
// reaches next with its identity in the request context ([IdentityOf]).
// The client's Authorization header is removed either way.
func Authenticated(next http.Handler, auth identity.Authenticator, server string, refused func(r *http.Request, err error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := auth.Authenticate(r, server)
		authz := r.Header.Get("Authorization")
		identity.StripAuthorization(r.Header)
		if err != nil {
			if refused != nil {
				refused(r, err)
			}
			identity.WriteUnauthorized(w, err, "toolgate")
			return
		}
		ctx := context.WithValue(r.Context(), identityKey{}, id)
		// A call held for approval checks the credential again before it
		// runs: a token revoked (or expired) while it waited stops it.
		ctx = context.WithValue(ctx, revalidateKey{}, func() error {
			_, err := auth.Authenticate(&http.Request{Header: http.Header{"Authorization": {authz}}}, server)
			return err
		})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// revalidateKey is the context key of the function that checks the
// caller's credential again.
type revalidateKey struct{}

func revalidateFrom(ctx context.Context) func() error {
	f, _ := ctx.Value(revalidateKey{}).(func() error)
	return f
}

// IdentityOf returns the identity [Authenticated] established for r, or the
// empty identity.
func IdentityOf(r *http.Request) bundles.Identity {
	id, _ := r.Context().Value(identityKey{}).(bundles.Identity)
	return id
}
