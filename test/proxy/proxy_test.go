// Package proxy runs the real toolgate binary as an MCP stdio proxy in front
// of a real go-sdk MCP server (testserver), driven by the go-sdk client.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var toolgate, testserver string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "toolgate-proxy")
	if err != nil {
		panic(err)
	}
	toolgate = filepath.Join(dir, "toolgate")
	testserver = filepath.Join(dir, "testserver")
	for pkg, out := range map[string]string{
		"github.com/toolgate/toolgate/cmd/toolgate":          toolgate,
		"github.com/toolgate/toolgate/test/proxy/testserver": testserver,
	} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			panic("building " + pkg + ": " + err.Error())
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// session starts toolgate proxy in front of testserver and connects the
// go-sdk client to it. progress, when set, receives progress notifications.
func session(t *testing.T, auditLog string, progress chan<- *mcp.ProgressNotificationParams, extra ...string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	args := []string{"proxy", "--policy", "testdata/policies", "--server", "testsrv", "--identity", "alice", "--groups", "eng", "--state", "memory"}
	if auditLog != "" {
		args = append(args, "--audit-log", auditLog)
	}
	args = append(args, extra...)
	args = append(args, "--", testserver)
	cmd := exec.Command(toolgate, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			progress <- req.Params
		}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "proxytest", Version: "1.0.0"}, opts)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting through the proxy: %v\nproxy stderr:\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", stderr.String())
		}
	})
	return cs
}

