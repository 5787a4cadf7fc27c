package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
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
	mu         sync.Mutex
	inputs     []bundles.Input
	doneCalls  []bool
	hidden     map[string]bool
	decide     func(in *bundles.Input) Verdict
}

func newHarness(t *testing.T, decide func(in *bundles.Input) Verdict) *harness {
	return newHarnessWith(t, decide, nil)
}

// newHarnessWith is newHarness with a chance to set more fields of the
// Stdio before it runs.
func newHarnessWith(t *testing.T, decide func(in *bundles.Input) Verdict, configure func(*Stdio)) *harness {
	h := &harness{t: t, done: make(chan error, 1), decide: decide, hidden: map[string]bool{}}
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
		Decide: func(_ context.Context, in *bundles.Input) Verdict {
			h.mu.Lock()
			h.inputs = append(h.inputs, *in)
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
		},
		Hidden: func(_ context.Context, in *bundles.Input) bool { return h.hidden[in.Tool] },
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
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
	if len(h.doneCalls) != 1 || h.doneCalls[0] {
		t.Fatalf("Done calls: got %v, want [false]", h.doneCalls)
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

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress"}`,
		`{"jsonrpc":"2.0","id":"a","result":{}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`,
		`[1,2]`, `{`, ``, `null`, `{"id":1e400}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, k, code := classify(line)
		switch k {
		case kindInvalid:
			if code != codeParseError && code != codeInvalidRequest {
				t.Fatalf("invalid with code %d", code)
			}
			if m.ID != nil && !validID(m.ID) {
				t.Fatalf("invalid message keeps unusable id %s", m.ID)
			}
		case kindRequest, kindNotification:
			if m.Method == nil || (k == kindRequest) != (m.ID != nil) {
				t.Fatalf("kind %d with method %v id %s", k, m.Method, m.ID)
			}
		case kindResponse:
			if m.ID == nil || (m.Result == nil) == (m.Error == nil) {
				t.Fatalf("response without id or with result and error both set or both absent")
			}
		}
		// Every answer the proxy could build for it is valid JSON.
		if !json.Valid(appendError(nil, m.ID, code, "x")) {
			t.Fatalf("error for %q is not JSON", line)
		}
		if k == kindRequest && !json.Valid(appendDenial(nil, m.ID, &Verdict{Message: string(line)})) {
			t.Fatalf("denial for %q is not JSON", line)
		}
	})
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
	h := newHarnessWith(t, func(in *bundles.Input) Verdict { return Verdict{Allow: true} },
		func(p *Stdio) { p.CallTimeout = 100 * time.Millisecond })
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
	if len(done) != 1 || done[0] {
		t.Fatalf("Done calls %v, want one rollback", done)
	}
	// The late answer is dropped; the next call's answer comes through.
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fast"}}`)
	h.serverGets()
	h.fromServer(`{"jsonrpc":"2.0","id":2,"result":{"content":[]}}`)
	if got := h.clientGets(); !strings.Contains(got, `"id":2`) {
		t.Fatalf("after the late answer the client got %s, want the answer to id 2", got)
	}
}
