package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// harness runs a Stdio over in-memory pipes: the test plays client and
// server.
type harness struct {
	t          *testing.T
	client     *io.PipeWriter // what the client sends
	toClient   *bufio.Reader  // what the proxy sends the client
	toServer   *bufio.Reader  // what the proxy sends the server
	server     *io.PipeWriter // what the server sends
	clientOutR *io.PipeReader
	serverInR  *io.PipeReader
	done       chan error
	hidden     map[string]bool
	recorder
}

// recorder is the Decide hook of the stdio test harnesses: it keeps a copy
// of each input (Decide must not keep what it is given) and each Done
// outcome, and decides with decide.
type recorder struct {
	mu        sync.Mutex
	decide    func(in *bundles.Input) Verdict
	inputs    []bundles.Input
	doneCalls []bool
}

func (h *recorder) record(_ context.Context, in *bundles.Input) Verdict {
	kept := *in
	kept.Arguments = bytes.Clone(in.Arguments)
	kept.Annotations = bytes.Clone(in.Annotations)
	kept.State = nil
	h.mu.Lock()
	h.inputs = append(h.inputs, kept)
	h.mu.Unlock()
	v := h.decide(in)
	if v.Allow {
		v.Done = func(ok bool) {
			h.mu.Lock()
			h.doneCalls = append(h.doneCalls, ok)
			h.mu.Unlock()
		}
	}
	return v
}

func newHarness(t *testing.T, decide func(in *bundles.Input) Verdict) *harness {
	return newHarnessWith(t, decide, nil)
}

// newHarnessWith is newHarness with a chance to set more fields of the
// Stdio before it runs.
func newHarnessWith(t *testing.T, decide func(in *bundles.Input) Verdict, configure func(*Stdio)) *harness {
	h := &harness{t: t, done: make(chan error, 1), recorder: recorder{decide: decide}, hidden: map[string]bool{}}
	clientInR, clientInW := io.Pipe()
	clientOutR, clientOutW := io.Pipe()
	serverInR, serverInW := io.Pipe()
	serverOutR, serverOutW := io.Pipe()
	h.client, h.server = clientInW, serverOutW
	h.clientOutR, h.serverInR = clientOutR, serverInR
	h.toClient = bufio.NewReaderSize(clientOutR, 1<<20)
	h.toServer = bufio.NewReaderSize(serverInR, 1<<20)
	p := &Stdio{
		Server:   "srv",
		Identity: bundles.Identity{Subject: "alice"},
		Decide:   h.record,
		Hidden:   func(_ context.Context, in *bundles.Input) bool { return h.hidden[in.Tool] },
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	if configure != nil {
		configure(p)
	}
	go func() { h.done <- p.Run(context.Background(), clientInR, clientOutW, serverInW, serverOutR) }()
	t.Cleanup(func() {
		h.client.Close()
		h.clientOutR.CloseWithError(io.ErrClosedPipe)
		h.serverInR.CloseWithError(io.ErrClosedPipe)
		h.server.Close()
		<-h.done
	})
	return h
}

func (h *harness) fromClient(line string) { h.write(h.client, line) }
func (h *harness) fromServer(line string) { h.write(h.server, line) }

func (h *harness) write(w io.Writer, line string) {
	h.t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		h.t.Fatal(err)
	}
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line: %v", err)
	}
	return strings.TrimSuffix(l, "\n")
}

func (h *harness) clientGets() string { h.t.Helper(); return readLine(h.t, h.toClient) }
func (h *harness) serverGets() string { h.t.Helper(); return readLine(h.t, h.toServer) }

func allowAll(*bundles.Input) Verdict { return Verdict{Allow: true} }

