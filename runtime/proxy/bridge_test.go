package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bundles"
)

// hpBridge runs a Bridge over in-memory pipes; the test plays the stdio
// client, with the go-sdk client or by hand.
type hpBridge struct {
	hpRecorder
	b        *Bridge
	in       *io.PipeWriter // what the client sends
	out      *io.PipeReader // what the bridge sends the client
	lines    *bufio.Reader  // out, for tests that read by hand
	finished chan error
}

func newHPBridge(t testing.TB, upstream string, decide func(context.Context, *bundles.Input) Verdict, configure func(*Bridge)) *hpBridge {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	hb := &hpBridge{finished: make(chan error, 1)}
	hb.b = &Bridge{
		Enforcer: hb.enforcer(t, decide),
		Upstream: u,
		Identity: bundles.Identity{Subject: "alice", Groups: []string{"eng"}},
		Logger:   upQuiet,
	}
	if configure != nil {
		configure(hb.b)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	hb.in, hb.out, hb.lines = inW, outR, bufio.NewReader(outR)
	go func() {
		err := hb.b.Run(context.Background(), inR, outW)
		outW.Close()
		hb.finished <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		outR.CloseWithError(io.ErrClosedPipe)
		select {
		case <-hb.finished:
		case <-time.After(10 * time.Second):
			t.Error("the bridge did not end after its input did")
		}
	})
	return hb
}

// connect connects the go-sdk client to the bridge.
func (hb *hpBridge) connect(t testing.TB, version string) (*mcp.ClientSession, *hpClientEvents) {
	t.Helper()
	return hpConnectWith(t, &mcp.IOTransport{Reader: hb.out, Writer: hb.in}, version)
}

// send writes a line as the client, and get reads one.
func (hb *hpBridge) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(hb.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func (hb *hpBridge) get(t testing.TB) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		l, _ := hb.lines.ReadString('\n')
		got <- strings.TrimSuffix(l, "\n")
	}()
	select {
	case l := <-got:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no line from the bridge")
		return ""
	}
}

func TestBridgeAllowDenyHidden(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		hb := newHPBridge(t, up.URL, nil, nil)
		cs, _ := hb.connect(t, hpVersion)

		res, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
		}
		if got := strings.Join(names, ","); strings.Contains(got, "delete_everything") || !strings.Contains(got, "read_file") {
			t.Fatalf("tools/list: got %s, want every tool but delete_everything", got)
		}

		call, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"})
		if err != nil || call.IsError || upResultText(call) != "read /srv/a" {
			t.Fatalf("allowed call: got %v, %v", call, err)
		}
		hb.waitDone(t, "read_file", true)
		call, err = hpCall(t, cs, "delete_branch", map[string]any{"path": "main"})
		if err != nil {
			t.Fatal(err)
		}
		if got := call.Meta["toolgate/rule"]; !call.IsError || got != "policies/bench.yaml#delete_branch/never" {
			t.Errorf("denied call: got %q, rule %v", upResultText(call), got)
		}
		if got := up.toolPosts.Load(); got != 1 {
			t.Errorf("tools/call POSTs that reached the server: got %d, want 1", got)
		}
		if _, err := hpCall(t, cs, "fail", nil); err == nil {
			t.Error("fail: want the server's JSON-RPC error")
		}
		hb.waitDone(t, "fail", false)

		if err := cs.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-hb.finished:
			hb.finished <- err // for the cleanup
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after the client closed")
		}
		if got := up.deletes.Load(); got != 1 {
			t.Errorf("DELETEs: got %d, want 1 (the bridge ends the session)", got)
		}
	})
}

func TestBridgeServerMessages(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		hb := newHPBridge(t, up.URL, nil, nil)
		cs, ev := hb.connect(t, hpVersion)

		params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 3}}
		params.SetProgressToken(7)
		res, err := cs.CallTool(context.Background(), params)
		if err != nil || upResultText(res) != "3 steps" {
			t.Fatalf("slow: got %v, %v", res, err)
		}
		if !jsonResponse {
			for i := 1; i <= 3; i++ {
				select {
				case pn := <-ev.progress:
					if pn.Progress != float64(i) {
						t.Errorf("progress %d: got %+v", i, pn)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("progress notification %d did not come through", i)
				}
			}
		}
		// Sampling: the server's request rides the call's event stream, or
		// (JSON answers) the GET stream; the client's answer is POSTed.
		res, err = hpCall(t, cs, "ask", nil)
		if err != nil || upResultText(res) != "model said hi" {
			t.Fatalf("ask: got %v, %v", res, err)
		}
		// A notification outside any request comes on the GET stream.
		if err := cs.Subscribe(context.Background(), &mcp.SubscribeParams{URI: "file:///srv/log"}); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(5 * time.Second)
		for got := false; !got; {
			up.mcp.ResourceUpdated(context.Background(), &mcp.ResourceUpdatedNotificationParams{URI: "file:///srv/log"})
			select {
			case <-ev.updated:
				got = true
			case <-time.After(100 * time.Millisecond):
			case <-deadline:
				t.Fatal("the resource update did not come through")
			}
		}
		if up.gets.Load() == 0 {
			t.Error("the bridge opened no GET stream")
		}
	})
}

