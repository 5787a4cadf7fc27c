package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/engine"
)

// The helpers of the HTTP and bridge tests are prefixed up… (the upstream
// MCP server) and hp… (the proxy side) to keep clear of the package's other
// test files.

// upBundle is a compiled bundle checked in beside the evaluator: 10 rules
// for server "bench". What these tests rely on: read_file is allowed for
// paths under /srv/ only, delete_branch is always denied, delete_everything
// is hidden, and every tool needs the caller in group eng.
const upBundle = "../opawasm/testdata/bench10.tar.gz"

var upQuiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// upPolicy returns a Policy deciding with upBundle. Compiling the bundle's
// Wasm is the slow part (seconds under -race), so the tests share one
// engine; each gets its own counters.
func upPolicy(t testing.TB) *Policy {
	t.Helper()
	eng, err := upEngine()
	if err != nil {
		t.Fatal(err)
	}
	return NewPolicy(eng, WithLogger(upQuiet))
}

var upEngine = sync.OnceValues(func() (*engine.Engine, error) {
	raw, err := os.ReadFile(upBundle)
	if err != nil {
		return nil, err
	}
	b, err := bundles.ReadBytes(raw, bundles.Limits{})
	if err != nil {
		return nil, err
	}
	eng := engine.New()
	if err := eng.Swap(context.Background(), bundles.Digest(raw), b); err != nil {
		return nil, err
	}
	return eng, nil
})

// upServer is a go-sdk MCP server behind mcp.NewStreamableHTTPHandler, with
// the tools the tests call, counting what reaches it.
type upServer struct {
	*httptest.Server
	mcp       *mcp.Server
	toolPosts atomic.Int64 // POSTs carrying a tools/call
	listPosts atomic.Int64 // POSTs carrying a tools/list
	gets      atomic.Int64
	deletes   atomic.Int64
	sawCookie atomic.Bool
	authMu    sync.Mutex
	auths     map[string]bool // Authorization headers seen
	stop      chan struct{}   // closed at cleanup: ends hanging tools
}

type upPathArgs struct {
	Path string `json:"path,omitempty"`
}

type upStepsArgs struct {
	Steps int  `json:"steps,omitempty"`
	Hang  bool `json:"hang,omitempty"`
}

func upText(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func upResultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func newUpServer(t testing.TB, jsonResponse bool) *upServer {
	t.Helper()
	u := &upServer{stop: make(chan struct{})}
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1.0.0"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	u.mcp = s
	mcp.AddTool(s, &mcp.Tool{Name: "read_file", Description: "read a file", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *mcp.CallToolRequest, in upPathArgs) (*mcp.CallToolResult, any, error) {
			return upText("read " + in.Path), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_branch", Description: "delete a branch"},
		func(ctx context.Context, req *mcp.CallToolRequest, in upPathArgs) (*mcp.CallToolResult, any, error) {
			return upText("deleted"), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_everything", Description: "hidden by the policy"},
		func(ctx context.Context, req *mcp.CallToolRequest, in upPathArgs) (*mcp.CallToolResult, any, error) {
			return upText("gone"), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "progress notifications, then an answer, or none (hang)"},
		func(ctx context.Context, req *mcp.CallToolRequest, in upStepsArgs) (*mcp.CallToolResult, any, error) {
			tok := req.Params.GetProgressToken()
			for i := range in.Steps {
				if tok != nil {
					req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i + 1), Total: float64(in.Steps), Message: "step"})
				}
				time.Sleep(10 * time.Millisecond)
			}
			if in.Hang {
				// Long past the proxies' timeouts, short enough not to hold
				// up the end of the session.
				select {
				case <-ctx.Done():
				case <-u.stop:
				case <-time.After(2 * time.Second):
				}
				return nil, nil, errors.New("hung")
			}
			return upText(fmt.Sprintf("%d steps", in.Steps)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "ask", Description: "asks the client's model (sampling)"},
		func(ctx context.Context, req *mcp.CallToolRequest, in upPathArgs) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10,
				Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "say hi"}}}})
			if err != nil {
				return nil, nil, err
			}
			tc, _ := res.Content.(*mcp.TextContent)
			if tc == nil {
				return nil, nil, errors.New("no text")
			}
			return upText("model said " + tc.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "always a JSON-RPC error"},
		func(ctx context.Context, req *mcp.CallToolRequest, in upPathArgs) (*mcp.CallToolResult, any, error) {
			return nil, nil, &jsonrpc.Error{Code: -32001, Message: "upstream failure"}
		})
	s.AddResource(&mcp.Resource{URI: "file:///srv/log", Name: "log", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "log"}}}, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{JSONResponse: jsonResponse})
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.authMu.Lock()
		if u.auths == nil {
			u.auths = map[string]bool{}
		}
		u.auths[r.Header.Get("Authorization")] = true
		u.authMu.Unlock()
		if r.Header.Get("Cookie") != "" {
			u.sawCookie.Store(true)
		}
		switch r.Method {
		case http.MethodPost:
			body, _ := io.ReadAll(r.Body)
			if bytes.Contains(body, []byte(`"tools/call"`)) {
				u.toolPosts.Add(1)
			}
			if bytes.Contains(body, []byte(`"tools/list"`)) {
				u.listPosts.Add(1)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		case http.MethodGet:
			u.gets.Add(1)
		case http.MethodDelete:
			u.deletes.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(u.stop)
		u.CloseClientConnections()
		u.Close()
	})
	return u
}

// hpRecorder wraps a Decide hook to record the inputs it saw and the
// Done outcomes of the calls it allowed.
type hpRecorder struct {
	mu     sync.Mutex
	inputs []bundles.Input
	dones  map[string][]bool // by tool
}