func TestPassThroughByteForByte(t *testing.T) {
	h := newHarness(t, allowAll)
	toServer := []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`,
		`{ "method" : "notifications/initialized",   "jsonrpc":"2.0" }`,
		`{"jsonrpc":"2.0","id":"a\u00e9","method":"x/unknown","params":[1, 2,3]}`,
		`{"jsonrpc":"2.0","id":99,"result":{"model":"m","content":{"type":"text","text":"sampled"}}}`, // answer to a server request
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`,
	}
	for _, l := range toServer {
		h.fromClient(l)
		if got := h.serverGets(); got != l {
			t.Errorf("client→server: got %s, want %s", got, l)
		}
	}
	toClient := []string{
		`{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"} }`,
		`{"jsonrpc":"2.0","id":99,"method":"sampling/createMessage","params":{"messages":[]}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":0.5}}`,
		`{"jsonrpc":"2.0","id":"a\u00e9","error":{"code":-32601,"message":"no"}}`,
		`{"jsonrpc":"2.0","id":12345,"result":{}}`, // answers nothing pending: passed on
	}
	for _, l := range toClient {
		h.fromServer(l)
		if got := h.clientGets(); got != l {
			t.Errorf("server→client: got %s, want %s", got, l)
		}
	}
	if len(h.inputs) != 0 {
		t.Errorf("Decide was called %d times for messages that are not tools/call", len(h.inputs))
	}
}