func TestBridgeCallTimeout(t *testing.T) {
	up := newUpServer(t, false)
	const timeout = 300 * time.Millisecond
	hb := newHPBridge(t, up.URL, nil, func(b *Bridge) { b.CallTimeout = timeout })
	cs, _ := hb.connect(t, hpVersion)
	start := time.Now()
	_, err := hpCall(t, cs, "slow", map[string]any{"steps": 1, "hang": true})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != codeUpstreamGone || !strings.Contains(werr.Message, "did not answer within 300ms") {
		t.Fatalf("got %v, want a -32000 timeout error", err)
	}
	if elapsed := time.Since(start); elapsed > timeout+2*time.Second {
		t.Errorf("the error came after %v", elapsed)
	}
	hb.waitDone(t, "slow", true) // the server got the call: it counts
	if res, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"}); err != nil || upResultText(res) != "read /srv/a" {
		t.Fatalf("after the timeout: got %v, %v", res, err)
	}
}

func TestBridgeByHand(t *testing.T) {
	allow := func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }
	t.Run("upstream down", func(t *testing.T) {
		hb := newHPBridge(t, hpDeadURL(t), allow, nil)
		hb.send(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}`)
		if got, want := hb.get(t), `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"the MCP server could not be reached"}}`; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		hb.waitDone(t, "read_file", false)
	})
	for _, tt := range []struct {
		status int
		done   bool // a gateway's timeout counts; a refusal rolls back
	}{{http.StatusGatewayTimeout, true}, {http.StatusBadGateway, true}, {http.StatusServiceUnavailable, false}, {http.StatusForbidden, false}} {
		t.Run(fmt.Sprintf("upstream %d", tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no", tt.status)
			}))
			defer srv.Close()
			hb := newHPBridge(t, srv.URL, allow, nil)
			hb.send(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}`)
			if got, want := hb.get(t), fmt.Sprintf(`"the MCP server answered HTTP %d`, tt.status); !strings.Contains(got, want) {
				t.Errorf("got %s, want %s", got, want)
			}
			hb.waitDone(t, "read_file", tt.done)
		})
	}
	t.Run("malformed", func(t *testing.T) {
		hb := newHPBridge(t, hpDeadURL(t), allow, func(b *Bridge) { b.MaxLine = 100 })
		for _, tt := range []struct{ send, want string }{
			{`{"jsonrpc":`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: not a JSON object"}}`},
			{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":1}}`, `{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"tools/call needs params with a string name"}}`},
			{`{"x":"` + strings.Repeat("a", 200) + `"}`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"message longer than 100 bytes"}}`},
		} {
			hb.send(t, tt.send)
			if got := hb.get(t); got != tt.want {
				t.Errorf("%.30s: got %s, want %s", tt.send, got, tt.want)
			}
		}
	})
	t.Run("denied", func(t *testing.T) {
		up := newUpServer(t, false)
		hb := newHPBridge(t, up.URL, func(context.Context, *bundles.Input) Verdict {
			return Verdict{Message: "no", Rule: "r", DecisionID: "d", Bundle: "sha256:b"}
		}, func(b *Bridge) { b.Enforcer.DenyAsError = true })
		hb.send(t, `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"read_file"}}`)
		if got, want := hb.get(t), `{"jsonrpc":"2.0","id":"a","error":{"code":`+fmt.Sprint(CodeDenied)+`,"message":"no","data":{"decision_id":"d","rule":"r","bundle":"sha256:b"}}}`; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if up.toolPosts.Load() != 0 {
			t.Error("the denied call reached the server")
		}
	})
}

// TestBridgeLatestProtocol lets the go-sdk client try its newest protocol
// version over stdio.
func TestBridgeLatestProtocol(t *testing.T) {
	up := newUpServer(t, false)
	hb := newHPBridge(t, up.URL, nil, nil)
	cs, _ := hb.connect(t, "")
	if res, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/a"}); err != nil || upResultText(res) != "read /srv/a" {
		t.Fatalf("allowed call: got %v, %v", res, err)
	}
	if res, err := hpCall(t, cs, "delete_branch", nil); err != nil || !res.IsError {
		t.Fatalf("denied call: got %v, %v", res, err)
	}
}

func TestBridgeAmbiguousNames(t *testing.T) {
	up := newUpServer(t, false)
	hb := newHPBridge(t, up.URL, nil, nil)
	hb.send(t, `{"jsonrpc":"2.0","id":91,"method":"tools/call","Method":"ping","params":{"name":"delete_branch","arguments":{}}}`)
	if got := hb.get(t); !strings.Contains(got, `"id":91,"error":{"code":-32600`) {
		t.Errorf("got %s, want a -32600 error", got)
	}
	if up.toolPosts.Load() != 0 {
		t.Error("the ambiguous call reached the server")
	}
}

func TestBridgeHold(t *testing.T) {
	up := newUpServer(t, false)
	release := make(chan Verdict)
	hb := newHPBridge(t, up.URL, holdReadFile(release), nil)
	cs, ev := hb.connect(t, hpVersion)
	params := &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/a"}}
	params.SetProgressToken("hold-1")
	got := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, err := cs.CallTool(context.Background(), params)
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	select {
	case pn := <-ev.progress:
		if pn.Message != "waiting for a person" {
			t.Errorf("progress: got %+v", pn)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no progress while the call is held")
	}
	// The client's other messages go on while the call is held.
	if res, err := hpCall(t, cs, "slow", nil); err != nil || upResultText(res) != "0 steps" {
		t.Fatalf("a call while another is held: got %v, %v", res, err)
	}
	release <- Verdict{Allow: true}
	if res := <-got; res == nil || upResultText(res) != "read /srv/a" {
		t.Errorf("after the hold: got %+v", res)
	}
}

// TestBridgeResumesAnswerStream: a server that closes a call's event stream
// before the response (the go-sdk server with an event store, its tool
// asking for the disconnect as protocol 2025-11-25 allows) has it resumed
// by the bridge with a GET carrying Last-Event-ID; the client sees the
// progress and the result, and the call counts. A server that cannot resume
// gets the call answered with an error.
func TestBridgeResumesAnswerStream(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "resumable", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "long_job"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2, Message: "half"})
		}
		req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: 10 * time.Millisecond})
		time.Sleep(50 * time.Millisecond) // the answer comes after the stream closed
		return upText("finished"), nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})
	var resumes atomic.Int64
	var refuse atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Last-Event-ID") != "" {
			resumes.Add(1)
			if refuse.Load() {
				http.Error(w, "no replay here", http.StatusMethodNotAllowed)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // after the bridge's cleanup has ended its GET stream

	hb := newHPBridge(t, srv.URL, func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }, nil)
	cs, ev := hb.connect(t, "2025-11-25")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	params := &mcp.CallToolParams{Name: "long_job", Arguments: map[string]any{}}
	params.SetProgressToken("job-1")
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("the call across a closed stream: %v", err)
	}
	if res.IsError || upResultText(res) != "finished" {
		t.Fatalf("the call across a closed stream: %q", upResultText(res))
	}
	select {
	case p := <-ev.progress:
		if p.Message != "half" {
			t.Errorf("progress %+v", p)
		}
	default:
		t.Error("the progress sent before the stream closed did not arrive")
	}
	if resumes.Load() == 0 {
		t.Error("the answer arrived without a resumed stream: the server did not close it")
	}
	hb.waitDone(t, "long_job", true)

	refuse.Store(true)
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "long_job", Arguments: map[string]any{}})
	if err == nil && !res.IsError {
		t.Fatalf("a stream the server cannot resume: result %q, want an error", upResultText(res))
	}
	if err == nil || !strings.Contains(err.Error(), "without a response") {
		t.Errorf("error %v, want the answer ended without a response", err)
	}
	hb.waitDone(t, "long_job", true, true) // it reached the server: it counts
}

// TestBridgeNewSessionAfterRestart: after the server forgets the session
// (404, as after a restart), the client's new initialize goes without the
// old session id and the new session's id is used from then on.
func TestBridgeNewSessionAfterRestart(t *testing.T) {
	var mu sync.Mutex
	var seen []string // method and session header of each POST
	sessions := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "no GET stream here", http.StatusMethodNotAllowed)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.Unmarshal(body, &m)
		sid := r.Header.Get("Mcp-Session-Id")
		mu.Lock()
		seen = append(seen, m.Method+" "+sid)
		live := fmt.Sprintf("s%d", sessions)
		if m.Method == "initialize" {
			sessions++
			live = fmt.Sprintf("s%d", sessions)
			w.Header().Set("Mcp-Session-Id", live)
		}
		mu.Unlock()
		if m.Method != "initialize" && (sid != live || live == "s1") { // s1 is forgotten: the server restarted
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{}}`, m.ID)
	}))
	defer srv.Close()
	hb := newHPBridge(t, srv.URL, func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }, nil)
	init := `{"jsonrpc":"2.0","id":%d,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	hb.send(t, fmt.Sprintf(init, 1))
	hb.get(t)
	hb.send(t, `{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	if got := hb.get(t); !strings.Contains(got, "404") {
		t.Fatalf("ping in the forgotten session: %s, want an error naming the 404", got)
	}
	hb.send(t, fmt.Sprintf(init, 3))
	hb.get(t)
	hb.send(t, `{"jsonrpc":"2.0","id":4,"method":"ping"}`)
	if got := hb.get(t); got != `{"jsonrpc":"2.0","id":4,"result":{}}` {
		t.Fatalf("ping in the new session: %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"initialize ", "ping s1", "initialize ", "ping s2"}; !slices.Equal(seen[:4], want) {
		t.Fatalf("the server saw %q, want %q", seen, want)
	}
}