// enforcer returns an Enforcer deciding with decide, recording; decide nil
// means the upBundle policy.
func (rec *hpRecorder) enforcer(t testing.TB, decide func(context.Context, *bundles.Input) Verdict) *Enforcer {
	rec.dones = map[string][]bool{}
	var hidden func(context.Context, *bundles.Input) bool
	if decide == nil {
		pol := upPolicy(t)
		decide, hidden = pol.Decide, pol.Hidden
	}
	return &Enforcer{Server: "bench", Hidden: hidden, Decide: func(ctx context.Context, in *bundles.Input) Verdict {
		v := decide(ctx, in)
		rec.mu.Lock()
		rec.inputs = append(rec.inputs, *in)
		rec.mu.Unlock()
		if v.Allow {
			inner, tool := v.Done, in.Tool
			v.Done = func(ok bool) {
				rec.mu.Lock()
				rec.dones[tool] = append(rec.dones[tool], ok)
				rec.mu.Unlock()
				if inner != nil {
					inner(ok)
				}
			}
		}
		return v
	}}
}

func (rec *hpRecorder) doneOf(tool string) []bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]bool(nil), rec.dones[tool]...)
}

// waitDone waits for tool's Done outcomes to be want.
func (rec *hpRecorder) waitDone(t testing.TB, tool string, want ...bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := rec.doneOf(tool)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Done outcomes of %s: got %v, want %v", tool, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hpProxy is an HTTP proxy on a test server, recording what it decided.
type hpProxy struct {
	*httptest.Server
	hpRecorder
	h *HTTP
}

// newHPProxy puts an HTTP proxy in front of upstream. decide nil means the
// upBundle policy. configure, when set, adjusts the proxy before it serves.
func newHPProxy(t testing.TB, upstream string, decide func(context.Context, *bundles.Input) Verdict, configure func(*HTTP)) *hpProxy {
	t.Helper()
	p := &hpProxy{}
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p.h = &HTTP{
		Enforcer: p.enforcer(t, decide),
		Upstream: u,
		Identity: func(*http.Request) bundles.Identity {
			return bundles.Identity{Subject: "alice", Groups: []string{"eng"}}
		},
		Logger: upQuiet,
	}
	if configure != nil {
		configure(p.h)
	}
	p.Server = httptest.NewServer(p.h)
	t.Cleanup(func() {
		p.CloseClientConnections()
		p.Close()
	})
	return p
}

// hpClientEvents collects what the server sent the client.
type hpClientEvents struct {
	progress chan *mcp.ProgressNotificationParams
	updated  chan string
	sampled  atomic.Int64
}

// hpConnect connects the go-sdk client to endpoint over Streamable HTTP.
// version "" lets the SDK negotiate its latest protocol version.
func hpConnect(t testing.TB, endpoint, version string, hc *http.Client) (*mcp.ClientSession, *hpClientEvents) {
	t.Helper()
	return hpConnectWith(t, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, version)
}

// hpConnectWith connects the go-sdk client over transport.
func hpConnectWith(t testing.TB, transport mcp.Transport, version string) (*mcp.ClientSession, *hpClientEvents) {
	t.Helper()
	ev := &hpClientEvents{progress: make(chan *mcp.ProgressNotificationParams, 64), updated: make(chan string, 8)}
	client := mcp.NewClient(&mcp.Implementation{Name: "hptest", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			ev.progress <- req.Params
		},
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			ev.updated <- req.Params.URI
		},
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			ev.sampled.Add(1)
			return &mcp.CreateMessageResult{Model: "test", Role: "assistant", Content: &mcp.TextContent{Text: "hi"}}, nil
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts *mcp.ClientSessionOptions
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := client.Connect(ctx, transport, opts)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, ev
}

func hpCall(t testing.TB, cs *mcp.ClientSession, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

// hpModes runs f with the upstream answering in event streams and in JSON.
func hpModes(t *testing.T, f func(t *testing.T, jsonResponse bool)) {
	for _, mode := range []struct {
		name string
		json bool
	}{{"sse", false}, {"json", true}} {
		t.Run(mode.name, func(t *testing.T) { f(t, mode.json) })
	}
}

const hpVersion = "2025-06-18"

func TestHTTPAllowAndDeny(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		p := newHPProxy(t, up.URL, nil, nil)
		cs, _ := hpConnect(t, p.URL, hpVersion, nil)

		res, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := upResultText(res), "read /srv/a"; res.IsError || got != want {
			t.Fatalf("allowed call: got %q (isError %v), want %q", got, res.IsError, want)
		}
		p.waitDone(t, "read_file", true)

		for _, tt := range []struct {
			tool string
			args map[string]any
			rule string
		}{
			{"read_file", map[string]any{"path": "/etc/shadow"}, "policies/bench.yaml#read_file/no secrets"},
			{"delete_branch", map[string]any{"path": "main"}, "policies/bench.yaml#delete_branch/never"},
		} {
			res, err := hpCall(t, cs, tt.tool, tt.args)
			if err != nil {
				t.Fatalf("%s: %v", tt.tool, err)
			}
			if !res.IsError || upResultText(res) == "" {
				t.Errorf("%s: got %q (isError %v), want a denial the model can read", tt.tool, upResultText(res), res.IsError)
			}
			if got := res.Meta["toolgate/rule"]; got != tt.rule {
				t.Errorf("%s: _meta rule: got %v, want %q", tt.tool, got, tt.rule)
			}
			if d, _ := res.Meta["toolgate/bundle"].(string); !strings.HasPrefix(d, "sha256:") {
				t.Errorf("%s: _meta bundle: got %q, want a digest", tt.tool, d)
			}
			if id, _ := res.Meta["toolgate/decision_id"].(string); id == "" {
				t.Errorf("%s: _meta has no decision id", tt.tool)
			}
		}
		if got := up.toolPosts.Load(); got != 1 {
			t.Errorf("tools/call POSTs that reached the server: got %d, want 1 (denied calls never leave the proxy)", got)
		}

		res, err = hpCall(t, cs, "fail", nil)
		if err == nil {
			t.Fatalf("fail: got %+v, want the server's JSON-RPC error", res)
		}
		p.waitDone(t, "fail", false)
	})
}