func TestMalformedKeepsServing(t *testing.T) {
	h := newHarness(t, allowAll)
	tests := []struct{ in, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,`},
		{`not json at all`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,`},
		{"\xff\xfe", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,`},
		{`{"jsonrpc":"1.0","id":4,"method":"ping"}`, `{"jsonrpc":"2.0","id":4,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":5,"method":7}`, `{"jsonrpc":"2.0","id":5,"error":{"code":-32600,`},
		{`[{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"x"}}]`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"arguments":{}}}`, `{"jsonrpc":"2.0","id":8,"error":{"code":-32602,`},
		{`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"x","arguments":[1]}}`, `{"jsonrpc":"2.0","id":9,"error":{"code":-32602,`},
	}
	for _, tt := range tests {
		h.fromClient(tt.in)
		if got := h.clientGets(); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%q: got %s, want %s…", tt.in, got, tt.want)
		}
	}
	// An invalid notification gets no answer; the next request still works.
	h.fromClient(`{"jsonrpc":"1.0","method":"notifications/x"}`)
	ping := `{"jsonrpc":"2.0","id":10,"method":"ping"}`
	h.fromClient(ping)
	if got := h.serverGets(); got != ping {
		t.Fatalf("after malformed input: server got %s, want %s", got, ping)
	}
	// Malformed server output is dropped; a broken answer to a pending
	// request becomes an error for the client.
	h.fromServer(`{"broken`)
	h.fromServer(`{"jsonrpc":"2.0","id":10,"result":{},"error":{"code":1,"message":"both"}}`)
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":10,"error":{"code":-32000,`) {
		t.Fatalf("broken server response: got %s", got)
	}
}

func TestLineLimit(t *testing.T) {
	h := newHarness(t, allowAll)
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` +
		strings.Repeat("x", 17<<20) + `"}}}`
	h.fromClient(big)
	if got, want := h.clientGets(), `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"message longer than 16777216 bytes"}}`; got != want {
		t.Fatalf("17 MiB line: got %.200s, want %s", got, want)
	}
	// Just under the limit passes, and so does the next small message.
	okLine := `{"jsonrpc":"2.0","id":2,"method":"x/big","params":{"p":"` + strings.Repeat("y", DefaultMaxLine-60) + `"}}`
	if len(okLine) > DefaultMaxLine {
		t.Fatalf("test line is %d bytes", len(okLine))
	}
	h.fromClient(okLine)
	if got := h.serverGets(); got != okLine {
		t.Fatalf("line under the limit: got %d bytes, want %d", len(got), len(okLine))
	}
	if len(h.inputs) != 0 {
		t.Fatal("the oversized call was decided")
	}
}

func TestToolsCallDecided(t *testing.T) {
	h := newHarness(t, func(in *bundles.Input) Verdict {
		if in.Tool == "delete" {
			return Verdict{Message: "no \"deleting\"", DecisionID: "d1", Rule: "p.yaml#delete/no", Bundle: "sha256:ab"}
		}
		return Verdict{Allow: true}
	})
	// tools/list: hidden tools go, annotations are remembered.
	h.hidden["secret"] = true
	h.fromClient(`{"jsonrpc":"2.0","id":"L","method":"tools/list"}`)
	h.serverGets()
	h.fromServer(`{"jsonrpc":"2.0","id":"L","result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}},{"name":"secret"},{"name":"delete"}],"nextCursor":"c"}}`)
	var list struct {
		ID     string `json:"id"`
		Result struct {
			Tools      []map[string]any `json:"tools"`
			NextCursor string           `json:"nextCursor"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(h.clientGets()), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Result.Tools) != 2 || list.Result.Tools[0]["name"] != "echo" || list.Result.Tools[1]["name"] != "delete" || list.Result.NextCursor != "c" || list.ID != "L" {
		t.Fatalf("filtered list: got %+v", list)
	}

	allowed := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`
	h.fromClient(allowed)
	if got := h.serverGets(); got != allowed {
		t.Fatalf("allowed call: server got %s", got)
	}
	in := h.inputs[0]
	if in.Server != "srv" || in.Tool != "echo" || string(in.Arguments) != `{"text":"hi"}` ||
		string(in.Annotations) != `{"readOnlyHint":true}` || in.Identity.Subject != "alice" {
		t.Fatalf("decision input: got %+v", in)
	}
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	h.clientGets()

	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete"}}`)
	want := `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"no \"deleting\""}],"isError":true,"_meta":{"toolgate/decision_id":"d1","toolgate/rule":"p.yaml#delete/no","toolgate/bundle":"sha256:ab"}}}`
	if got := h.clientGets(); got != want {
		t.Fatalf("denied call: got %s, want %s", got, want)
	}

	h.fromClient(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":null}}`)
	h.serverGets()
	h.fromClient(`{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	if got := h.clientGets(); !strings.Contains(got, `"id":3,"error":{"code":-32600`) {
		t.Fatalf("duplicate pending id: got %s", got)
	}
	h.fromServer(`{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"failed"}}`)
	h.clientGets()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.doneCalls) != 2 || !h.doneCalls[0] || h.doneCalls[1] {
		t.Fatalf("Done calls: got %v, want [true false] (a result, then a JSON-RPC error)", h.doneCalls)
	}
}

func TestUpstreamExit(t *testing.T) {
	h := newHarness(t, allowAll)
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`)
	h.serverGets()
	h.server.Close()
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,`) {
		t.Fatalf("pending call after the server exited: got %s", got)
	}
	if err := <-h.done; err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Run: got %v, want ErrUpstreamExited", err)
	}
	h.done <- nil // for Cleanup
	if len(h.doneCalls) != 1 || !h.doneCalls[0] {
		t.Fatalf("Done calls: got %v, want [true] (the server got the call: it counts)", h.doneCalls)
	}
}

func TestClientCloseEndsCleanly(t *testing.T) {
	h := newHarness(t, allowAll)
	h.client.Close()
	if _, err := h.toServer.ReadByte(); err != io.EOF {
		t.Fatalf("server input after client EOF: got %v, want EOF", err)
	}
	h.server.Close()
	if err := <-h.done; err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	h.done <- nil
}

// TestStdioAmbiguousNames: a tools/call the proxy would read differently
// from the server (a repeated or case-folded member name) is refused, never
// forwarded undecided or decided on the wrong tool.
func TestStdioAmbiguousNames(t *testing.T) {
	h := newHarness(t, func(in *bundles.Input) Verdict {
		if in.Tool == "delete_branch" {
			return Verdict{Message: "no"}
		}
		return Verdict{Allow: true}
	})
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping","params":{"name":"delete_branch"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_branch","Name":"read_file"}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_branch","name":"read_file"}}`,
		`{"jsonrpc":"2.0","id":4,"method":"ping","method":"tools/call","params":{"name":"delete_branch"}}`,
	} {
		h.fromClient(line)
		got := h.clientGets()
		if !strings.Contains(got, `"code":-32600`) {
			t.Errorf("%s\n  answered %s, want -32600", line, got)
		}
	}
	// A good call still goes through, and it is the first line the server sees.
	h.fromClient(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_file"}}`)
	if got := h.serverGets(); !strings.Contains(got, `"id":5`) {
		t.Fatalf("the server saw %s first", got)
	}
}

// TestStdioCallTimeout: a call the server does not answer within
// CallTimeout gets an error and rolls back; the server's late answer is
// dropped; later calls are unaffected.
func TestStdioCallTimeout(t *testing.T) {
	var failures atomic.Int64
	h := newHarnessWith(t, func(in *bundles.Input) Verdict { return Verdict{Allow: true} },
		func(p *Stdio) {
			p.CallTimeout = 100 * time.Millisecond
			p.UpstreamError = func() { failures.Add(1) }
		})
	start := time.Now()
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`)
	h.serverGets()
	got := h.clientGets()
	if !strings.Contains(got, `"id":1`) || !strings.Contains(got, `"code":-32000`) || !strings.Contains(got, "did not answer within 100ms") {
		t.Fatalf("timed-out call answered %s", got)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("answered after %v, want about 100ms", d)
	}
	h.mu.Lock()
	done := append([]bool(nil), h.doneCalls...)
	h.mu.Unlock()
	if len(done) != 1 || !done[0] {
		t.Fatalf("Done calls %v, want one commit (the server got the call: it counts)", done)
	}
	// The late answer is dropped; the next call's answer comes through.
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fast"}}`)
	h.serverGets()
	h.fromServer(`{"jsonrpc":"2.0","id":2,"result":{"content":[]}}`)
	if got := h.clientGets(); !strings.Contains(got, `"id":2`) {
		t.Fatalf("after the late answer the client got %s, want the answer to id 2", got)
	}
	if n := failures.Load(); n != 1 {
		t.Errorf("upstream failures reported: %d, want 1 (the timeout)", n)
	}
}

func TestDenyAsError(t *testing.T) {
	h := newHarnessWith(t, func(in *bundles.Input) Verdict {
		return Verdict{Message: "no \"deleting\"", DecisionID: "d1", Rule: "p.yaml#delete/no", Bundle: "sha256:ab"}
	}, func(p *Stdio) { p.DenyAsError = true })
	h.fromClient(`{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"delete"}}`)
	want := `{"jsonrpc":"2.0","id":"x","error":{"code":-32030,"message":"no \"deleting\"","data":{"decision_id":"d1","rule":"p.yaml#delete/no","bundle":"sha256:ab"}}}`
	if got := h.clientGets(); got != want {
		t.Fatalf("denied call: got %s, want %s", got, want)
	}
	var e struct {
		Error struct{ Code int } `json:"error"`
	}
	if err := json.Unmarshal([]byte(want), &e); err != nil || e.Error.Code != CodeDenied {
		t.Fatalf("code: %v %d, want CodeDenied", err, e.Error.Code)
	}
	// Not a denial: errors in the params are still -32602.
	h.fromClient(`{"jsonrpc":"2.0","id":"y","method":"tools/call","params":{"name":7}}`)
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":"y","error":{"code":-32602,`) {
		t.Fatalf("bad params: got %s", got)
	}
}

// TestCallTimeoutIDInUse: past CallTimeout the server is told to cancel
// the call, and its id stays in use until the server's late answer (which
// is dropped), so that no answer goes to the wrong request.
func TestCallTimeoutIDInUse(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newHarnessWith(t, allowAll, func(p *Stdio) { p.CallTimeout = timeout })
	start := time.Now()
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`)
	h.serverGets()
	want := `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"the MCP server did not answer within 200ms"}}`
	if got := h.clientGets(); got != want {
		t.Fatalf("unanswered call: got %s, want %s", got, want)
	}
	if elapsed := time.Since(start); elapsed < timeout || elapsed > timeout+timeout/8+time.Second {
		t.Errorf("the error came after %v, want %v to %v", elapsed, timeout, timeout+timeout/8)
	}
	if got, want := h.serverGets(), `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"toolgate: no answer within 200ms"}}`; got != want {
		t.Errorf("the server got %s, want %s", got, want)
	}
	h.mu.Lock()
	if len(h.doneCalls) != 1 || !h.doneCalls[0] {
		t.Errorf("Done calls: got %v, want [true]", h.doneCalls)
	}
	h.mu.Unlock()

	// Until the server answers, the id stays in use.
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"request id 1 is still in use`) {
		t.Fatalf("reusing the id: got %s", got)
	}
	// The late answer is dropped (the client next gets the ping's
	// answer), Done is not called again, and the id is free again.
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	h.serverGets()
	h.fromServer(`{"jsonrpc":"2.0","id":2,"result":{}}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
		t.Fatalf("after the late answer: got %s", got)
	}
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	if got := h.serverGets(); got != `{"jsonrpc":"2.0","id":1,"method":"ping"}` {
		t.Fatalf("id 1 after the late answer: server got %s", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.doneCalls) != 1 {
		t.Errorf("Done calls: got %v, want [false]", h.doneCalls)
	}
}

func TestCallTimeoutAnsweredInTime(t *testing.T) {
	h := newHarnessWith(t, allowAll, func(p *Stdio) { p.CallTimeout = 150 * time.Millisecond })
	for i := range 3 {
		// Each call is answered after about half the timeout; none times
		// out, though together they take longer than it.
		id := strconv.Itoa(i)
		h.fromClient(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo"}}`)
		h.serverGets()
		time.Sleep(70 * time.Millisecond)
		h.fromServer(`{"jsonrpc":"2.0","id":` + id + `,"result":{"content":[]}}`)
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":`+id+`,"result":{"content":[]}}` {
			t.Fatalf("call %d: got %s", i, got)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if fmt.Sprint(h.doneCalls) != "[true true true]" {
		t.Errorf("Done calls: got %v", h.doneCalls)
	}
}

