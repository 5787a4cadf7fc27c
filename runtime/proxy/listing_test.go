package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// annotationsSeen records the annotations each call was decided with, by
// tool.
type annotationsSeen struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (a *annotationsSeen) decide(_ context.Context, in *bundles.Input) Verdict {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[string][]string{}
	}
	a.seen[in.Tool] = append(a.seen[in.Tool], string(in.Annotations))
	return Verdict{Allow: true}
}

func (a *annotationsSeen) of(tool string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen[tool]...)
}

// Over Streamable HTTP the proxy lists the tools of a session whose client
// did not, once for concurrent calls, with the session's headers (the
// go-sdk server refuses a POST outside its session), from JSON answers and
// event streams alike.
func TestHTTPListsToolsForAnnotations(t *testing.T) {
	hpModes(t, func(t *testing.T, jsonResponse bool) {
		up := newUpServer(t, jsonResponse)
		var seen annotationsSeen
		p := newHPProxy(t, up.URL, seen.decide, func(h *HTTP) {
			h.Enforcer.ReadsAnnotations = func() bool { return true }
		})
		cs, _ := hpConnect(t, p.URL, hpVersion, nil)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if res, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/x"}); err != nil || res.IsError {
					t.Errorf("read_file: %v %+v", err, res)
				}
			}()
		}
		wg.Wait()
		if _, err := hpCall(t, cs, "delete_branch", map[string]any{"path": "b"}); err != nil {
			t.Fatal(err)
		}
		for _, got := range seen.of("read_file") {
			if !strings.Contains(got, `"readOnlyHint":true`) {
				t.Errorf("read_file decided with annotations %q, want the server's", got)
			}
		}
		if n := len(seen.of("read_file")); n != 4 {
			t.Errorf("read_file decided %d times, want 4", n)
		}
		if got := up.listPosts.Load(); got != 1 {
			t.Errorf("tools/list POSTs the server got: %d, want 1", got)
		}
	})
}

// The stdio-to-HTTP bridge lists too, and a session without annotations
// needs no listing when the policy reads none.
func TestBridgeListsToolsForAnnotations(t *testing.T) {
	for _, reads := range []bool{true, false} {
		up := newUpServer(t, false)
		var seen annotationsSeen
		hb := newHPBridge(t, up.URL, seen.decide, func(b *Bridge) {
			b.Enforcer.ReadsAnnotations = func() bool { return reads }
		})
		cs, _ := hb.connect(t, hpVersion)
		if _, err := hpCall(t, cs, "read_file", map[string]any{"path": "/srv/x"}); err != nil {
			t.Fatal(err)
		}
		got := seen.of("read_file")
		switch {
		case reads && (len(got) != 1 || !strings.Contains(got[0], `"readOnlyHint":true`)):
			t.Errorf("policy reading annotations: read_file decided with %q, want the server's", got)
		case !reads && (len(got) != 1 || got[0] != ""):
			t.Errorf("policy reading none: read_file decided with %q, want none", got)
		}
		if n, want := up.listPosts.Load(), map[bool]int64{true: 1, false: 0}[reads]; n != want {
			t.Errorf("reads=%v: tools/list POSTs %d, want %d", reads, n, want)
		}
	}
}

// An HTTP listing the server does not answer in time fails the call with
// a JSON-RPC error, and the call never reaches the server.
func TestHTTPListingTimesOut(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"tools/call"`)) {
			calls.Add(1)
		}
		if bytes.Contains(body, []byte(`"tools/list"`)) {
			select { // hang
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer up.Close()
	var seen annotationsSeen
	p := newHPProxy(t, up.URL, seen.decide, func(h *HTTP) {
		h.Enforcer.ReadsAnnotations = func() bool { return true }
		h.CallTimeout = 100 * time.Millisecond
	})
	resp, err := http.Post(p.URL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"id":7`) || !strings.Contains(string(body), "-32000") || !strings.Contains(string(body), "did not answer the proxy's tools/list within 100ms") {
		t.Fatalf("got %s, want call 7 failed for want of the listing", body)
	}
	if calls.Load() != 0 || len(seen.of("x")) != 0 {
		t.Fatal("the call was decided or forwarded without the listing")
	}
}