func TestHTTPDenyAsError(t *testing.T) {
	up := newUpServer(t, false)
	p := newHPProxy(t, up.URL, nil, func(h *HTTP) { h.Enforcer.DenyAsError = true })
	cs, _ := hpConnect(t, p.URL, hpVersion, nil)
	_, err := hpCall(t, cs, "delete_branch", map[string]any{"path": "main"})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("got %v, want a JSON-RPC error", err)
	}
	var data struct{ Rule, DecisionID string }
	json.Unmarshal(werr.Data, &data)
	if werr.Code != CodeDenied || data.Rule != "policies/bench.yaml#delete_branch/never" {
		t.Errorf("got code %d data %s, want %d and the rule", werr.Code, werr.Data, CodeDenied)
	}
	if got := up.toolPosts.Load(); got != 0 {
		t.Errorf("tools/call POSTs that reached the server: got %d, want 0", got)
	}
}

func TestHTTPHiddenTool(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		p := newHPProxy(t, up.URL, nil, nil)
		cs, _ := hpConnect(t, p.URL, hpVersion, nil)
		res, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
		}
		got := strings.Join(names, ",")
		if strings.Contains(got, "delete_everything") || !strings.Contains(got, "read_file") || !strings.Contains(got, "delete_branch") {
			t.Fatalf("tools/list: got %s, want every tool but delete_everything", got)
		}
		call, err := hpCall(t, cs, "delete_everything", nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := `Tool "delete_everything" is hidden by policy`; !call.IsError || upResultText(call) != want {
			t.Fatalf("calling the hidden tool: got %q, want %q", upResultText(call), want)
		}
	})
}

func TestHTTPProgressAndSampling(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		p := newHPProxy(t, up.URL, nil, nil)
		cs, ev := hpConnect(t, p.URL, hpVersion, nil)

		params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 3}}
		params.SetProgressToken("tok-1")
		res, err := cs.CallTool(context.Background(), params)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := upResultText(res), "3 steps"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		if !jsonResponse {
			// In JSON mode the go-sdk server has no stream to send progress
			// on; with event streams each step comes through.
			for i := 1; i <= 3; i++ {
				select {
				case pn := <-ev.progress:
					if pn.ProgressToken != "tok-1" || pn.Progress != float64(i) {
						t.Errorf("progress %d: got %+v", i, pn)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("progress notification %d did not come through", i)
				}
			}
		}

		res, err = hpCall(t, cs, "ask", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := upResultText(res), "model said hi"; got != want {
			t.Fatalf("sampling: got %q, want %q", got, want)
		}
		if ev.sampled.Load() != 1 {
			t.Errorf("sampling requests the client answered: got %d, want 1", ev.sampled.Load())
		}
		p.waitDone(t, "ask", true)
	})
}

func TestHTTPGetStreamAndDelete(t *testing.T) {
	up := newUpServer(t, false)
	p := newHPProxy(t, up.URL, nil, nil)
	cs, ev := hpConnect(t, p.URL, hpVersion, nil)
	if err := cs.Subscribe(context.Background(), &mcp.SubscribeParams{URI: "file:///srv/log"}); err != nil {
		t.Fatal(err)
	}
	if got := p.h.Sessions(); got != 1 {
		t.Fatalf("sessions tracked: got %d, want 1", got)
	}
	// The notification has no request to ride on: it comes on the GET
	// stream the client opened after initializing.
	deadline := time.After(5 * time.Second)
	for {
		if err := up.mcp.ResourceUpdated(context.Background(), &mcp.ResourceUpdatedNotificationParams{URI: "file:///srv/log"}); err != nil {
			t.Fatal(err)
		}
		select {
		case uri := <-ev.updated:
			if uri != "file:///srv/log" {
				t.Fatalf("updated: got %q", uri)
			}
		case <-time.After(100 * time.Millisecond):
			// The GET stream may not be up yet.
			select {
			case <-deadline:
				t.Fatal("the resource update did not come through the GET stream")
			default:
			}
			continue
		}
		break
	}
	if up.gets.Load() == 0 {
		t.Error("no GET reached the server")
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if got := up.deletes.Load(); got != 1 {
		t.Errorf("DELETEs that reached the server: got %d, want 1", got)
	}
	if got := p.h.Sessions(); got != 0 {
		t.Errorf("sessions tracked after DELETE: got %d, want 0", got)
	}
}

func TestHTTPSessionCatalogs(t *testing.T) {
	up := newUpServer(t, false)
	var mu sync.Mutex
	seen := map[string]string{} // session subject → annotations of read_file
	p := newHPProxy(t, up.URL, func(_ context.Context, in *bundles.Input) Verdict {
		mu.Lock()
		seen[in.Identity.Subject] = string(in.Annotations)
		mu.Unlock()
		return Verdict{Allow: true}
	}, func(h *HTTP) {
		h.Identity = func(r *http.Request) bundles.Identity {
			return bundles.Identity{Subject: r.Header.Get("User-Agent")}
		}
	})
	withUA := func(ua string) *http.Client {
		return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r.Header.Set("User-Agent", ua)
			return http.DefaultTransport.RoundTrip(r)
		})}
	}
	a, _ := hpConnect(t, p.URL, hpVersion, withUA("a"))
	b, _ := hpConnect(t, p.URL, hpVersion, withUA("b"))
	if _, err := a.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, cs := range []*mcp.ClientSession{a, b} {
		if _, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/x"}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := seen["a"], `"readOnlyHint":true`; !strings.Contains(got, want) {
		t.Errorf("session a (listed tools): annotations %q, want them with %s", got, want)
	}
	if got := seen["b"]; got != "" {
		t.Errorf("session b (did not list tools): annotations %q, want none", got)
	}
	if got := p.h.Sessions(); got != 2 {
		t.Errorf("sessions tracked: got %d, want 2", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHTTPCredentials(t *testing.T) {
	up := newUpServer(t, false)
	p := newHPProxy(t, up.URL, nil, func(h *HTTP) {
		h.UpstreamHeaders = func(hd http.Header) { hd.Set("Authorization", "Bearer proxy-token") }
	})
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r.Header.Set("Authorization", "Bearer client-secret")
		r.Header.Set("Cookie", "session=client")
		return http.DefaultTransport.RoundTrip(r)
	})}
	cs, _ := hpConnect(t, p.URL, hpVersion, hc)
	if _, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"}); err != nil {
		t.Fatal(err)
	}
	cs.Close()
	up.authMu.Lock()
	defer up.authMu.Unlock()
	if len(up.auths) != 1 || !up.auths["Bearer proxy-token"] {
		t.Errorf("Authorization headers the server saw: %v, want only the proxy's", up.auths)
	}
	if up.sawCookie.Load() {
		t.Error("the client's Cookie header reached the server")
	}
}