// TestInitializeTimeoutNotCancelled: MCP does not let a client cancel
// initialize, so the proxy only answers it.
func TestInitializeTimeoutNotCancelled(t *testing.T) {
	h := newHarnessWith(t, allowAll, func(p *Stdio) { p.CallTimeout = 50 * time.Millisecond })
	h.fromClient(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`)
	h.serverGets()
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":0,"error":{"code":-32000,`) {
		t.Fatalf("got %s", got)
	}
	h.fromClient(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if got := h.serverGets(); got != `{"jsonrpc":"2.0","method":"notifications/initialized"}` {
		t.Fatalf("the server got %s, want the client's next message (no cancellation)", got)
	}
}

func TestLargeAndDeepMessages(t *testing.T) {
	h := newHarness(t, allowAll)
	// A 10 MiB argument, decided on and forwarded byte for byte, and a
	// 10 MiB result back.
	args := `{"text":"` + strings.Repeat("0123456789abcdef", 10<<16) + `"}`
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":` + args + `}}`
	h.fromClient(call)
	if got := h.serverGets(); got != call {
		t.Fatalf("10 MiB call: the server got %d bytes, want %d", len(got), len(call))
	}
	h.mu.Lock()
	if got := h.inputs[len(h.inputs)-1]; string(got.Arguments) != args {
		t.Errorf("10 MiB call: decided on %d bytes of arguments, want %d", len(got.Arguments), len(args))
	}
	h.mu.Unlock()
	result := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"` + strings.Repeat("x", 10<<20) + `"}]}}`
	h.fromServer(result)
	if got := h.clientGets(); got != result {
		t.Fatalf("10 MiB result: the client got %d bytes, want %d", len(got), len(result))
	}

	// 1,000 levels of nesting pass both ways; past encoding/json's 10,000
	// the line is not JSON.
	deep := func(n int) string { return strings.Repeat(`{"a":[`, n) + strings.Repeat(`]}`, n) }
	call = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":` + deep(500) + `}}`
	h.fromClient(call)
	if got := h.serverGets(); got != call {
		t.Fatalf("1,000-deep call: the server got %.100s", got)
	}
	result = `{"jsonrpc":"2.0","id":2,"result":{"structuredContent":` + deep(500) + `}}`
	h.fromServer(result)
	if got := h.clientGets(); got != result {
		t.Fatalf("1,000-deep result: the client got %.100s", got)
	}
	h.fromClient(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":` + deep(5001) + `}}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: not a JSON object"}}` {
		t.Fatalf("10,003-deep call: got %.200s", got)
	}
	// From the server, a line that is not JSON has no id to answer: it is
	// dropped (CallTimeout answers the call it was meant for).
	h.fromServer(`{"jsonrpc":"2.0","id":4,"result":` + deep(5001) + `}`)
	h.fromServer(`{"jsonrpc":"2.0","method":"notifications/next"}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","method":"notifications/next"}` {
		t.Fatalf("after a 10,002-deep server line: got %.200s", got)
	}
}

