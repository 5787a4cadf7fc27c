package identity_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/toolgate/toolgate/runtime/identity"
)

// A grants file guards an MCP endpoint: the proxy authenticates each
// request, answers a refusal with WriteUnauthorized, and strips the
// client's token before forwarding.
func ExampleGrants() {
	dir, _ := os.MkdirTemp("", "grants")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "grants.yaml")

	// What `toolgate grants add alice-laptop --subject alice --servers github` does.
	token, hash, _ := identity.NewToken()
	identity.AddGrant(path, identity.Grant{Label: "alice-laptop", TokenSHA256: hash, Subject: "alice", Servers: []string{"github"}})

	grants, err := identity.OpenGrants(path) // then go grants.Watch(ctx), and grants.Reload() on SIGHUP
	if err != nil {
		panic(err)
	}
	guard := func(w http.ResponseWriter, r *http.Request) {
		id, err := grants.Authenticate(r, "github")
		if err != nil {
			identity.WriteUnauthorized(w, err, "")
			return
		}
		identity.StripAuthorization(r.Header)
		fmt.Fprintf(w, "hello %s", id.Subject)
	}

	for _, authz := range []string{"Bearer " + token, "", "Bearer tg_not-a-grant"} {
		r := httptest.NewRequest("POST", "/mcp", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		w := httptest.NewRecorder()
		guard(w, r)
		if c := w.Header().Get("WWW-Authenticate"); c != "" {
			fmt.Println(w.Code, c)
		} else {
			fmt.Println(w.Code, w.Body)
		}
	}
	// Output:
	// 200 hello alice
	// 401 Bearer realm="toolgate"
	// 401 Bearer realm="toolgate", error="invalid_token", error_description="unknown or revoked token"
}