// A listing refused with 404 (the server ended the session, or never had
// it) answers the call with 404, as a forwarded call would, so that the
// client starts a new session, and the id is not tracked; a session the
// server knows but the proxy does not (it restarted) is listed once, then
// tracked.
func TestHTTPListingUntrackedSessions(t *testing.T) {
	var lists atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(hdrSession) != "known" {
			http.Error(w, "no such session", http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage
			Method string
		}
		json.Unmarshal(body, &m)
		w.Header().Set("Content-Type", "application/json")
		if m.Method == "tools/list" {
			lists.Add(1)
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"tools":[{"name":"x","annotations":{"readOnlyHint":true}}]}}`)
			return
		}
		io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"content":[]}}`)
	}))
	defer up.Close()
	var seen annotationsSeen
	p := newHPProxy(t, up.URL, seen.decide, func(h *HTTP) {
		h.Enforcer.ReadsAnnotations = func() bool { return true }
		h.CallTimeout = 2 * time.Second
	})
	post := func(sid string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, p.URL, strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(hdrSession, sid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	before := p.h.Sessions()
	if resp := post("made-up"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("listing refused with 404: the call got HTTP %d, want 404", resp.StatusCode)
	}
	if got := p.h.Sessions(); got != before {
		t.Errorf("sessions tracked: %d after a made-up session id, want %d", got, before)
	}
	for range 2 {
		if resp := post("known"); resp.StatusCode != http.StatusOK {
			t.Fatalf("call in a session the server knows: HTTP %d", resp.StatusCode)
		}
	}
	if got := seen.of("x"); len(got) != 2 || !strings.Contains(got[0], "readOnlyHint") || !strings.Contains(got[1], "readOnlyHint") {
		t.Errorf("calls in an untracked session: decided with %q, want the listed annotations", got)
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("tools/list POSTs: %d, want 1 (the session tracked after it)", n)
	}
	if got := p.h.Sessions(); got != before+1 {
		t.Errorf("sessions tracked: %d, want %d", got, before+1)
	}
}

// A listing the server's list_changed overtakes starts over; one it keeps
// overtaking fails.
func TestListPagesRestarts(t *testing.T) {
	for _, changes := range []int{1, MaxListRestarts + 1} {
		var cat Catalog
		posts := 0
		post := func(ctx context.Context, body []byte) (*http.Response, error) {
			posts++
			if posts <= changes {
				cat.Stale() // the server's tools changed while it answered
			}
			var m struct{ ID json.RawMessage }
			json.Unmarshal(body, &m)
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", "application/json")
			io.WriteString(rec, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"tools":[{"name":"t`+strconv.Itoa(posts)+`"}]}}`)
			return rec.Result(), nil
		}
		_, err := listPages(context.Background(), &cat, post, 1<<20)
		switch {
		case changes <= MaxListRestarts && (err != nil || posts != changes+1 || !cat.complete.Load()):
			t.Errorf("%d changes: err %v after %d posts, complete %v; want it listed on try %d", changes, err, posts, cat.complete.Load(), changes+1)
		case changes <= MaxListRestarts && (len(cat.tools) != 1 || cat.tools["t"+strconv.Itoa(changes+1)].name == ""):
			t.Errorf("%d changes: catalog %v, want only the last listing's tool", changes, cat.tools)
		case changes > MaxListRestarts && !errors.Is(err, errListKeptChanging):
			t.Errorf("%d changes: err %v, want %v", changes, err, errListKeptChanging)
		}
	}
}

// A server whose cursors never end is read for MaxToolPages pages, no
// more; what it listed counts. Without a call timeout a listing has
// DefaultListTimeout.
func TestListPagesBounded(t *testing.T) {
	var cat Catalog
	posts := 0
	post := func(ctx context.Context, body []byte) (*http.Response, error) {
		posts++
		var m struct{ ID json.RawMessage }
		json.Unmarshal(body, &m)
		rec := httptest.NewRecorder()
		rec.Header().Set("Content-Type", "application/json")
		io.WriteString(rec, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"tools":[{"name":"t`+strconv.Itoa(posts)+`"}],"nextCursor":"more"}}`)
		return rec.Result(), nil
	}
	if n, err := listPages(context.Background(), &cat, post, 1<<20); err != nil || n != MaxToolPages || posts != MaxToolPages || len(cat.tools) != MaxToolPages || !cat.complete.Load() {
		t.Fatalf("err %v after %d posts, %d tools, complete %v; want %d pages read and the listing complete", err, posts, len(cat.tools), cat.complete.Load(), MaxToolPages)
	}
	if got := listTimeout(0); got != DefaultListTimeout {
		t.Errorf("listing time without a call timeout: %v, want %v", got, DefaultListTimeout)
	}
	if got := listTimeout(time.Second); got != time.Second {
		t.Errorf("listing time with a 1s call timeout: %v", got)
	}
}