// TestHTTPLatestProtocol lets the go-sdk client negotiate its newest
// protocol version (sessionless, with Mcp-Method and Mcp-Name headers the
// server checks against the body).
func TestHTTPLatestProtocol(t *testing.T) {
	up := newUpServer(t, false)
	p := newHPProxy(t, up.URL, nil, nil)
	cs, _ := hpConnect(t, p.URL, "", nil)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name == "delete_everything" {
			t.Error("the hidden tool is listed")
		}
	}
	if res, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"}); err != nil || upResultText(res) != "read /srv/a" {
		t.Fatalf("allowed call: got %v, %v", res, err)
	}
	if res, err := hpCall(t, cs, "delete_branch", nil); err != nil || !res.IsError {
		t.Fatalf("denied call: got %v, %v", res, err)
	}
}

// hpPost sends one raw POST to the proxy.
func hpPost(t testing.TB, url, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hpDeadURL returns the URL of a port nothing listens on.
func hpDeadURL(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/mcp"
}

func TestHTTPRawMessages(t *testing.T) {
	fiveHundred := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusServiceUnavailable)
	}))
	defer fiveHundred.Close()
	gatewayTimeout := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream timed out", http.StatusGatewayTimeout)
	}))
	defer gatewayTimeout.Close()
	notFound := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer notFound.Close()
	allow := func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a"}}}`
	for _, tt := range []struct {
		name     string
		upstream string
		body     string
		status   int
		want     string // in the body
		done     []bool
		failures int64 // upstream failures reported (UpstreamError)
	}{
		{"parse error", fiveHundred.URL, `{"jsonrpc":`, 400, `"code":-32700`, nil, 0},
		{"batch", fiveHundred.URL, `[` + call + `]`, 400, `"id":null,"error":{"code":-32600,"message":"invalid request: batches`, nil, 0},
		{"not JSON-RPC", fiveHundred.URL, `{"jsonrpc":"1.0","id":3,"method":"x"}`, 400, `"id":3,"error":{"code":-32600`, nil, 0},
		{"call without name", fiveHundred.URL, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}`, 200, `"id":4,"error":{"code":-32602`, nil, 0},
		{"upstream down", hpDeadURL(t), call, 200, `"id":7,"error":{"code":-32000,"message":"the MCP server could not be reached"}`, []bool{false}, 1},
		{"upstream 503", fiveHundred.URL, call, 200, `"id":7,"error":{"code":-32000,"message":"the MCP server failed: HTTP 503`, []bool{false}, 1},
		// A gateway's timeout says nothing of whether the server ran the
		// call: it counts. A refusal rolls back.
		{"gateway 504", gatewayTimeout.URL, call, 200, `"id":7,"error":{"code":-32000,"message":"the MCP server failed: HTTP 504`, []bool{true}, 1},
		{"upstream 403", notFound.URL, call, 403, `no`, []bool{false}, 0},
		{"notification, upstream down", hpDeadURL(t), `{"jsonrpc":"2.0","method":"notifications/initialized"}`, 502, "could not be reached", nil, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var failures atomic.Int64
			p := newHPProxy(t, tt.upstream, allow, func(h *HTTP) { h.UpstreamError = func() { failures.Add(1) } })
			status, body := hpPost(t, p.URL, tt.body)
			if status != tt.status || !strings.Contains(body, tt.want) {
				t.Errorf("got %d %s, want %d with %s", status, body, tt.status, tt.want)
			}
			if got := failures.Load(); got != tt.failures {
				t.Errorf("upstream failures reported: %d, want %d", got, tt.failures)
			}
			if got := p.doneOf("read_file"); fmt.Sprint(got) != fmt.Sprint(tt.done) {
				t.Errorf("Done outcomes: got %v, want %v", got, tt.done)
			}
		})
	}
	t.Run("method", func(t *testing.T) {
		p := newHPProxy(t, fiveHundred.URL, allow, nil)
		req, _ := http.NewRequest(http.MethodPut, p.URL, strings.NewReader(call))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("PUT: got %d, want 405", resp.StatusCode)
		}
	})
}

// TestHTTPSentCallCounts: a tools/call the server received but never
// answered (it closed the connection, or hung past the call timeout) counts
// against its limits, over the proxy's default upstream client (the direct
// transport, for a plain-HTTP upstream) as over http.Transport; one that
// never reached a server spends nothing (TestHTTPRawMessages).
func TestHTTPSentCallCounts(t *testing.T) {
	// The upstream reads the request, then closes the connection (hang
	// false) or keeps it open without answering (hang true).
	rawUpstream := func(t *testing.T, hang bool) string {
		if hang {
			return rawServer(t, func(net.Conn) {})
		}
		return rawServer(t, func(c net.Conn) { c.Close() })
	}
	allow := func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a"}}}`
	for _, transport := range []string{"default", "http.Transport"} {
		for _, hang := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/hang=%v", transport, hang), func(t *testing.T) {
				p := newHPProxy(t, rawUpstream(t, hang), allow, func(h *HTTP) {
					h.CallTimeout = 300 * time.Millisecond
					if transport != "default" {
						tr := &http.Transport{}
						t.Cleanup(tr.CloseIdleConnections)
						h.Client = &http.Client{Transport: tr}
					}
				})
				status, body := hpPost(t, p.URL, call)
				if status != http.StatusOK || !strings.Contains(body, `"id":7,"error":{"code":-32000`) {
					t.Errorf("got %d %s, want an error answer to id 7", status, body)
				}
				if got := p.doneOf("read_file"); fmt.Sprint(got) != "[true]" {
					t.Errorf("Done outcomes: got %v, want [true] (the server got the call)", got)
				}
			})
		}
	}
}

