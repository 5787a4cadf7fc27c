package approvals_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
)

const (
	sharedToken = "shared-admin-token-0123456789"
	carolToken  = "carol-token-0123456789abcdef"
)

// adminAPI serves the approval API over a Disk store with a shared token
// and one named token for carol of security.
func adminAPI(t *testing.T) (*httptest.Server, approvals.Store) {
	t.Helper()
	sum := sha256.Sum256([]byte(carolToken))
	tokens, err := approvals.ParseTokens([]byte("# admin tokens\n\n" + sharedToken + "\nsha256:" + hex.EncodeToString(sum[:]) + " carol security,eng\n"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := approvals.OpenDisk(t.TempDir(), approvals.WithSweepEvery(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	mux := http.NewServeMux()
	h := approvals.Handler(d, tokens)
	mux.Handle("/approvals", h)
	mux.Handle("/approvals/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, d
}

func TestApprovalAPIAuth(t *testing.T) {
	srv, d := adminAPI(t)
	r := mustRequest(t, d, call("alice", "delete_repo", `{}`), approvals.Approvers{}, time.Hour)
	for name, header := range map[string]string{
		"no token":    "",
		"wrong token": "Bearer not-the-token-0123456789",
		"not bearer":  "Basic " + sharedToken,
		"hash as token": "Bearer " + func() string {
			s := sha256.Sum256([]byte(carolToken))
			return "sha256:" + hex.EncodeToString(s[:])
		}(),
	} {
		for _, req := range []*http.Request{
			httptest.NewRequest("GET", srv.URL+"/approvals", nil),
			httptest.NewRequest("GET", srv.URL+"/approvals/"+r.ID, nil),
			httptest.NewRequest("POST", srv.URL+"/approvals/"+r.ID+"/approve", strings.NewReader(`{"as":"bob"}`)),
		} {
			req.RequestURI = ""
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body approvals.ErrorBody
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || body.Code != "unauthorized" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s, %s %s: %d %+v", name, req.Method, req.URL.Path, resp.StatusCode, body)
			}
		}
	}
	if got, _ := d.Get(context.Background(), r.ID); got.Status != approvals.Pending {
		t.Fatalf("an unauthorized call changed the request: %s", got.Status)
	}
	// No tokens configured: everything is refused.
	off := httptest.NewServer(approvals.Handler(d, nil))
	defer off.Close()
	c := approvals.Client{BaseURL: off.URL, Token: sharedToken}
	if _, err := c.List(context.Background(), approvals.Filter{}); !errors.Is(err, approvals.ErrUnauthorized) || !strings.Contains(err.Error(), "--admin-token-file") {
		t.Fatalf("API without tokens: %v", err)
	}
}

func TestApprovalAPIDecide(t *testing.T) {
	ctx := context.Background()
	srv, d := adminAPI(t)
	shared := approvals.Client{BaseURL: srv.URL, Token: sharedToken}
	carol := approvals.Client{BaseURL: srv.URL + "/", Token: carolToken}

	r := mustRequest(t, d, call("alice", "delete_repo", `{}`), approvals.Approvers{}, time.Hour)
	restricted := mustRequest(t, d, call("alice", "delete_repo", `{"n":1}`), approvals.Approvers{Groups: []string{"security"}}, time.Hour)

	list, err := shared.List(ctx, approvals.Filter{Status: approvals.Pending})
	if err != nil || len(list) != 2 || list[0].Status != approvals.Pending {
		t.Fatalf("List = %v, %v", list, err)
	}
	got, err := shared.Get(ctx, r.ID)
	if err != nil || got.ID != r.ID || got.ArgsSHA256 != r.ArgsSHA256 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := shared.Get(ctx, "ap_NOSUCHREQUEST"); !errors.Is(err, approvals.ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
	// The requester cannot approve their own call, even with the token.
	if _, err := shared.Decide(ctx, r.ID, true, "alice", ""); !errors.Is(err, approvals.ErrSelfApproval) {
		t.Fatalf("self approval: %v", err)
	}
	// A shared token decides as the name given; "admin" by default, which
	// is no member of security.
	if _, err := shared.Decide(ctx, restricted.ID, true, "", ""); !errors.Is(err, approvals.ErrNotApprover) {
		t.Fatalf("admin on a security-only request: %v", err)
	}
	dec, err := shared.Decide(ctx, r.ID, true, "bob", "ticket 42")
	if err != nil || dec.Status != approvals.Approved || dec.DecidedBy != "bob" || dec.Reason != "ticket 42" {
		t.Fatalf("approve as bob = %+v, %v", dec, err)
	}
	if _, err := shared.Decide(ctx, r.ID, false, "bob", ""); !errors.Is(err, approvals.ErrNotPending) {
		t.Fatalf("deciding twice: %v", err)
	}
	// A named token decides as its name only, with its groups.
	if _, err := carol.Decide(ctx, restricted.ID, false, "mallory", ""); err == nil || !strings.Contains(err.Error(), `"carol" only`) {
		t.Fatalf("named token as another name: %v", err)
	}
	dec, err = carol.Decide(ctx, restricted.ID, false, "", "not today")
	if err != nil || dec.Status != approvals.Denied || dec.DecidedBy != "carol" {
		t.Fatalf("deny as carol = %+v, %v", dec, err)
	}

	// Bad input.
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/approvals?status=maybe", ""},
		{"GET", "/approvals?limit=-1", ""},
		{"POST", "/approvals/" + r.ID + "/approve", `{"as": 3}`},
		{"POST", "/approvals/" + r.ID + "/approve", `{"who": "bob"}`},
		{"POST", "/approvals/" + r.ID + "/approve", `{"reason": "` + strings.Repeat("x", 5000) + `"}`},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+sharedToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s %.40s: %d, want 400", tc.method, tc.path, tc.body, resp.StatusCode)
		}
	}
}

func TestApprovalTokens(t *testing.T) {
	for _, bad := range []string{
		"",
		"# only a comment\n",
		"short\n",
		"sha256:abcd\n",
		"a-long-enough-token-here name groups extra\n",
	} {
		if _, err := approvals.ParseTokens([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	_, err := approvals.ParseTokens([]byte("short\nsha256:zz\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("every bad line must be reported: %v", err)
	}

	dir := t.TempDir()
	plain := filepath.Join(dir, "token")
	os.WriteFile(plain, []byte("# the admin token\n"+sharedToken+" ops\n"), 0o600)
	if tok, err := approvals.ReadToken(plain); err != nil || tok != sharedToken {
		t.Errorf("ReadToken = %q, %v", tok, err)
	}
	if _, err := approvals.LoadTokens(plain); err != nil {
		t.Errorf("LoadTokens: %v", err)
	}
	hashed := filepath.Join(dir, "hashed")
	os.WriteFile(hashed, []byte("sha256:"+strings.Repeat("ab", 32)+"\n"), 0o600)
	if _, err := approvals.ReadToken(hashed); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("ReadToken of a hash: %v", err)
	}
}