// Over HTTP and the bridge, a client's own whole listing completes the
// session's catalog: a call to a tool it did not list needs no listing of
// the proxy's own.
func TestClientListingCompletesHTTP(t *testing.T) {
	up := newUpServer(t, false)
	var seen annotationsSeen
	p := newHPProxy(t, up.URL, seen.decide, func(h *HTTP) { h.Enforcer.ReadsAnnotations = func() bool { return true } })
	cs, _ := hpConnect(t, p.URL, hpVersion, nil)
	if _, err := cs.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	hpCall(t, cs, "no_such_tool", map[string]any{})
	if n := up.listPosts.Load(); n != 1 {
		t.Errorf("HTTP: tools/list POSTs %d, want 1 (the client's)", n)
	}

	up2 := newUpServer(t, false)
	hb := newHPBridge(t, up2.URL, seen.decide, func(b *Bridge) { b.Enforcer.ReadsAnnotations = func() bool { return true } })
	bs, _ := hb.connect(t, hpVersion)
	if _, err := bs.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	hpCall(t, bs, "no_such_tool", map[string]any{})
	if n := up2.listPosts.Load(); n != 1 {
		t.Errorf("bridge: tools/list POSTs %d, want 1 (the client's)", n)
	}
	if got := seen.of("no_such_tool"); len(got) != 2 {
		t.Errorf("no_such_tool decided %d times, want 2", len(got))
	}
}

// A listing is logged with what it read; a failed one is logged and
// counted as an upstream failure.
func TestAwaitListingLogs(t *testing.T) {
	for _, fail := range []bool{false, true} {
		var cat Catalog
		var logs bytes.Buffer
		var failures atomic.Int64
		post := func(ctx context.Context, body []byte) (*http.Response, error) {
			var m struct{ ID json.RawMessage }
			json.Unmarshal(body, &m)
			rec := httptest.NewRecorder()
			if fail {
				rec.WriteHeader(http.StatusBadGateway)
				return rec.Result(), nil
			}
			rec.Header().Set("Content-Type", "application/json")
			io.WriteString(rec, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"tools":[{"name":"a"},{"name":"b"}]}}`)
			return rec.Result(), nil
		}
		ls := &lister{timeout: time.Second, post: post, maxBody: 1 << 20, log: slog.New(slog.NewJSONHandler(&logs, nil)), count: func() { failures.Add(1) }}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() { defer wg.Done(); awaitListing(context.Background(), &cat, ls) }()
		}
		wg.Wait()
		out := logs.String()
		switch {
		case !fail && (!strings.Contains(out, `"msg":"listed the MCP server's tools","tools":2`) || failures.Load() != 0):
			t.Errorf("listing: log %q, %d failures counted", out, failures.Load())
		case fail && (strings.Count(out, "listing the MCP server's tools failed") < 1 || failures.Load() < 1):
			t.Errorf("failed listing: log %q, %d failures counted", out, failures.Load())
		}
	}
}

// A server that asks the client something on the proxy's own listing
// stream gets a JSON-RPC error back at once, and the listing goes on.
func TestListingRefusesServerRequests(t *testing.T) {
	var mu sync.Mutex
	var answered []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage
			Method string
			Error  *struct{ Code int }
		}
		json.Unmarshal(body, &m)
		if m.Method == "" { // the proxy's answer to the server's request
			mu.Lock()
			answered = append(answered, string(body))
			mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"roots/list\"}\n\n")
		w.(http.Flusher).Flush()
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			n := len(answered)
			mu.Unlock()
			if n > 0 {
				break
			}
		}
		io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":"+string(m.ID)+",\"result\":{\"tools\":[{\"name\":\"a\"}]}}\n\n")
	}))
	defer up.Close()
	var cat Catalog
	post := func(ctx context.Context, body []byte) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL, bytes.NewReader(body))
		return http.DefaultClient.Do(req)
	}
	if n, err := listPages(context.Background(), &cat, post, 1<<20); err != nil || n != 1 {
		t.Fatalf("listing: %d tools, %v", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(answered) != 1 || !strings.Contains(answered[0], `"id":"s1"`) || !strings.Contains(answered[0], "-32000") {
		t.Fatalf("answers to the server's request: %q, want one JSON-RPC error for s1", answered)
	}
}
