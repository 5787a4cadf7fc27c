package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// httpUpstream is a go-sdk MCP server over Streamable HTTP with the
// testserver's echo and delete_repo tools; it records the Authorization
// headers it was sent.
type httpUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	auths   []string
	echos   []string // the texts echo was called with
	deletes int      // DELETE requests (sessions ended)
}

func startHTTPUpstream(t *testing.T) *httpUpstream {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "httpupstream", Version: "1.0.0"}, nil)
	type args struct {
		Text string `json:"text,omitempty"`
	}
	u := &httpUpstream{}
	destructive := true
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, func(ctx context.Context, req *mcp.CallToolRequest, in args) (*mcp.CallToolResult, any, error) {
		u.mu.Lock()
		u.echos = append(u.echos, in.Text)
		u.mu.Unlock()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_repo", Annotations: &mcp.ToolAnnotations{DestructiveHint: &destructive}}, func(ctx context.Context, req *mcp.CallToolRequest, in args) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted " + in.Text}}}, nil, nil
	})
	type sleepArgs struct {
		Ms int `json:"ms"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "sleep"}, func(ctx context.Context, req *mcp.CallToolRequest, in sleepArgs) (*mcp.CallToolResult, any, error) {
		select {
		case <-time.After(time.Duration(in.Ms) * time.Millisecond):
		case <-ctx.Done():
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("slept %d ms", in.Ms)}}}, nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.auths = append(u.auths, r.Header.Get("Authorization"))
		if r.Method == http.MethodDelete {
			u.deletes++
		}
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// startHTTPProxy starts `toolgate proxy --listen 127.0.0.1:0 --upstream URL
// EXTRA…` and returns its MCP endpoint.
func startHTTPProxy(t *testing.T, upstream string, env []string, extra ...string) (string, *exec.Cmd, *syncBuffer) {
	t.Helper()
	args := append([]string{"proxy", "--policy", "testdata/policies", "--server", "testsrv", "--state", "memory", "--admin", "",
		"--listen", "127.0.0.1:0", "--upstream", upstream}, extra...)
	cmd := exec.Command(toolgate, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct{ Msg, Listen string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "proxy started" && rec.Listen != "" {
				return "http://" + rec.Listen + "/mcp", cmd, stderr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the proxy logged no listen address:\n%s", stderr.String())
	return "", nil, nil
}

// bearer is an http.RoundTripper adding a bearer token.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

func connectHTTP(t *testing.T, endpoint, token string) (*mcp.ClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := &http.Client{Transport: bearer{token, http.DefaultTransport}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "httptest", Version: "1.0.0"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err == nil {
		t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

// grantToken runs `toolgate grants add` and returns the printed token.
func grantToken(t *testing.T, file, label string, extra ...string) string {
	t.Helper()
	out, err := exec.Command(toolgate, append([]string{"grants", "add", label, "--grants-file", file}, extra...)...).Output()
	if err != nil {
		t.Fatalf("grants add: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestHTTPProxyWithGrants: over Streamable HTTP, a caller needs a granted
// token (401 without, 401 once revoked, without a restart); the policy
// decides with the grant's identity; the client's Authorization never
// reaches the server, which gets the proxy's own credential instead.
func TestHTTPProxyWithGrants(t *testing.T) {
	up := startHTTPUpstream(t)
	dir := t.TempDir()
	grants := filepath.Join(dir, "grants.yaml")
	token := grantToken(t, grants, "alice-laptop", "--subject", "alice", "--groups", "eng", "--servers", "testsrv")
	other := grantToken(t, grants, "ci-runner", "--subject", "ci", "--servers", "otherserver")
	endpoint, _, _ := startHTTPProxy(t, up.URL, []string{"UPSTREAM_TOKEN=s3rv3r-secret"},
		"--grants", grants, "--upstream-header", "Authorization=Bearer env:UPSTREAM_TOKEN", "--audit-log", filepath.Join(dir, "audit.log"))

	// No token, a wrong one, one for another server.
	for name, tok := range map[string]string{"none": "", "wrong": "tg_not-a-real-token", "other server": other} {
		req, _ := http.NewRequest("POST", endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusUnauthorized
		if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("%s: status %d, WWW-Authenticate %q; want %d with a Bearer challenge", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
		}
	}
	up.mu.Lock()
	if len(up.auths) != 0 {
		t.Errorf("refused requests reached the server: %q", up.auths)
	}
	up.mu.Unlock()

	cs, err := connectHTTP(t, endpoint, token)
	if err != nil {
		t.Fatal(err)
	}
	res, err := call(t, cs, "echo", map[string]any{"text": "over http"})
	if err != nil || res.IsError || text(res) != "echo: over http" {
		t.Fatalf("allowed call: %v %+v", err, res)
	}
	res, err = call(t, cs, "delete_repo", map[string]any{"text": "x"})
	if err != nil || !res.IsError || text(res) != "Deleting repositories is not allowed through this proxy." {
		t.Fatalf("denied call: %v %+v", err, res)
	}
	up.mu.Lock()
	for _, a := range up.auths {
		if a != "Bearer s3rv3r-secret" {
			t.Errorf("the server saw Authorization %q, want the proxy's own credential", a)
		}
	}
	up.mu.Unlock()

	// Revoked: the next call is refused, without a restart.
	if out, err := exec.Command(toolgate, "grants", "revoke", "alice-laptop", "--grants-file", grants).CombinedOutput(); err != nil {
		t.Fatalf("grants revoke: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := call(t, cs, "echo", map[string]any{"text": "again"})
		if err != nil && strings.Contains(err.Error(), "Unauthorized") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked token still works: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	if !strings.Contains(string(log), `"decision":"unauthenticated"`) || !strings.Contains(string(log), `"subject":"alice","groups":["eng"],"server":"testsrv","tool":"echo","decision":"allow"`) {
		t.Errorf("audit log lacks the refusals or alice's allowed call:\n%s", log)
	}
}

// TestStdioToHTTPBridge: a stdio client (as Claude Desktop runs it) through
// `toolgate proxy --upstream URL` to an HTTP server.
func TestStdioToHTTPBridge(t *testing.T) {
	up := startHTTPUpstream(t)
	cmd := exec.Command(toolgate, "proxy", "--policy", "testdata/policies", "--server", "testsrv", "--state", "memory", "--admin", "",
		"--identity", "alice", "--upstream", up.URL)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "bridgetest", Version: "1.0.0"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	defer cs.Close()
	if res, err := call(t, cs, "echo", map[string]any{"text": "bridged"}); err != nil || text(res) != "echo: bridged" {
		t.Fatalf("allowed: %v %+v\n%s", err, res, stderr.String())
	}
	if res, err := call(t, cs, "delete_repo", map[string]any{"text": "x"}); err != nil || !res.IsError {
		t.Fatalf("denied: %v %+v", err, res)
	}
}

// TestUnlistedToolsAnnotatedHTTP: over Streamable HTTP and the stdio-to-HTTP
// bridge, a client that calls without listing tools meets rules on the
// annotations the server announces: the proxy lists them itself.
func TestUnlistedToolsAnnotatedHTTP(t *testing.T) {
	dir := policyDir(t, "annotated.yaml", noDestructive)
	up := startHTTPUpstream(t)
	check := func(t *testing.T, cs *mcp.ClientSession) {
		t.Helper()
		if res, err := call(t, cs, "delete_repo", map[string]any{"text": "x"}); err != nil || !res.IsError || text(res) != "destructive tools are off" {
			t.Errorf("destructive tool: %v %+v, want denied", err, res)
		}
		if res, err := call(t, cs, "echo", map[string]any{"text": "hi"}); err != nil || text(res) != "echo: hi" {
			t.Errorf("read-only tool: %v %+v, want allowed", err, res)
		}
	}
	t.Run("http", func(t *testing.T) {
		endpoint, _, stderr := startHTTPProxy(t, up.URL, nil, "--policy", dir, "--server", "annot", "--allow-anonymous", "--admin", "127.0.0.1:0")
		cs, err := connectHTTP(t, endpoint, "")
		if err != nil {
			t.Fatal(err)
		}
		check(t, cs)
		expectListings(t, adminAddr(t, stderr), 1)
	})
	t.Run("bridge", func(t *testing.T) {
		cmd := exec.Command(toolgate, "proxy", "--policy", dir, "--server", "annot", "--state", "memory", "--admin", "", "--upstream", up.URL)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bridgetest", Version: "1.0.0"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		check(t, cs)
	})
}

// TestHTTPIdleSessionsMemory opens 1,000 sessions through the HTTP proxy
// (each initialized, its tools listed, one call made; no GET stream) and
// reads the proxy's memory: its whole resident set (anonymous memory —
// heap, stacks, Wasm instances — and the binary's own pages that package
// initialisation and serving touched) must stay within the 64 MiB.
// BENCHMARKS.md gives the figures.
func TestHTTPIdleSessionsMemory(t *testing.T) {
	up := startHTTPUpstream(t)
	endpoint, cmd, _ := startHTTPProxy(t, up.URL, nil)
	start := memOf(t, cmd.Process.Pid)
	t.Logf("proxy at start: RSS %.1f MiB (anonymous %.1f MiB)", mib(start.rss), mib(start.anon))
	const sessions = 1000
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var failures []error
	var open []*mcp.ClientSession
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "idle", Version: "1.0.0"}, nil).
				Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
			if err == nil {
				_, err = cs.ListTools(ctx, nil)
			}
			if err == nil {
				_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": strconv.Itoa(i)}})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err)
				return
			}
			open = append(open, cs)
		}(i)
	}
	wg.Wait()
	defer func() {
		for _, cs := range open {
			cs.Close()
		}
	}()
	if len(failures) > 0 {
		t.Fatalf("%d of %d sessions failed; first: %v", len(failures), sessions, failures[0])
	}
	m := memOf(t, cmd.Process.Pid)
	t.Logf("proxy with %d idle sessions: RSS %.1f MiB (anonymous %.1f MiB, file-backed %.1f MiB)", sessions, mib(m.rss), mib(m.anon), mib(m.rss-m.anon))
	if m.anon == 0 || m.rss > 64*1024 {
		t.Fatalf("proxy RSS %.1f MiB (anonymous %.1f MiB) with %d idle sessions, want at most 64 MiB", mib(m.rss), mib(m.anon), sessions)
	}
}

// procMem is a process's resident memory in KiB: all of it, and the
// anonymous part.
type procMem struct{ rss, anon int }

func mib(kb int) float64 { return float64(kb) / 1024 }

func memOf(t *testing.T, pid int) procMem {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m procMem
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.rss, _ = strconv.Atoi(f[1])
		case "RssAnon:":
			m.anon, _ = strconv.Atoi(f[1])
		}
	}
	return m
}