// TestInvalidUTF8 pins what the proxy does with bytes that are not UTF-8
// inside JSON strings. encoding/json accepts them (and decodes each as
// U+FFFD), and so do other parsers, differently; the proxy passes such
// messages on byte for byte, except where it must read the string itself:
// a tools/call whose tool name is not valid UTF-8 is refused (-32602),
// because the proxy cannot know which tool the server would take it for.
// Invalid UTF-8 inside arguments is decided on the very bytes the server
// gets (the policy runtime denies arguments it cannot read as UTF-8).
func TestInvalidUTF8(t *testing.T) {
	h := newHarness(t, allowAll)
	h.fromClient("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"ec\xffho\"}}")
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"tools/call name is not valid UTF-8`) {
		t.Fatalf("name with invalid UTF-8: got %s", got)
	}
	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ec\udc00ho"}}`)
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":2,"error":{"code":-32602,`) {
		t.Fatalf("name with an unpaired surrogate: got %s", got)
	}
	call := "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"t\":\"\xc3\x28\xff\"}}}"
	h.fromClient(call)
	if got := h.serverGets(); got != call {
		t.Fatalf("arguments with invalid UTF-8: the server got %q", got)
	}
	h.mu.Lock()
	if got := h.inputs[len(h.inputs)-1]; string(got.Arguments) != "{\"t\":\"\xc3\x28\xff\"}" || got.Tool != "echo" {
		t.Errorf("arguments with invalid UTF-8: decided on %q %q", got.Tool, got.Arguments)
	}
	h.mu.Unlock()
	result := "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"\xfe\xed\"}]}}"
	h.fromServer(result)
	if got := h.clientGets(); got != result {
		t.Fatalf("result with invalid UTF-8: the client got %q", got)
	}
	notification := "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/m\xe9ssage\",\"params\":{}}"
	h.fromServer(notification)
	if got := h.clientGets(); got != notification {
		t.Fatalf("server notification with invalid UTF-8: the client got %q", got)
	}
}