func TestHTTPMaxBody(t *testing.T) {
	up := newUpServer(t, false)
	p := newHPProxy(t, up.URL, nil, func(h *HTTP) { h.MaxBody = 1024 })
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/` + strings.Repeat("a", 2000) + `"}}}`
	status, body := hpPost(t, p.URL, big)
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"code":-32600`) {
		t.Errorf("declared length: got %d %s, want 413 with a JSON-RPC error", status, body)
	}
	// Without a declared length (chunked).
	req, _ := http.NewRequest(http.MethodPost, p.URL, io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked: got %d, want 413", resp.StatusCode)
	}
	if up.toolPosts.Load() != 0 {
		t.Error("a too-large call reached the server")
	}
	p2 := newHPProxy(t, up.URL, nil, nil)
	p2.h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if p2.h.maxBody != DefaultMaxBody {
		t.Errorf("default MaxBody: got %d, want %d", p2.h.maxBody, DefaultMaxBody)
	}
}

func TestHTTPCallTimeout(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		const timeout = 300 * time.Millisecond
		p := newHPProxy(t, up.URL, nil, func(h *HTTP) { h.CallTimeout = timeout })
		cs, _ := hpConnect(t, p.URL, hpVersion, nil)
		for _, steps := range []int{0, 2} { // no event before the hang, and a stream already started
			params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": steps, "hang": true}}
			params.SetProgressToken("t")
			start := time.Now()
			_, err := cs.CallTool(context.Background(), params)
			elapsed := time.Since(start)
			var werr *jsonrpc.Error
			if !errors.As(err, &werr) || werr.Code != codeUpstreamGone || !strings.Contains(werr.Message, "did not answer within 300ms") {
				t.Fatalf("steps %d: got %v, want a -32000 timeout error", steps, err)
			}
			if elapsed > timeout+2*time.Second {
				t.Errorf("steps %d: the error came after %v", steps, elapsed)
			}
		}
		p.waitDone(t, "slow", true, true) // the server got the calls: they count
		// The session still works.
		if res, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"}); err != nil || upResultText(res) != "read /srv/a" {
			t.Fatalf("after the timeouts: got %v, %v", res, err)
		}
	})
}

// TestHTTPResumedList: a tools/list whose event stream broke before its
// answer is filtered when the answer comes on a resumed GET stream.
func TestHTTPResumedList(t *testing.T) {
	answer := `{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"read_file"},{"name":"delete_everything"}]}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		switch r.Method {
		case http.MethodPost:
			io.WriteString(w, "id: s1_0\ndata: \n\n") // a priming event, then the stream breaks
		case http.MethodGet:
			if r.Header.Get("Last-Event-Id") != "s1_0" {
				http.Error(w, "no", 400)
				return
			}
			io.WriteString(w, ": ok\n\nevent: message\nid: s1_1\ndata: "+answer+"\n\n")
		}
	}))
	defer up.Close()
	p := newHPProxy(t, up.URL, nil, nil)
	status, body := hpPost(t, p.URL, `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, hdrSession, "s")
	if status != 200 || body != "id: s1_0\ndata: \n\n" {
		t.Fatalf("POST: got %d %q", status, body)
	}
	req, _ := http.NewRequest(http.MethodGet, p.URL, nil)
	req.Header.Set(hdrSession, "s")
	req.Header.Set("Last-Event-ID", "s1_0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := ": ok\n\nevent: message\nid: s1_1\ndata: " + `{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"read_file"}]}}` + "\n\n"
	if string(b) != want {
		t.Errorf("GET: got %q, want %q", b, want)
	}
}

func TestSessionTableEviction(t *testing.T) {
	var tb sessionTable
	tb.max = 3
	a, b := tb.ensure("a"), tb.ensure("b")
	tb.ensure("c")
	tb.get("a") // b is now the least recently used
	tb.ensure("d")
	if tb.get("b") != nil || tb.get("a") != a || tb.get("c") == nil || tb.get("d") == nil {
		t.Fatalf("after eviction: a %v b %v c %v d %v", tb.get("a"), tb.get("b"), tb.get("c"), tb.get("d"))
	}
	if got := tb.n.Load(); got != 3 {
		t.Errorf("count: got %d, want 3", got)
	}
	_ = b
	tb.drop("a")
	tb.drop("a")
	if got := tb.n.Load(); got != 2 || tb.get("a") != nil {
		t.Errorf("after drop: count %d", got)
	}
	if tb.get("") != &tb.none {
		t.Error("no session id: want the table's no-session entry")
	}
}

// FuzzHTTPPost sends arbitrary bodies through the handler to a fake
// upstream that answers with JSON or an event stream echoing the request;
// the proxy must answer every one without panicking.
func FuzzHTTPPost(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a"}}}`,
		`{"jsonrpc":"2.0","id":"x","method":"tools/list"}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}`,
		`{"jsonrpc":"2.0","id":null}`,
		"\x00", "", "{", "null",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	var sse atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.Unmarshal(body, &m)
		if m.ID == nil {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		echo, _ := json.Marshal(string(body))
		answer := `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"result":{"echo":` + string(echo) + `}}`
		if m.Method == "tools/list" {
			answer = `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"result":{"tools":[{"name":"delete_everything"},{"name":"a","annotations":{"x":1}}]}}`
		}
		if sse.Load() {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nid: 2\ndata: %s\n\n", answer)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	h := &HTTP{
		Enforcer: &Enforcer{
			Decide: func(_ context.Context, in *bundles.Input) Verdict {
				return Verdict{Allow: in.Tool != "delete_everything", Message: "no", Done: func(bool) {}}
			},
			Hidden: func(_ context.Context, in *bundles.Input) bool { return in.Tool == "delete_everything" },
		},
		Upstream: u,
		Logger:   upQuiet,
		MaxBody:  4096,
	}
	f.Fuzz(func(t *testing.T, body []byte, useSSE bool) {
		sse.Store(useSSE)
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(body))
		r.Header.Set(hdrSession, "fuzz")
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200, 202, 400, 413:
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body.String())
		}
		if bytes.Contains(w.Body.Bytes(), []byte(`"name":"delete_everything"`)) {
			t.Fatalf("hidden tool listed for %q: %s", body, w.Body.String())
		}
	})
}

