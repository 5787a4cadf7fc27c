package proxy

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/test/redistest"
)

// TestApprovalsSharedThroughRedis: two proxy processes on one Redis share
// the approval queue: a call asked through one is approved through the
// other's admin API, runs once through the first, and is used up for both.
func TestApprovalsSharedThroughRedis(t *testing.T) {
	srv := redistest.Start(t)
	redisURL := "redis://" + srv.Addr() + "/0"
	a, _, _, _ := approvalProxy(t, nil, "--state", "redis", "--redis", redisURL)
	b, adminB, tokens, _ := approvalProxy(t, nil, "--state", "redis", "--redis", redisURL)

	_, err := call(t, a, "echo", map[string]any{"text": "deploy"})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != -32031 {
		t.Fatalf("through proxy A: %v, want an approval request", err)
	}
	var data struct {
		ApprovalID string `json:"approval_id"`
	}
	if err := jsonUnmarshal(werr.Data, &data); err != nil {
		t.Fatal(err)
	}
	// Asked again through B: the same request (joined, not a second one).
	if _, err := call(t, b, "echo", map[string]any{"text": "deploy"}); !errors.As(err, &werr) || !strings.Contains(string(werr.Data), data.ApprovalID) {
		t.Fatalf("through proxy B: %v, want the same approval %s", err, data.ApprovalID)
	}
	if out, err := approvalsCLI(t, adminB, tokens, "approve", data.ApprovalID); err != nil {
		t.Fatalf("approve through B's admin API: %v\n%s", err, out)
	}
	if res, err := call(t, a, "echo", map[string]any{"text": "deploy"}); err != nil || res.IsError || text(res) != "echo: deploy" {
		t.Fatalf("the approved call through A: %v %+v", err, res)
	}
	if _, err := call(t, b, "echo", map[string]any{"text": "deploy"}); !errors.As(err, &werr) || werr.Code != -32031 || strings.Contains(string(werr.Data), data.ApprovalID) {
		t.Fatalf("the same call through B after A used the approval: %v, want a new request", err)
	}
}

// TestHeldCallTokenRevoked: over HTTP in hold mode, a call waits for
// approval; its caller's token is revoked meanwhile; the approval then does
// not let the call run, and the server never sees it.
func TestHeldCallTokenRevoked(t *testing.T) {
	up := startHTTPUpstream(t)
	dir := t.TempDir()
	grants := filepath.Join(dir, "grants.yaml")
	token := grantToken(t, grants, "maria-laptop", "--subject", "maria", "--servers", "testsrv")
	tokens := filepath.Join(dir, "admin-tokens")
	if err := os.WriteFile(tokens, []byte("lee-token-0123456789abcdef lee leads\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	endpoint, _, stderr := startHTTPProxy(t, up.URL, nil, "--policy", "testdata/approvals", "--grants", grants,
		"--approval-mode", "hold", "--admin", "127.0.0.1:0", "--admin-token-file", tokens)
	admin := "http://" + adminAddr(t, stderr)
	cs, err := connectHTTP(t, endpoint, token)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var res *mcp.CallToolResult
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "deploy"}})
		done <- err
	}()
	var id string
	for deadline := time.Now().Add(20 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, _ := approvalsCLI(t, admin, tokens, "list", "--status", "pending", "--json")
		if i := strings.Index(out, `"ap_`); i >= 0 {
			id = strings.SplitN(out[i+1:], `"`, 2)[0]
		}
	}
	if id == "" {
		t.Fatal("no pending approval appeared")
	}
	if out, err := exec.Command(toolgate, "grants", "revoke", "maria-laptop", "--grants-file", grants).CombinedOutput(); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	time.Sleep(1500 * time.Millisecond) // the grants watcher sees the change
	if out, err := approvalsCLI(t, admin, tokens, "approve", id); err != nil {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	select {
	case err := <-done:
		if err == nil && !res.IsError {
			t.Fatalf("the held call ran after its token was revoked: %+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the held call never finished")
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.echos) != 0 {
		t.Fatalf("the server ran echo %q; the held call must not reach it", up.echos)
	}
}