func TestLinesAcrossReads(t *testing.T) {
	// CRLF line ends, blank lines, several messages in one write and one
	// message over several writes.
	h := newHarness(t, allowAll)
	a := `{"jsonrpc":"2.0","method":"notifications/a"}`
	b := `{"jsonrpc":"2.0","method":"notifications/b"}`
	go func() {
		io.WriteString(h.client, a+"\r\n \r\n\n"+b[:10])
		io.WriteString(h.client, b[10:]+"\n")
	}()
	for _, want := range []string{a, b} {
		if got := h.serverGets(); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

// BenchmarkStdioMessages is the proxy's own work on an allowed tools/call
// and its answer (reading both envelopes, deciding with a Decide that does
// nothing, the pending-request bookkeeping, queueing and flushing both
// lines), without the I/O: what the proxy adds to the process hop.
func BenchmarkStdioMessages(b *testing.B) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		b.Run("timeout="+timeout.String(), func(b *testing.B) {
			p := &Stdio{
				Server:      "srv",
				Decide:      func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} },
				Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
				CallTimeout: timeout,
			}
			p.pending = map[string]pendingCall{}
			p.enforcer = &Enforcer{Server: p.Server, Decide: p.Decide}
			p.toClient.w = bufio.NewWriterSize(io.Discard, 64<<10)
			p.toServer.w = bufio.NewWriterSize(io.Discard, 64<<10)
			if timeout > 0 {
				stop := make(chan struct{})
				defer close(stop)
				go p.sweep(stop)
			}
			fromClient, fromServer := &batch{p: p}, &batch{p: p}
			ctx := context.Background()
			var call, answer []byte
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				call = fmt.Appendf(call[:0], `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/srv/a","text":"hello"}}}`, i)
				answer = fmt.Appendf(answer[:0], `{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}`, i)
				if err := p.fromClient(ctx, fromClient, call, false); err != nil {
					b.Fatal(err)
				}
				fromClient.flush()
				if err := p.fromServer(ctx, fromServer, answer, false); err != nil {
					b.Fatal(err)
				}
				fromServer.flush()
			}
			if len(p.pending) != 0 {
				b.Fatalf("%d calls still pending", len(p.pending))
			}
		})
	}
}