// hpFakeUpstream is an http.RoundTripper that answers every tools/call
// with a fixed JSON result carrying the request's id, without a network.
type hpFakeUpstream struct{}

func (hpFakeUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var m struct {
		ID json.RawMessage `json:"id"`
	}
	json.Unmarshal(body, &m)
	out := `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}`
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(out)),
		ContentLength: int64(len(out)),
		Request:       r,
	}, nil
}

// BenchmarkHTTPServe measures the handler's own work per tools/call, with
// the network taken out (an in-memory upstream and response recorder):
// httputil.ReverseProxy against the proxy allowing the call (the upBundle
// policy) and denying it.
func BenchmarkHTTPServe(b *testing.B) {
	u, _ := url.Parse("http://upstream.test/mcp")
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }, Transport: hpFakeUpstream{}}
	// A new proxy for each run, and every 50,000 calls within one: the
	// policy's daily counter (100,000 calls) must not run out.
	tg := func() http.Handler {
		pol := upPolicy(b)
		return &HTTP{
			Enforcer: &Enforcer{Server: "bench", Decide: pol.Decide, Hidden: pol.Hidden},
			Upstream: u,
			Client:   &http.Client{Transport: hpFakeUpstream{}},
			Identity: func(*http.Request) bundles.Identity {
				return bundles.Identity{Subject: "alice", Groups: []string{"eng"}}
			},
			Logger: upQuiet,
		}
	}
	for _, tt := range []struct {
		name string
		h    func() http.Handler
		tool string
		want string
	}{
		{"reverseproxy", func() http.Handler { return rp }, "read_file", `"text":"ok"`},
		{"toolgate", tg, "read_file", `"text":"ok"`},
		{"denied", tg, "delete_branch", `"isError":true`},
	} {
		b.Run("path="+tt.name, func(b *testing.B) {
			h := tt.h()
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tt.tool + `","arguments":{"path":"/srv/a","text":"hello"}}}`
			b.ReportAllocs()
			for i := 1; b.Loop(); i++ {
				if i%50_000 == 0 {
					b.StopTimer()
					h = tt.h()
					b.StartTimer()
				}
				r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Accept", "application/json, text/event-stream")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 || !strings.Contains(w.Body.String(), tt.want) {
					b.Fatalf("got %d %s", w.Code, w.Body.String())
				}
			}
		})
	}
}

// TestHTTPAmbiguousNames: a message whose member names repeat, or differ
// from the ones the proxy reads only in case, is refused: the proxy and the
// server would not read the same call from it.
func TestHTTPAmbiguousNames(t *testing.T) {
	up := newUpServer(t, false)
	p := newHPProxy(t, up.URL, nil, nil)
	cs, _ := hpConnect(t, p.URL, hpVersion, nil)
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":91,"method":"tools/call","Method":"ping","params":{"name":"delete_branch","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":92,"method":"tools/call","params":{"name":"delete_branch","Name":"read_file","arguments":{"path":"/srv/a"}}}`,
		`{"jsonrpc":"2.0","id":93,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a"},"arguments":{"path":"/etc"}}}`,
		`{"jsonrpc":"2.0","id":94,"method":"ping","\u006dethod":"tools/call","params":{"name":"delete_branch"}}`,
		`{"jsonrpc":"2.0","id":95,"method":"tools/call","params":{"name":"read_file","argumentſ":{}}}`,
	} {
		status, out := hpPost(t, p.URL, body, hdrSession, cs.ID(), hdrProtocol, hpVersion)
		if status != http.StatusBadRequest || !strings.Contains(out, `"code":-32600`) {
			t.Errorf("%s: got %d %s, want 400 with -32600", body, status, out)
		}
	}
	if got := up.toolPosts.Load(); got != 0 {
		t.Errorf("tools/call POSTs that reached the server: got %d, want 0", got)
	}
}

func TestExactNames(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		call bool
		want bool
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1,"X":2}}}`, true, true},
		{`{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":"a","Name":"b"}}`, false, true}, // not a call: params unread
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`, true, false},
		{`{"jsonrpc":"2.0","ID":1,"method":"x"}`, false, false},
		{`{"jsonrpc":"2.0","id":1,"method":"x","extra":1,"EXTRA":2}`, false, false},
		{`{"jsonrpc":"2.0","id":1,"method":"x","_meta":{},"ſ":1,"s":2}`, false, false},
		{`{"jsonrpc":"2.0","id":1,"method":"x","p\"q":1}`, false, true},
		{`{"jsonrpc":"2.0","method":"x","params":[1,2]}`, true, true},
		{`{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`, false, false},
		{`{"jsonrpc":"2.0","id":1,"\u0069d":2,"method":"x"}`, false, false},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`, true, false},
		{`{"id":1,"jsonrpc":"2.0","Id":3,"method":"x"}`, false, false},
		{`{"Id":3,"jsonrpc":"2.0","id":1,"method":"x"}`, false, false},
		{`{"jsonrpc":"2.0","id":1,"method":"x","result":1,"error":2,"params":{}}`, false, true},
	} {
		if got := exactNames([]byte(tt.msg), tt.call); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.msg, got, tt.want)
		}
	}
	// Many names go through a map: the same answers.
	var b strings.Builder
	b.WriteString(`{"jsonrpc":"2.0","id":1,"method":"x"`)
	for i := range 40 {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	many := b.String()
	if !exactNames([]byte(many+`}`), false) || exactNames([]byte(many+`,"K39":1}`), false) || exactNames([]byte(many+`,"ſ":1,"S":2}`), false) {
		t.Error("40 names: wrong answer")
	}
}

