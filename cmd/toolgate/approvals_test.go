package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/audit"
)

const approvalTestToken = "cli-test-token-0123456789abcdef"

// approvalCLI runs toolgate with args and returns stdout and the exit
// status main would give.
func approvalCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	var ue usageError
	var pe problemError
	switch {
	case err == nil:
		return out.String(), "", 0
	case errors.As(err, &pe):
		return out.String(), err.Error(), 1
	case errors.As(err, &ue):
		return out.String(), err.Error(), 2
	}
	return out.String(), err.Error(), 1
}

func TestApprovalCLI(t *testing.T) {
	ctx := context.Background()
	store, err := approvals.OpenDisk(t.TempDir(), approvals.WithSweepEvery(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tokens, err := approvals.ParseTokens([]byte(approvalTestToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(approvals.Handler(store, tokens))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte(approvalTestToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	binding := func(args string) approvals.Binding {
		return approvals.Binding{
			Identity: approvals.Identity{Subject: "alice", Groups: []string{"eng"}},
			Server:   "github", Tool: "delete_repo", ArgsSHA256: audit.ArgsSHA256([]byte(args)),
			Bundle: "sha256:" + strings.Repeat("cd", 32),
		}
	}
	r1, _, err := store.Request(ctx, binding(`{"repo":"a"}`), "policies/github.yaml#delete_repo/ask", approvals.Approvers{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r2, _, err := store.Request(ctx, binding(`{"repo":"b"}`), "policies/github.yaml#delete_repo/ask", approvals.Approvers{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	api := []string{"--admin", srv.URL, "--token-file", tokenFile}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return approvalCLI(t, append(append([]string{"approvals"}, args...), api...)...)
	}

	out, errs, code := run("list")
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, r1.ID) || !strings.Contains(out, r2.ID) || !strings.Contains(out, "pending") {
		t.Fatalf("list: %d %s\n%s", code, errs, out)
	}
	out, _, code = run("list", "--json", "--status", "pending")
	var lb approvals.ListBody
	if code != 0 || json.Unmarshal([]byte(out), &lb) != nil || len(lb.Approvals) != 2 || lb.Approvals[0].Status != approvals.Pending {
		t.Fatalf("list --json: %d\n%s", code, out)
	}
	out, _, code = run("show", r1.ID)
	for _, want := range []string{"id:", r1.ID, "subject:", "alice", "delete_repo", "sha256:" + r1.ArgsSHA256, "anyone with an admin token", "expires:"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("show lacks %q: %d\n%s", want, code, out)
		}
	}

	// The requester cannot approve their own call.
	_, errs, code = run("approve", r1.ID, "--as", "alice")
	if code != 1 || !strings.Contains(errs, "cannot decide their own") {
		t.Fatalf("approve as the requester: %d %s", code, errs)
	}
	out, errs, code = run("approve", r1.ID, "--as", "bob", "--reason", "ticket 7")
	if code != 0 || !strings.HasPrefix(out, "approved "+r1.ID+" as bob") {
		t.Fatalf("approve: %d %s\n%s", code, errs, out)
	}
	if got, _ := store.Get(ctx, r1.ID); got.Status != approvals.Approved || got.DecidedBy != "bob" || got.Reason != "ticket 7" {
		t.Fatalf("after approve: %+v", got)
	}
	out, _, code = run("deny", r2.ID, "--json")
	var denied approvals.Request
	if code != 0 || json.Unmarshal([]byte(out), &denied) != nil || denied.Status != approvals.Denied || denied.DecidedBy != approvals.DefaultTokenName {
		t.Fatalf("deny --json: %d\n%s", code, out)
	}
	_, errs, code = run("deny", r2.ID)
	if code != 1 || !strings.Contains(errs, "no longer pending") {
		t.Fatalf("deny twice: %d %s", code, errs)
	}
	_, errs, code = run("show", "ap_NOSUCHREQUEST")
	if code != 1 || !strings.Contains(errs, "approvals list") {
		t.Fatalf("show unknown: %d %s", code, errs)
	}
	out, _, code = run("list", "--status", "used")
	if code != 0 || strings.TrimSpace(out) != "no used approval requests" {
		t.Fatalf("empty list: %d %q", code, out)
	}

	// No token: the API refuses, and the message says what to pass.
	_, errs, code = approvalCLI(t, "approvals", "list", "--admin", srv.URL)
	if code != 1 || !strings.Contains(errs, "--token-file") {
		t.Fatalf("without a token: %d %s", code, errs)
	}
	wrong := filepath.Join(t.TempDir(), "wrong-token")
	os.WriteFile(wrong, []byte("not-the-right-token-0123456789\n"), 0o600)
	_, errs, code = approvalCLI(t, "approvals", "list", "--admin", srv.URL, "--token-file", wrong)
	if code != 1 || !strings.Contains(errs, "did not accept the token in "+wrong) {
		t.Fatalf("with a wrong token: %d %s", code, errs)
	}
	// Nobody listening.
	_, errs, code = approvalCLI(t, "approvals", "list", "--admin", "127.0.0.1:1", "--token-file", tokenFile)
	if code != 1 || !strings.Contains(errs, "admin listener") {
		t.Fatalf("no proxy: %d %s", code, errs)
	}

	// Bad usage: exit 2.
	for _, args := range [][]string{
		{"approvals", "show"},
		{"approvals", "approve", "a", "b"},
		{"approvals", "bogus"},
		{"approvals", "list", "--status", "maybe"},
		{"approvals", "list", "--nope"},
		{"approvals", "list", "--admin", "ftp://x"},
		{"approvals", "list", "--admin", srv.URL, "--token-file", filepath.Join(t.TempDir(), "missing")},
	} {
		if _, errs, code := approvalCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d (%s), want 2", args, code, errs)
		}
	}
	if out, _, code := approvalCLI(t, "approvals", "--help"); code != 0 || !strings.Contains(out, "approve") {
		t.Errorf("approvals --help: %d\n%s", code, out)
	}
}

// TestApprovalCLIDefaultAdmin: without --admin the CLI calls the proxy's
// default admin address.
func TestApprovalCLIDefaultAdmin(t *testing.T) {
	af := approvalFlags{admin: "http://" + defaultAdminAddr}
	c, err := af.client()
	if err != nil || c.BaseURL != "http://127.0.0.1:9091" {
		t.Fatalf("client = %+v, %v", c, err)
	}
	af.admin = "localhost:9999/"
	if c, err := af.client(); err != nil || c.BaseURL != "http://localhost:9999" {
		t.Fatalf("HOST:PORT = %+v, %v", c, err)
	}
}