// TestCRNeverReachesServer: a raw CR is JSON whitespace to the proxy but a
// line end to a server reading text mode (Python's MCP SDK): a client must
// not hide a tools/call the policy never sees behind one. The line goes on
// with each CR as a space.
func TestCRNeverReachesServer(t *testing.T) {
	h := newHarness(t, func(in *bundles.Input) Verdict { return Verdict{Message: "no"} })
	smuggle := "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"x\":\r" +
		"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"delete_repo\",\"arguments\":{}}}\r}}"
	h.fromClient(smuggle)
	got := h.serverGets()
	if strings.ContainsRune(got, '\r') || got != strings.ReplaceAll(smuggle, "\r", " ") {
		t.Fatalf("server got %q, want the line with each CR a space", got)
	}
	// A CR-LF line end is a line end, as before.
	h.fromClient("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\r")
	if got := h.serverGets(); got != `{"jsonrpc":"2.0","method":"notifications/initialized"}` {
		t.Fatalf("server got %q", got)
	}
}

// TestIDAliases: ids a server decodes alike ("a" and "\u0061", 1 and 1.0)
// are one id to the proxy: the second is refused while the first is
// pending, so the error answering a bogus request cannot be taken for an
// allowed call's and roll its counters back.
func TestIDAliases(t *testing.T) {
	h := newHarness(t, allowAll)
	for _, ids := range [][2]string{{`"\u0061"`, `"a"`}, {`1.0`, `1`}, {`-0`, `0`}, {`"\u00e9"`, `"é"`}} {
		h.fromClient(`{"jsonrpc":"2.0","id":` + ids[0] + `,"method":"nope"}`)
		if got := h.serverGets(); !strings.Contains(got, `"method":"nope"`) {
			t.Fatalf("server got %s", got)
		}
		h.fromClient(`{"jsonrpc":"2.0","id":` + ids[1] + `,"method":"tools/call","params":{"name":"echo"}}`)
		if got := h.clientGets(); !strings.Contains(got, "already in use") {
			t.Fatalf("%s while %s is pending: client got %s, want it refused", ids[1], ids[0], got)
		}
		// The server answers the bogus request, echoing the id decoded.
		h.fromServer(`{"jsonrpc":"2.0","id":` + ids[1] + `,"error":{"code":-32601,"message":"Method not found"}}`)
		if got := h.clientGets(); !strings.Contains(got, "Method not found") {
			t.Fatalf("client got %s", got)
		}
		// Now the call goes through and its answer commits it.
		h.fromClient(`{"jsonrpc":"2.0","id":` + ids[1] + `,"method":"tools/call","params":{"name":"echo"}}`)
		if got := h.serverGets(); !strings.Contains(got, `"tools/call"`) {
			t.Fatalf("server got %s", got)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":` + ids[1] + `,"result":{"content":[]}}`)
		h.clientGets()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Equal(h.doneCalls, []bool{true, true, true, true}) {
		t.Errorf("outcomes %v: want each call committed once, never rolled back by another request's error", h.doneCalls)
	}
}

func TestIDKey(t *testing.T) {
	for _, tc := range [][]string{
		{`"a"`, `"\u0061"`, `"\u0061"`},
		{`"é"`, `"\u00e9"`, `"\u00E9"`},
		{`"a\"b"`, `"a\u0022b"`},
		{`"\\"`, `"\u005c"`},
		{`"\n"`, `"\u000a"`, `"\u000A"`},
		{`1`, `1.0`, `1e0`, `10e-1`, `1.000000000000000001`},
		{`0`, `-0`, `0.0`, `-0e5`},
		{`-7`, `-7.0`, `-0.7e1`},
		{`100000000000000`, `1e14`},
		{`9007199254740992`, `9007199254740993`},
	} {
		want := string(idKey([]byte(tc[0])))
		for _, id := range tc[1:] {
			if got := string(idKey([]byte(id))); got != want {
				t.Errorf("idKey(%s) = %s, want %s (as idKey(%s))", id, got, want, tc[0])
			}
		}
		if again := string(idKey([]byte(want))); again != want {
			t.Errorf("idKey(%s) = %s: not its own key", want, again)
		}
	}
	for _, pair := range [][2]string{{`"1"`, `1`}, {`"a"`, `"A"`}, {`1`, `2`}, {`"0"`, `0`}, {`"a "`, `"a"`}} {
		if string(idKey([]byte(pair[0]))) == string(idKey([]byte(pair[1]))) {
			t.Errorf("idKey(%s) == idKey(%s): different ids share a key", pair[0], pair[1])
		}
	}
}

// TestSameID: the HTTP relay and the bridge match answers to requests by
// id as a server reads ids.
func TestSameID(t *testing.T) {
	for _, p := range [][2]string{{`1`, `1.0`}, {`"a"`, `"\u0061"`}, {` 7 `, `7`}, {`0`, `-0`}} {
		if !sameID(json.RawMessage(p[0]), json.RawMessage(p[1])) {
			t.Errorf("sameID(%s, %s) = false", p[0], p[1])
		}
	}
	for _, p := range [][2]string{{`1`, `"1"`}, {`1`, `2`}, {``, ``}, {`"a"`, `"b"`}} {
		if sameID(json.RawMessage(p[0]), json.RawMessage(p[1])) {
			t.Errorf("sameID(%s, %s) = true", p[0], p[1])
		}
	}
}

// TestAbortDropsLateAnswers: a shutdown's Abort answers each request in
// flight with an error, once: the server's answer arriving later is
// dropped, not sent as a second answer to the same id.
func TestAbortDropsLateAnswers(t *testing.T) {
	var p *Stdio
	h := newHarnessWith(t, allowAll, func(s *Stdio) { p = s })
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`
	h.fromClient(call)
	if got := h.serverGets(); got != call {
		t.Fatalf("server got %s", got)
	}
	go p.Abort("toolgate is shutting down") // its answer is written to the unbuffered pipe read below
	if got := h.clientGets(); !strings.Contains(got, `"id":1,`) || !strings.Contains(got, "shutting down") {
		t.Fatalf("client got %s, want the abort's error", got)
	}
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`) // late
	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	h.serverGets()
	h.fromServer(`{"jsonrpc":"2.0","id":2,"result":{}}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
		t.Fatalf("client got %s, want the ping's answer (the late answer to 1 dropped)", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.doneCalls) != 1 {
		t.Errorf("outcomes %v, want the call settled once", h.doneCalls)
	}
}

// TestCancelledRequestStopsWaiting: a forwarded request the client
// cancels no longer waits (a shutdown does not wait for it) and counts.
func TestCancelledRequestStopsWaiting(t *testing.T) {
	var p *Stdio
	h := newHarnessWith(t, allowAll, func(s *Stdio) { p = s })
	call := `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo"}}`
	h.fromClient(call)
	h.serverGets()
	cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}`
	h.fromClient(cancel)
	if got := h.serverGets(); got != cancel {
		t.Fatalf("server got %s, want the cancellation", got)
	}
	if n := p.Pending(); n != 0 {
		t.Fatalf("%d requests pending after the cancellation, want none", n)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Equal(h.doneCalls, []bool{true}) {
		t.Errorf("outcomes %v, want the cancelled call counted once", h.doneCalls)
	}
}