// FuzzMembers checks the member scanner against encoding/json: on a valid
// JSON object it reads every member, names in order; on anything it never
// panics.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[1,{"c":"}"}],"d":"\"x"}`, `{"a":tru}`, `[1]`, `{"a" : { } , "b":null}`, `{"a":"\\"}`,
		`{"id":1,"ID":2}`, `{"id":1,"\u0069d":2}`, `{"paramſ":1}`, `{"jsonrpc":"2.0","id":1,"method":"x","params":{}}`, `{"x":1,"X":2,"id":3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var names []string
		ok := members(b, func(name, value []byte) bool {
			names = append(names, string(name))
			return true
		})
		var o callOutcome
		scanAnswer(b, &o)
		exactNames(b, true)
		if !json.Valid(b) || !isObject(b) {
			return
		}
		if !ok {
			t.Fatalf("%q: valid object not read", b)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.Token() // {
		var want []string
		for dec.More() {
			tok, _ := dec.Token()
			var raw json.RawMessage
			dec.Decode(&raw)
			want = append(want, tok.(string))
		}
		if len(names) != len(want) {
			t.Fatalf("%q: names %q, want %q", b, names, want)
		}
		for i, n := range names {
			var s string
			json.Unmarshal([]byte(`"`+n+`"`), &s)
			if s != want[i] {
				t.Fatalf("%q: names %q, want %q", b, names, want)
			}
		}
		if got, ref := exactNames(b, false), exactNamesReference(want); got != ref {
			t.Fatalf("%q: exactNames %v, want %v (names %q)", b, got, ref, want)
		}
	})
}

// TestKnownNames: distinctNames keeps a bit per known name and relies on
// no two known names being equal ignoring case.
func TestKnownNames(t *testing.T) {
	for _, known := range [][]string{envelopeNames, callNames} {
		if len(known) > 64 {
			t.Errorf("%d known names, distinctNames has bits for 64", len(known))
		}
		for i, a := range known {
			for _, b := range known[:i] {
				if strings.EqualFold(a, b) {
					t.Errorf("known names %q and %q are equal ignoring case", a, b)
				}
			}
		}
	}
}

// exactNamesReference is exactNames of a message (not a call) whose member
// names, unescaped, are names, by the definition: no two equal ignoring
// case, none equal ignoring case to an envelope name it is not.
func exactNamesReference(names []string) bool {
	for i, n := range names {
		for _, m := range names[:i] {
			if strings.EqualFold(n, m) {
				return false
			}
		}
		for _, k := range envelopeNames {
			if n != k && strings.EqualFold(n, k) {
				return false
			}
		}
	}
	return true
}

// holdReadFile decides as hold mode does for read_file calls: held, with
// "waiting for a person" as progress (through the reporter the call is
// decided with, as Policy does), until release gives the outcome. Other
// tools are allowed.
func holdReadFile(release <-chan Verdict) func(context.Context, *bundles.Input) Verdict {
	return func(ctx context.Context, in *bundles.Input) Verdict {
		if in.Tool != "read_file" {
			return Verdict{Allow: true}
		}
		report := progressFrom(ctx)
		return Verdict{Message: "held", Hold: func(ctx context.Context) Verdict {
			if report != nil {
				report("waiting for a person")
			}
			return <-release
		}}
	}
}

// TestHTTPHold: a call held for approval waits in its POST, reports
// progress on an event stream the proxy opens, then runs or is denied.
func TestHTTPHold(t *testing.T) {
	up := newUpServer(t, false)
	release := make(chan Verdict)
	p := newHPProxy(t, up.URL, holdReadFile(release), nil)
	cs, ev := hpConnect(t, p.URL, hpVersion, nil)
	for _, tt := range []struct {
		outcome Verdict
		want    string
		isError bool
	}{
		{Verdict{Allow: true, Done: func(bool) {}}, "read /srv/a", false},
		{Verdict{Message: "a person said no", Rule: "r"}, "a person said no", true},
	} {
		params := &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/a"}}
		params.SetProgressToken("hold-1")
		type result struct {
			res *mcp.CallToolResult
			err error
		}
		got := make(chan result, 1)
		go func() {
			res, err := cs.CallTool(context.Background(), params)
			got <- result{res, err}
		}()
		select {
		case pn := <-ev.progress:
			if pn.ProgressToken != "hold-1" || pn.Message != "waiting for a person" {
				t.Errorf("progress: got %+v", pn)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no progress while the call is held")
		}
		release <- tt.outcome
		r := <-got
		if r.err != nil || r.res.IsError != tt.isError || upResultText(r.res) != tt.want {
			t.Errorf("after the hold: got %+v, %v; want %q (isError %v)", r.res, r.err, tt.want, tt.isError)
		}
	}
	if got := up.toolPosts.Load(); got != 1 {
		t.Errorf("tools/call POSTs that reached the server: got %d, want 1", got)
	}
}

// TestHTTPHoldUpstreamRefuses: a call held for approval, then allowed, that
// the server refuses with an error status is rolled back, as it is when not
// held (from review: the held path used to count it).
func TestHTTPHoldUpstreamRefuses(t *testing.T) {
	for _, tt := range []struct {
		status int
		done   bool
	}{{http.StatusForbidden, false}, {http.StatusGatewayTimeout, true}} {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no", tt.status)
			}))
			defer refuse.Close()
			done := make(chan bool, 4)
			release := make(chan Verdict, 1)
			release <- Verdict{Allow: true, Done: func(ok bool) { done <- ok }}
			p := newHPProxy(t, refuse.URL, holdReadFile(release), nil)
			status, body := hpPost(t, p.URL, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_file","arguments":{},"_meta":{"progressToken":"h"}}}`)
			if status != http.StatusOK || !strings.Contains(body, "waiting for a person") || !strings.Contains(body, "HTTP "+strconv.Itoa(tt.status)) {
				t.Fatalf("got %d %s, want an event stream with the progress, then the server's refusal", status, body)
			}
			select {
			case ok := <-done:
				if ok != tt.done {
					t.Errorf("Done(%v), want Done(%v)", ok, tt.done)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Done never called")
			}
		})
	}
}

