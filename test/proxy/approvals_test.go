package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// approvalProxy starts the proxy on testdata/approvals with an admin
// listener and a token file naming "lee" in group leads; it returns the
// client session, the admin URL and the token file.
func approvalProxy(t *testing.T, progress chan<- *mcp.ProgressNotificationParams, extra ...string) (*mcp.ClientSession, string, string, string) {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "admin-tokens")
	if err := os.WriteFile(tokens, []byte("lee-token-0123456789abcdef lee leads\nmaria-token-0123456789abcd maria leads\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auditLog := filepath.Join(dir, "audit.log")
	args := append([]string{"proxy", "--policy", "testdata/approvals", "--server", "testsrv", "--identity", "maria",
		"--state-dir", filepath.Join(dir, "state"), "--admin", "127.0.0.1:0", "--admin-token-file", tokens, "--audit-log", auditLog}, extra...)
	args = append(args, "--", testserver)
	cmd := exec.Command(toolgate, args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, req *mcp.ProgressNotificationClientRequest) { progress <- req.Params }
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "approvaltest", Version: "1.0.0"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", stderr.String())
		}
	})
	return cs, "http://" + adminAddr(t, stderr), tokens, auditLog
}

// approvals runs `toolgate approvals ARGS --admin URL --token-file F`.
func approvalsCLI(t *testing.T, admin, tokenFile string, args ...string) (string, error) {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	line, _ := os.ReadFile(tokenFile)
	// The first line's token is lee's; --as-less calls decide as lee.
	if err := os.WriteFile(tok, []byte(strings.Fields(string(line))[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args = append(append([]string{"approvals"}, args...), "--admin", admin, "--token-file", tok)
	out, err := exec.Command(toolgate, args...).CombinedOutput()
	return string(out), err
}

// TestApprovalAsyncThroughProxy: a call needing approval gets JSON-RPC error
// -32031 with the approval id; a lead approves it with `toolgate approvals
// approve`; the same call retried runs once; every step is in the audit
// log.
func TestApprovalAsyncThroughProxy(t *testing.T) {
	cs, admin, tokens, auditLog := approvalProxy(t, nil)
	if res, err := call(t, cs, "echo", map[string]any{"text": "hello"}); err != nil || res.IsError {
		t.Fatalf("an ordinary call: %v %+v", err, res)
	}
	_, err := call(t, cs, "echo", map[string]any{"text": "deploy"})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != -32031 || !strings.Contains(werr.Message, "Deploys need a lead's approval.") {
		t.Fatalf("a call needing approval: %v", err)
	}
	var data struct {
		ApprovalID string `json:"approval_id"`
		ExpiresAt  string `json:"expires_at"`
		Rule       string `json:"rule"`
	}
	if err := jsonUnmarshal(werr.Data, &data); err != nil || !strings.HasPrefix(data.ApprovalID, "ap_") || data.ExpiresAt == "" || !strings.HasSuffix(data.Rule, "#echo/deploys need a lead") {
		t.Fatalf("error data %s: %v", werr.Data, err)
	}

	out, err := approvalsCLI(t, admin, tokens, "list")
	if err != nil || !strings.Contains(out, data.ApprovalID) || !strings.Contains(out, "pending") {
		t.Fatalf("approvals list: %v\n%s", err, out)
	}
	if out, err := approvalsCLI(t, admin, tokens, "approve", data.ApprovalID, "--reason", "release 42"); err != nil {
		t.Fatalf("approvals approve: %v\n%s", err, out)
	}
	res, err := call(t, cs, "echo", map[string]any{"text": "deploy"})
	if err != nil || res.IsError || text(res) != "echo: deploy" {
		t.Fatalf("the approved call: %v %+v", err, res)
	}
	if _, err := call(t, cs, "echo", map[string]any{"text": "deploy"}); !errors.As(err, &werr) || werr.Code != -32031 {
		t.Fatalf("the approval reused: %v, want a new approval request", err)
	}
	cs.Close()
	log, _ := os.ReadFile(auditLog)
	for _, want := range []string{`"decision":"require_approval"`, `"decision":"approval_requested"`, `"decision":"approval_approved"`, `"decision":"approval_used"`, "decided by lee: release 42"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	if out, err := exec.Command(toolgate, "audit", "verify", auditLog).CombinedOutput(); err != nil {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}

// TestApprovalHoldThroughProxy: in hold mode the call waits, reporting
// progress to a client that asked for it, and runs once a lead approves.
func TestApprovalHoldThroughProxy(t *testing.T) {
	progress := make(chan *mcp.ProgressNotificationParams, 16)
	cs, admin, tokens, _ := approvalProxy(t, progress, "--approval-mode", "hold")
	type result struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "deploy"}}
		params.SetProgressToken("hold-1")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := cs.CallTool(ctx, params)
		done <- result{res, err}
	}()
	// Find the pending request and approve it.
	var id string
	deadline := time.Now().Add(20 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		out, _ := approvalsCLI(t, admin, tokens, "list", "--status", "pending", "--json")
		if i := strings.Index(out, `"ap_`); i >= 0 {
			id = strings.Trim(strings.SplitN(out[i:], `"`, 3)[1], `"`)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("no pending approval appeared")
	}
	// The client waits; a progress notification comes within the interval.
	select {
	case p := <-progress:
		if p.ProgressToken != "hold-1" || !strings.Contains(p.Message, id) {
			t.Fatalf("progress: %+v", p)
		}
	case r := <-done:
		t.Fatalf("the held call returned before approval: %+v %v", r.res, r.err)
	case <-time.After(15 * time.Second):
		t.Fatal("no progress notification while the call was held")
	}
	if out, err := approvalsCLI(t, admin, tokens, "approve", id); err != nil {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	select {
	case r := <-done:
		if r.err != nil || r.res.IsError || text(r.res) != "echo: deploy" {
			t.Fatalf("the held call after approval: %v %+v", r.err, r.res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the held call did not finish after approval")
	}
	// Other calls went on while one was held (nothing blocked the relay).
	if res, err := call(t, cs, "echo", map[string]any{"text": "after"}); err != nil || text(res) != "echo: after" {
		t.Fatalf("a call after the hold: %v %+v", err, res)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestApprovalWithoutAdmin: a proxy without an admin listener (--admin
// off; or its default address taken by another proxy) has no one to
// approve a call, so a call needing approval is denied at once, saying
// why, rather than left pending where no one can decide it.
func TestApprovalWithoutAdmin(t *testing.T) {
	for _, mode := range []string{"async", "hold"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(toolgate, "proxy", "--policy", "testdata/approvals", "--server", "testsrv", "--identity", "maria",
				"--state-dir", filepath.Join(t.TempDir(), "state"), "--admin", "", "--approval-mode", mode, "--", testserver)
			stderr := &syncBuffer{}
			cmd.Stderr = stderr
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "approvaltest", Version: "1.0.0"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
			if err != nil {
				t.Fatalf("connecting: %v\n%s", err, stderr.String())
			}
			defer cs.Close()
			res, err := call(t, cs, "echo", map[string]any{"text": "deploy"})
			if err != nil || !res.IsError || !strings.Contains(text(res), "Deploys need a lead's approval.") || !strings.Contains(text(res), "No one can approve it on this proxy") {
				t.Fatalf("a call needing approval without an admin listener: %v %+v", err, res)
			}
			if !strings.Contains(stderr.String(), "calls needing approval will be denied") {
				t.Errorf("no warning at start:\n%s", stderr.String())
			}
		})
	}
}