func call(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func TestAllowedCallReachesServer(t *testing.T) {
	progress := make(chan *mcp.ProgressNotificationParams, 1)
	cs := session(t, "", progress)
	params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}
	params.SetProgressToken("tok-1")
	res, err := cs.CallTool(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := text(res), "echo: hi"; res.IsError || got != want {
		t.Fatalf("got %q (isError %v), want %q", got, res.IsError, want)
	}
	select {
	case p := <-progress:
		if p.ProgressToken != "tok-1" || p.Message != "echoing" {
			t.Fatalf("progress: got %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server's progress notification did not come through")
	}
}

func TestDeniedCall(t *testing.T) {
	cs := session(t, "", nil)
	res, err := call(t, cs, "delete_repo", map[string]any{"text": "toolgate"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := text(res), "Deleting repositories is not allowed through this proxy."; !res.IsError || got != want {
		t.Fatalf("got %q (isError %v), want %q as an error result", got, res.IsError, want)
	}
	if got, want := res.Meta["toolgate/rule"], "testdata/policies/testsrv.yaml#delete_repo/no deleting"; got != want {
		t.Errorf("_meta rule: got %v, want %q", got, want)
	}
	if d, _ := res.Meta["toolgate/bundle"].(string); !strings.HasPrefix(d, "sha256:") {
		t.Errorf("_meta bundle: got %q, want a digest", d)
	}
	if id, _ := res.Meta["toolgate/decision_id"].(string); id == "" {
		t.Error("_meta has no decision id")
	}
}

func TestHiddenTool(t *testing.T) {
	cs := session(t, "", nil)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	got := strings.Join(names, ",")
	if strings.Contains(got, "secret_tool") || !strings.Contains(got, "echo") || !strings.Contains(got, "delete_repo") {
		t.Fatalf("tools/list: got %s, want every tool but secret_tool", got)
	}
	call, err := call(t, cs, "secret_tool", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `Tool "secret_tool" is hidden by policy`; !call.IsError || text(call) != want {
		t.Fatalf("calling the hidden tool: got %q, want %q", text(call), want)
	}
}

// TestRateLimit makes three calls inside one calendar minute; if the minute
// turns during the sequence, it runs it again on a fresh proxy.
func TestRateLimit(t *testing.T) {
	results := inOneWindow(time.Minute, func(int) []*mcp.CallToolResult {
		cs := session(t, "", nil)
		var results []*mcp.CallToolResult
		for i := 0; i < 3; i++ {
			res, err := call(t, cs, "limited", map[string]any{"text": "x"})
			if err != nil {
				t.Fatal(err)
			}
			results = append(results, res)
		}
		return results
	})
	for i, res := range results[:2] {
		if res.IsError || text(res) != "limited: x" {
			t.Errorf("call %d: got %q (isError %v), want it allowed", i+1, text(res), res.IsError)
		}
	}
	if got, want := text(results[2]), "Rate limit of 2 per minute reached. Try again later."; !results[2].IsError || got != want {
		t.Errorf("call 3: got %q (isError %v), want %q", got, results[2].IsError, want)
	}
}

// inOneWindow runs play, and once more if the counters' calendar window
// (a minute, an hour, a day) turned while it ran, and returns what the
// last run gave; attempt numbers the runs from 0.
func inOneWindow[T any](window time.Duration, play func(attempt int) T) T {
	for attempt := 0; ; attempt++ {
		start := time.Now().UTC().Truncate(window)
		got := play(attempt)
		if attempt > 0 || time.Now().UTC().Truncate(window).Equal(start) {
			return got
		}
	}
}

// TestCountersSurviveRestart: with the on-disk store (the default), a
// restarted proxy keeps its counters: two calls, a restart, and the third is
// refused.
func TestCountersSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	results := inOneWindow(time.Minute, func(attempt int) []*mcp.CallToolResult {
		state := []string{"--state", "disk", "--state-dir", filepath.Join(dir, fmt.Sprint(attempt))}
		var results []*mcp.CallToolResult
		for i := 0; i < 3; i++ {
			cs := session(t, "", nil, state...) // a new proxy process for each call
			res, err := call(t, cs, "limited", map[string]any{"text": "x"})
			if err != nil {
				t.Fatal(err)
			}
			cs.Close() // the proxy flushes its journal on exit
			results = append(results, res)
		}
		return results
	})
	for i, res := range results[:2] {
		if res.IsError {
			t.Errorf("call %d: got %q, want it allowed", i+1, text(res))
		}
	}
	if got, want := text(results[2]), "Rate limit of 2 per minute reached. Try again later."; !results[2].IsError || got != want {
		t.Errorf("call 3 after two restarts: got %q (isError %v), want %q", got, results[2].IsError, want)
	}
}

// TestCountersSurviveCrash: a proxy killed with SIGKILL (no clean exit, no
// final flush) loses at most --state-flush-every of its counts. With 50ms,
// two calls and 300ms later the restarted proxy refuses the third; with 1h
// the crash loses both counts and the third call is allowed — the flag, not
// luck, decides.
func TestCountersSurviveCrash(t *testing.T) {
	for _, tt := range []struct {
		every  string
		denied bool
	}{{"50ms", true}, {"1h", false}} {
		t.Run("every="+tt.every, func(t *testing.T) {
			dir := t.TempDir()
			third := inOneWindow(time.Minute, func(attempt int) *response {
				args := []string{"proxy", "--policy", "testdata/policies", "--server", "testsrv", "--identity", "alice",
					"--state", "disk", "--state-dir", filepath.Join(dir, fmt.Sprint(attempt)), "--state-flush-every", tt.every, "--admin", ""}
				p := startRaw(t, args, anyserverBin(t), "-tool", "limited")
				p.initialize()
				for i := 0; i < 2; i++ {
					if c, ok := p.callTool("limited", `{"text":"x"}`).callResult(); !ok || c.IsError {
						t.Fatalf("call %d: got %+v, want it allowed", i+1, c)
					}
				}
				time.Sleep(300 * time.Millisecond)
				p.cmd.Process.Kill()
				<-p.exited
				q := startRaw(t, args, anyserverBin(t), "-tool", "limited")
				q.initialize()
				return q.callTool("limited", `{"text":"x"}`)
			})
			if c, ok := third.callResult(); !ok || c.IsError != tt.denied || (tt.denied && c.text() != "Rate limit of 2 per minute reached. Try again later.") {
				t.Errorf("third call after a crash: got %+v, want denied=%v", c, tt.denied)
			}
		})
	}
}

func TestFailedCallSpendsNoQuota(t *testing.T) {
	cs := session(t, "", nil)
	// fail allows one call a minute; each answer is a JSON-RPC error, so
	// neither spends it and the second still reaches the server.
	for i := 0; i < 2; i++ {
		res, err := call(t, cs, "fail", nil)
		if err == nil {
			t.Fatalf("call %d: got result %q (isError %v), want the server's JSON-RPC error", i+1, text(res), res.IsError)
		}
		if !strings.Contains(err.Error(), "upstream failure") {
			t.Fatalf("call %d: got %v, want the server's error", i+1, err)
		}
	}
}

func TestAuditLogVerifies(t *testing.T) {
	log := filepath.Join(t.TempDir(), "audit.jsonl")
	cs := session(t, log, nil)
	for _, tool := range []string{"echo", "delete_repo", "echo"} {
		if _, err := call(t, cs, tool, map[string]any{"text": "secret value"}); err != nil {
			t.Fatal(err)
		}
	}
	cs.Close()
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("audit log has %d lines, want 3:\n%s", len(lines), data)
	}
	if strings.Contains(string(data), "secret value") {
		t.Fatal("the audit log holds an argument value")
	}
	for i, want := range []string{`"tool":"echo","decision":"allow"`, `"tool":"delete_repo","decision":"deny"`} {
		if !strings.Contains(lines[i], want) || !strings.Contains(lines[i], `"subject":"alice"`) {
			t.Errorf("line %d: %s\nwant it to contain %s", i+1, lines[i], want)
		}
	}
	out, err := exec.Command(toolgate, "audit", "verify", log).CombinedOutput()
	if err != nil {
		t.Fatalf("verify of an intact log: %v\n%s", err, out)
	}
	lines[0] = strings.Replace(lines[0], `"decision":"allow"`, `"decision":"deny"`, 1)
	os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	out, err = exec.Command(toolgate, "audit", "verify", log).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "audit.jsonl:2:") {
		t.Fatalf("verify of an edited log: got %v\n%s\nwant exit 1 naming line 2", err, out)
	}
}

func TestUpstreamExitFailsProxy(t *testing.T) {
	cmd := exec.Command(toolgate, "proxy", "--policy", "testdata/policies", "--server", "testsrv", "--state", "memory", "--", "sh", "-c", "read line; exit 3")
	stdin, err := cmd.StdinPipe() // held open: the client stays connected
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte(`{"jsonrpc":"2.0","id":7,"method":"ping"}` + "\n"))
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("got %v, want exit 1\nstderr: %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "exited (exit status 3)") {
		t.Errorf("stderr does not say the server exited: %s", stderr.String())
	}
	if !strings.Contains(stdout.String(), `"id":7,"error":{"code":-32000`) {
		t.Errorf("the pending ping got no error: %s", stdout.String())
	}
}

// TestHugeIncrementRefused: an increment_from amount of 9223372036854775000
// (near 2^63, and a float64's value, as the policy reads numbers) on a
// counter that holds 900 must be refused (the sum passes any limit), not
// wrap around to a negative count that lets this call and every later one
// through. Memory and disk stores alike.
func TestHugeIncrementRefused(t *testing.T) {
	dir := policyDir(t, "budget.yaml", `version: "1"
tools:
  spend:
    rules:
      - name: budget
        state: {counter: spent, window: day, increment_from: args.amount}
        conditions: [{path: state.spend.spent, op: lte, value: 1000}]
        on_deny: budget spent
`)
	for _, state := range []string{"memory", "disk"} {
		t.Run(state, func(t *testing.T) {
			got := inOneWindow(24*time.Hour, func(int) []string {
				args := []string{"proxy", "--policy", dir, "--server", "budget", "--state", state,
					"--state-dir", filepath.Join(t.TempDir(), "state"), "--admin", ""}
				p := startRaw(t, args, anyserverBin(t), "-tool", "spend")
				p.initialize()
				return outcomes(p, "spend", `{"amount":900}`, `{"amount":9223372036854775000}`, `{"amount":101}`, `{"amount":100}`)
			})
			want := []string{"allowed", "denied: budget spent", "denied: budget spent", "allowed"}
			if !slices.Equal(got, want) {
				t.Errorf("amounts 900, 9223372036854775000, 101, 100: got %q, want %q", got, want)
			}
		})
	}
}

// TestServerFromPolicies: without --server (architecture.md's command line
// has none), the proxy governs the one server its policies govern; when
// they govern several it refuses to start, naming them.
func TestServerFromPolicies(t *testing.T) {
	p := startRaw(t, []string{"proxy", "--policy", "testdata/policies", "--state", "memory", "--admin", ""}, anyserverBin(t), "-tool", "limited")
	p.initialize()
	if c, ok := p.callTool("limited", `{"text":"x"}`).callResult(); !ok || c.IsError {
		t.Fatalf("a call under the inferred server: got %+v, want it allowed", c)
	}
	if c, ok := p.callTool("delete_repo", `{}`).callResult(); !ok || !c.IsError || c.text() != "Deleting repositories is not allowed through this proxy." {
		t.Fatalf("a call the testsrv policy denies: got %+v, want it denied", c)
	}

	q := startRaw(t, []string{"proxy", "--policy", "../../policies", "--state", "memory", "--admin", ""}, anyserverBin(t), "-tool", "x")
	err := q.close(30 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("several servers, no --server: exit %v, want 2\n%s", err, q.stderr.String())
	}
	if got := q.stderr.String(); !strings.Contains(got, "proxy needs --server NAME") || !strings.Contains(got, "github") || !strings.Contains(got, "stripe") {
		t.Errorf("stderr does not say --server is needed and name the servers:\n%s", got)
	}
}

// TestCountersInTurn: counters are reserved in turn (policy.md §3): a call
// whose increment_from argument is missing is told "Internal policy
// error", unless an earlier counter refuses it first, as PolicyLayer's
// reservation answers.
func TestCountersInTurn(t *testing.T) {
	dir := policyDir(t, "budget.yaml", `version: "1"
tools:
  spend:
    rules:
      - name: hourly
        rate_limit: 1/hour
      - name: budget
        state: {counter: spent, window: day, increment_from: args.amount}
        conditions: [{path: state.spend.spent, op: lte, value: 1000}]
        on_deny: budget spent
`)
	got := inOneWindow(time.Hour, func(int) []string {
		p := startRaw(t, []string{"proxy", "--policy", dir, "--state", "memory", "--admin", ""}, anyserverBin(t), "-tool", "spend")
		p.initialize()
		return outcomes(p, "spend", `{}`, `{"amount":5}`, `{}`)
	})
	want := []string{"denied: Internal policy error", "allowed", "denied: Rate limit of 1 per hour reached. Try again later."}
	if !slices.Equal(got, want) {
		t.Errorf("calls without an amount, with one, without one again: got %q, want %q", got, want)
	}
}

// policyDir returns a new folder holding one policy file, name, with src.
func policyDir(t *testing.T, name, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// outcomes calls tool once with each of args (raw JSON) and says how each
// was answered: "allowed", "denied: MESSAGE", or "error".
func outcomes(p *rawProxy, tool string, args ...string) []string {
	var got []string
	for _, a := range args {
		c, ok := p.callTool(tool, a).callResult()
		switch {
		case !ok:
			got = append(got, "error")
		case c.IsError:
			got = append(got, "denied: "+c.text())
		default:
			got = append(got, "allowed")
		}
	}
	return got
}

// expectListings checks the proxy's metrics (admin listener addr): the
// proxy listed the server's tools itself n times, none failed.
func expectListings(t *testing.T, addr string, n int) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{fmt.Sprintf(`toolgate_tool_listings_total{result="listed"} %d`, n), `toolgate_tool_listings_total{result="failed"} 0`} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

// noDestructive is a policy for the server "annot" that denies every tool
// the server announces as destructive.
const noDestructive = `version: "1"
server: annot
default: allow
tools:
  "*":
    rules:
      - name: no destructive tools
        action: deny
        when: [{path: tool.annotations.destructiveHint, op: eq, value: true}]
        on_deny: destructive tools are off
`

// TestUnlistedToolsAnnotated: a client that calls without listing tools
// still meets rules on the annotations the server announces (the proxy
// lists the tools itself), and the proxy's own listing never reaches it.
func TestUnlistedToolsAnnotated(t *testing.T) {
	dir := policyDir(t, "annotated.yaml", noDestructive)
	tools := filepath.Join(t.TempDir(), "tools.json")
	if err := os.WriteFile(tools, []byte(`[
		{"name":"read_notes","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}},
		{"name":"wipe_notes","inputSchema":{"type":"object"},"annotations":{"destructiveHint":true}}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startRaw(t, []string{"proxy", "--policy", dir, "--state", "memory", "--admin", "127.0.0.1:0"}, anyserverBin(t), "-tools", tools)
	p.initialize()
	got := append(outcomes(p, "wipe_notes", `{}`), outcomes(p, "read_notes", `{}`)...)
	if want := []string{"denied: destructive tools are off", "allowed"}; !slices.Equal(got, want) {
		t.Errorf("calls without a listing: got %q, want %q", got, want)
	}
	expectListings(t, adminAddr(t, p.stderr), 1)
	for _, l := range p.other {
		if strings.Contains(string(l), "toolgate-tools-list") {
			t.Errorf("the client got the proxy's own listing: %s", l)
		}
	}
}