// TestHTTPClientLeavingIsNoUpstreamError: a client that closes the server's
// GET event stream is no failure of the server; the server breaking its
// stream is one.
func TestHTTPClientLeavingIsNoUpstreamError(t *testing.T) {
	breakStream, stop := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, ": hello\n\n")
		w.(http.Flusher).Flush()
		select { // the stream stays open, whoever leaves, until it breaks
		case <-stop:
		case <-breakStream:
			panic(http.ErrAbortHandler) // the connection drops mid-stream
		}
	}))
	defer up.Close()
	defer close(stop)
	var failures atomic.Int64
	p := newHPProxy(t, up.URL, nil, func(h *HTTP) { h.UpstreamError = func() { failures.Add(1) } })
	open := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, p.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != ": hello\n" {
			t.Fatalf("GET stream: %q, %v", line, err)
		}
		return resp
	}
	resp := open()
	resp.Body.Close() // the client leaves
	time.Sleep(time.Second)
	if n := failures.Load(); n != 0 {
		t.Errorf("a client closing its GET stream counted %d upstream failure(s), want 0", n)
	}
	resp = open()
	defer resp.Body.Close()
	close(breakStream)
	io.Copy(io.Discard, resp.Body)
	deadline := time.Now().Add(2 * time.Second)
	for failures.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := failures.Load(); n != 1 {
		t.Errorf("the server breaking its stream counted %d upstream failure(s), want 1", n)
	}
}

// TestHTTPAnsweredStreamIsNoUpstreamError: a call answered on its event
// stream is no failure even when the server keeps the stream open past the
// call timeout; a watched call whose stream ends without its answer is one.
func TestHTTPAnsweredStreamIsNoUpstreamError(t *testing.T) {
	stop := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		if bytes.Contains(body, []byte(`"id":1`)) {
			io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n")
		}
		w.(http.Flusher).Flush()
		if bytes.Contains(body, []byte(`"id":1`)) {
			select { // answered; the stream stays open
			case <-stop:
			case <-r.Context().Done():
			}
		}
	}))
	defer up.Close()
	defer close(stop)
	var failures atomic.Int64
	allow := func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }
	p := newHPProxy(t, up.URL, allow, func(h *HTTP) {
		h.CallTimeout = 200 * time.Millisecond
		h.UpstreamError = func() { failures.Add(1) }
	})
	if status, body := hpPost(t, p.URL, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}`); status != 200 || !strings.Contains(body, `"result"`) {
		t.Fatalf("answered call: %d %s", status, body)
	}
	time.Sleep(300 * time.Millisecond)
	if n := failures.Load(); n != 0 {
		t.Errorf("a call answered on a stream that outlived the call timeout counted %d upstream failure(s), want 0", n)
	}
	hpPost(t, p.URL, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{}}}`)
	if n := failures.Load(); n != 1 {
		t.Errorf("a call whose stream ended without its answer counted %d upstream failure(s), want 1", n)
	}
}

// TestHTTPBodyCharset: the proxy reads every POST body as UTF-8 JSON, so
// the server must too. A body declared in another charset (UTF-7 can hide
// a second method member in what UTF-8 reads as a string) or media type
// is refused with 415 and never reaches the server; an accepted one goes
// on as application/json whatever parameters the client gave.
func TestHTTPBodyCharset(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Content-Types the server got
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Content-Type"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":7,"result":{}}`)
	}))
	defer up.Close()
	p := newHPProxy(t, up.URL, nil, nil)
	smuggled := `{"jsonrpc":"2.0","id":7,"method":"ping","params":{"name":"delete_repo"},"x":"+ACIALAAiAG0AZQB0AGgAbwBkACIAOgAiAHQAbwBvAGwAcwAvAGMAYQBsAGwAIgAsACIAeQAiADoAIg-"}`
	for _, tc := range []struct {
		ct   string
		want int
	}{
		{"application/json; charset=utf-7", http.StatusUnsupportedMediaType},
		{"application/json;charset=UTF-16", http.StatusUnsupportedMediaType},
		{"text/plain", http.StatusUnsupportedMediaType},
		{"application/json; charset=", http.StatusUnsupportedMediaType},
		{"application/json; charset=UTF-8", http.StatusOK},
		{"application/json", http.StatusOK},
		{"", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodPost, p.URL, strings.NewReader(smuggled))
		if tc.ct != "" {
			req.Header.Set("Content-Type", tc.ct)
		}
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Content-Type %q: status %d (%s), want %d", tc.ct, resp.StatusCode, body, tc.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"application/json", "application/json", "application/json"}; !slices.Equal(seen, want) {
		t.Errorf("the server got Content-Types %q, want %q (three accepted POSTs, each as UTF-8 JSON)", seen, want)
	}
}

// TestHTTPHiddenToolOddID: a tools/list whose id the server echoes
// decoded (1.0 as 1, "\u0061" as "a") is still filtered.
func TestHTTPHiddenToolOddID(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		p := newHPProxy(t, up.URL, nil, nil)
		cs, _ := hpConnect(t, p.URL, hpVersion, nil)
		defer cs.Close()
		for _, id := range []string{`1.0`, `"\u0061"`, `7e0`} {
			req, _ := http.NewRequest(http.MethodPost, p.URL, strings.NewReader(`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/list"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Session-Id", cs.ID())
			req.Header.Set("MCP-Protocol-Version", hpVersion)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "read_file") || strings.Contains(string(body), "delete_everything") {
				t.Errorf("tools/list with id %s: %s, want the tools but the hidden one", id, body)
			}
		}
	})
}

// TestHTTPGetReplayFiltered: a GET stream may replay an answer already
// given (Last-Event-ID): an answer carrying a tools list is filtered there
// too.
func TestHTTPGetReplayFiltered(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "only GET here", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "id: 3\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"delete_everything\"},{\"name\":\"read_file\"}]}}\n\n")
		io.WriteString(w, "id: 4\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"tools\"}}\n\n")
	}))
	defer up.Close()
	p := newHPProxy(t, up.URL, nil, nil)
	req, _ := http.NewRequest(http.MethodGet, p.URL, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", "s-1")
	req.Header.Set("Last-Event-ID", "2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "read_file") || strings.Contains(string(body), "delete_everything") || !strings.Contains(string(body), "notifications/message") {
		t.Fatalf("GET stream: %s, want the replayed tools list without the hidden tool, and the notification", body)
	}
}
