//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// These tests run a Stdio over real os.Pipe pairs, so that Run takes the
// ppoll(2) relay of stdio_poll_linux.go rather than the two-goroutine one
// that the io.Pipe harness of stdio_test.go exercises. Every test checks
// that the poll loop is the relay actually running (see
// [pollHarness.assertPolling]), and that the test leaves no goroutine or
// descriptor behind.

// pollTimeout bounds every read, write and wait of these tests.
const pollTimeout = 10 * time.Second

// pollHarness runs a Stdio over OS pipes: the test plays client and server.
type pollHarness struct {
	t *testing.T
	p *Stdio

	// The test's ends.
	client    *os.File      // what the client sends
	clientOut *os.File      // what the proxy sends the client (read end)
	toClient  *bufio.Reader // over clientOut
	serverIn  *os.File      // what the proxy sends the server (read end)
	toServer  *bufio.Reader // over serverIn
	server    *os.File      // what the server sends

	// The proxy's ends, closed once Run has returned.
	proxyEnds []*os.File

	done     chan error
	waitOnce sync.Once
	runErr   error
	returned bool

	recorder
}

// pipe returns an os.Pipe; both ends are closed at cleanup by the caller.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	return r, w
}

// wrap hides the *os.File behind a plain reader, so that Run takes the
// portable two-goroutine relay over the same pipes.
type wrap struct{ io.Reader }

// newPollHarness starts Run over four OS pipes. With portable set the
// proxy's input ends are wrapped so that Run cannot use the poll loop (the
// control case); otherwise the test fails unless the poll loop runs.
func newPollHarness(t *testing.T, decide func(in *bundles.Input) Verdict, configure func(*Stdio), portable bool) *pollHarness {
	t.Helper()
	checkLeaks(t)
	h := &pollHarness{t: t, done: make(chan error, 1), recorder: recorder{decide: decide}}
	clientInR, clientInW := pipe(t)
	clientOutR, clientOutW := pipe(t)
	serverInR, serverInW := pipe(t)
	serverOutR, serverOutW := pipe(t)
	h.client, h.clientOut, h.serverIn, h.server = clientInW, clientOutR, serverInR, serverOutW
	h.toClient = bufio.NewReaderSize(clientOutR, 1<<20)
	h.toServer = bufio.NewReaderSize(serverInR, 1<<20)
	h.proxyEnds = []*os.File{clientInR, clientOutW, serverInW, serverOutR}
	h.p = &Stdio{
		Server:   "srv",
		Identity: bundles.Identity{Subject: "alice"},
		Decide:   h.record,
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	if configure != nil {
		configure(h.p)
	}
	var clientIn, serverOut io.Reader = clientInR, serverOutR
	if portable {
		clientIn, serverOut = wrap{clientInR}, wrap{serverOutR}
	} else {
		// The condition relayPolled selects the poll loop on.
		if _, ok := fdOf(clientIn); !ok {
			t.Fatal("fdOf: the client's input is not pollable")
		}
		if _, ok := fdOf(serverOut); !ok {
			t.Fatal("fdOf: the server's output is not pollable")
		}
	}
	go func() { h.done <- h.p.Run(context.Background(), clientIn, clientOutW, serverInW, serverOut) }()
	t.Cleanup(func() {
		// Unblock Run whatever it waits on: EOF on both inputs, EPIPE on
		// both outputs. The proxy's own ends are closed only once Run has
		// returned (closing a descriptor the poll loop uses could make it
		// read another file that reuses the number).
		h.client.Close()
		h.server.Close()
		h.clientOut.Close()
		h.serverIn.Close()
		if _, ok := h.wait(); !ok {
			t.Errorf("Run did not return within %v of its pipes closing; leaking them\n%s", pollTimeout, stacks())
			return
		}
		h.closeProxyEnds()
	})
	if !portable {
		h.assertPolling(true)
	}
	return h
}

// wait waits for Run to return, at most pollTimeout.
func (h *pollHarness) wait() (error, bool) {
	h.waitOnce.Do(func() {
		select {
		case h.runErr = <-h.done:
			h.returned = true
		case <-time.After(pollTimeout):
		}
	})
	return h.runErr, h.returned
}

// closeProxyEnds closes the proxy's ends of the pipes, once Run has
// returned: what the test reads then ends.
func (h *pollHarness) closeProxyEnds() {
	for _, f := range h.proxyEnds {
		f.Close() // the server's input may be closed already, by Run
	}
}

// runReturned reports whether Run returns within d (without waiting for
// it past d).
func (h *pollHarness) runReturned(d time.Duration) bool {
	select {
	case err := <-h.done:
		h.done <- err
		return true
	case <-time.After(d):
		return false
	}
}

// stacks returns the stacks of all goroutines.
func stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineWith returns the stacks of the goroutines that contain frame.
func goroutineWith(frame string) string {
	var out []string
	for g := range strings.SplitSeq(stacks(), "\n\n") {
		if strings.Contains(g, frame) {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// assertPolling checks whether a goroutine is in the poll loop (a
// goroutine blocked in ppoll shows its stack too). The poll loop is
// entered at the start of Run, so the wait is short.
func (h *pollHarness) assertPolling(want bool) {
	h.t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		got := strings.Contains(stacks(), "proxy.(*Stdio).relayPolled(")
		if got == want {
			return
		}
		if !want || time.Now().After(deadline) {
			// Not polling is only asserted once Run has been seen relaying.
			h.t.Fatalf("the poll loop runs: %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkLeaks makes the test fail if, once its cleanups have run, more
// goroutines or descriptors are left than when it started.
func checkLeaks(t *testing.T) {
	t.Helper()
	// Create the runtime's netpoll descriptors before counting.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(pollTimeout)
		for {
			g, f := runtime.NumGoroutine(), openFDs(t)
			if g <= goroutines && f <= fds {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked %d goroutines and %d descriptors\n%s", g-goroutines, f-fds, stacks())
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// send writes s as is, in one write.
func (h *pollHarness) send(f *os.File, s string) {
	h.t.Helper()
	if err := sendFile(f, s); err != nil {
		h.t.Fatal(err)
	}
}

// sendFile writes s to f in one write, bounded by pollTimeout; safe to call
// off the test's goroutine.
func sendFile(f *os.File, s string) error {
	if err := f.SetWriteDeadline(time.Now().Add(pollTimeout)); err != nil {
		return err
	}
	_, err := io.WriteString(f, s)
	return err
}

func (h *pollHarness) fromClient(line string) { h.t.Helper(); h.send(h.client, line+"\n") }
func (h *pollHarness) fromServer(line string) { h.t.Helper(); h.send(h.server, line+"\n") }

// gets reads one line with readLine, bounded by pollTimeout.
func (h *pollHarness) gets(f *os.File, r *bufio.Reader) string {
	h.t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(pollTimeout)); err != nil {
		h.t.Fatal(err)
	}
	return readLine(h.t, r)
}

func (h *pollHarness) clientGets() string { h.t.Helper(); return h.gets(h.clientOut, h.toClient) }
func (h *pollHarness) serverGets() string { h.t.Helper(); return h.gets(h.serverIn, h.toServer) }

// rest reads what is left until EOF, bounded by pollTimeout.
func (h *pollHarness) rest(f *os.File, r *bufio.Reader) string {
	h.t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(pollTimeout)); err != nil {
		h.t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		h.t.Fatalf("reading to EOF: %v (after %q)", err, b)
	}
	return string(b)
}

func (h *pollHarness) serverRest() string { h.t.Helper(); return h.rest(h.serverIn, h.toServer) }
func (h *pollHarness) clientRest() string { h.t.Helper(); return h.rest(h.clientOut, h.toClient) }

// dones returns the Done calls so far.
func (h *pollHarness) dones() []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]bool(nil), h.doneCalls...)
}

func (h *pollHarness) decided() []bundles.Input {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]bundles.Input(nil), h.inputs...)
}

// TestPollPathDetector is the control for assertPolling: over the same OS
// pipes with the inputs hidden behind plain readers, and over the io.Pipe
// harness, Run relays without the poll loop.
func TestPollPathDetector(t *testing.T) {
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	t.Run("wrapped files", func(t *testing.T) {
		h := newPollHarness(t, allowAll, nil, true)
		h.fromClient(ping)
		if got := h.serverGets(); got != ping {
			t.Fatalf("server got %s, want %s", got, ping)
		}
		h.assertPolling(false)
	})
	t.Run("io.Pipe", func(t *testing.T) {
		h := newHarness(t, allowAll)
		h.fromClient(ping)
		if got := h.serverGets(); got != ping {
			t.Fatalf("server got %s, want %s", got, ping)
		}
		if _, ok := fdOf(h.serverInR); ok {
			t.Fatal("fdOf accepts an io.PipeReader")
		}
		if strings.Contains(stacks(), "proxy.(*Stdio).relayPolled(") {
			t.Fatal("the poll loop runs over io.Pipe")
		}
	})
}

// TestPollToolsCall: an allowed call is forwarded byte for byte and its
// answer returned; a denied one is answered by the proxy and never reaches
// the server.
func TestPollToolsCall(t *testing.T) {
	h := newPollHarness(t, func(in *bundles.Input) Verdict {
		if in.Tool == "delete" {
			return Verdict{Message: "no \"deleting\"", DecisionID: "d1", Rule: "p.yaml#delete/no", Bundle: "sha256:ab"}
		}
		return Verdict{Allow: true}
	}, nil, false)

	allowed := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`
	h.fromClient(allowed)
	if got := h.serverGets(); got != allowed {
		t.Fatalf("allowed call: server got %s, want %s", got, allowed)
	}
	if in := h.decided(); len(in) != 1 || in[0].Tool != "echo" || string(in[0].Arguments) != `{"text":"hi"}` ||
		in[0].Server != "srv" || in[0].Identity.Subject != "alice" {
		t.Fatalf("decision inputs: got %+v", in)
	}
	answer := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}`
	h.fromServer(answer)
	if got := h.clientGets(); got != answer {
		t.Fatalf("answer: client got %s, want %s", got, answer)
	}

	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete","arguments":{"path":"/"}}}`)
	want := `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"no \"deleting\""}],"isError":true,"_meta":{"toolgate/decision_id":"d1","toolgate/rule":"p.yaml#delete/no","toolgate/bundle":"sha256:ab"}}}`
	if got := h.clientGets(); got != want {
		t.Fatalf("denied call: client got %s, want %s", got, want)
	}
	// A denied call in the same write as an allowed one: only the allowed
	// one goes on, and each gets its own answer.
	call3 := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`
	h.send(h.client, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete"}}`+"\n"+call3+"\n")
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"no \"deleting\""}],"isError":true`) {
		t.Fatalf("second denied call: client got %s", got)
	}
	if got := h.serverGets(); got != call3 {
		t.Fatalf("after a denied call: server got %s, want %s", got, call3)
	}
	h.fromServer(`{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"failed"}}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"failed"}}` {
		t.Fatalf("error answer: client got %s", got)
	}

	// Nothing else reached the server: the denied calls never did.
	h.client.Close()
	if rest := h.serverRest(); rest != "" {
		t.Fatalf("the server also got %q", rest)
	}
	h.server.Close()
	if err, ok := h.wait(); !ok || err != nil {
		t.Fatalf("Run: %v (returned: %v), want nil", err, ok)
	}
	if got := fmt.Sprint(h.dones()); got != "[true false]" {
		t.Fatalf("Done calls: got %s, want [true false]", got)
	}
	if n := len(h.decided()); n != 4 {
		t.Fatalf("Decide called %d times, want 4", n)
	}
}

// TestPollSmallWrites: messages that come a few bytes at a time, in both
// directions, with CRLF line ends and blank lines, are reassembled.
func TestPollSmallWrites(t *testing.T) {
	h := newPollHarness(t, allowAll, nil, false)
	var in, want []string
	for i := range 20 {
		in = append(in, `{"jsonrpc":"2.0","id":`+strconv.Itoa(i)+`,"method":"tools/call","params":{"name":"echo","arguments":{"n":`+strconv.Itoa(i)+`}}}`)
		want = append(want, in[i])
	}
	stream := strings.Join(in, "\r\n \r\n\n") + "\n"
	trickle := func(f *os.File, s string) error {
		for i, step := 0, 1; i < len(s); i, step = i+step, step%7+1 {
			if err := sendFile(f, s[i:min(i+step, len(s))]); err != nil {
				return err
			}
			if i%16 == 0 {
				time.Sleep(50 * time.Microsecond) // let the proxy read partial lines
			}
		}
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- trickle(h.client, stream) }()
	for i, w := range want {
		if got := h.serverGets(); got != w {
			t.Fatalf("client message %d: server got %s, want %s", i, got, w)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := len(h.decided()); n != len(want) {
		t.Fatalf("Decide called %d times, want %d", n, len(want))
	}

	var answers []string
	for i := range want {
		answers = append(answers, `{"jsonrpc":"2.0","id":`+strconv.Itoa(i)+`,"result":{"content":[{"type":"text","text":"`+strconv.Itoa(i)+`"}]}}`)
	}
	go func() { errc <- trickle(h.server, strings.Join(answers, "\r\n\n")+"\n") }()
	for i, w := range answers {
		if got := h.clientGets(); got != w {
			t.Fatalf("server message %d: client got %s, want %s", i, got, w)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if d := h.dones(); len(d) != len(want) {
		t.Fatalf("Done calls: got %v, want %d", d, len(want))
	}
}

// TestPollManyInOneWrite: thousands of messages in one write, far more
// than the relay's 64 KiB read buffer holds, come out whole and in order
// in both directions, and the proxy answers the ones it must answer in
// order among them.
func TestPollManyInOneWrite(t *testing.T) {
	h := newPollHarness(t, func(in *bundles.Input) Verdict {
		return Verdict{Allow: in.Tool != "no", Message: "denied"}
	}, nil, false)
	const n = 5000
	var batch strings.Builder
	var toServer []string
	for i := range n {
		var l string
		switch i % 3 {
		case 0:
			l = `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":` + strconv.Itoa(i) + `}}`
		case 1:
			l = `{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"method":"tools/call","params":{"name":"echo","arguments":{"i":` + strconv.Itoa(i) + `}}}`
		case 2:
			l = `{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"method":"tools/call","params":{"name":"no"}}`
		}
		batch.WriteString(l + "\n")
		if i%3 != 2 {
			toServer = append(toServer, l)
		}
	}
	if batch.Len() < 4*lineBufferSize {
		t.Fatalf("the batch is only %d bytes", batch.Len())
	}
	errc := make(chan error, 1)
	go func() { errc <- sendFile(h.client, batch.String()) }()
	// The denials (more than a pipe holds) are read as they come, as a
	// client does.
	denials := make(chan []string, 1)
	go func() {
		var got []string
		for range n / 3 {
			h.clientOut.SetReadDeadline(time.Now().Add(pollTimeout))
			l, err := h.toClient.ReadString('\n')
			if err != nil {
				break
			}
			got = append(got, l)
		}
		denials <- got
	}()
	for i, w := range toServer {
		if got := h.serverGets(); got != w {
			t.Fatalf("message %d: server got %s, want %s", i, got, w)
		}
	}
	got := <-denials
	if len(got) != n/3 {
		t.Fatalf("the client got %d denials, want %d", len(got), n/3)
	}
	for i := 2; i < n; i += 3 {
		if want := `{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"result":{"content":[{"type":"text","text":"denied"}],"isError":true`; !strings.HasPrefix(got[i/3], want) {
			t.Fatalf("denial %d: client got %s, want %s…", i, got[i/3], want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	batch.Reset()
	var toClient []string
	for i := 1; i < n; i += 3 {
		l := `{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"result":{"content":[{"type":"text","text":"` + strconv.Itoa(i) + `"}]}}`
		batch.WriteString(l + "\n")
		toClient = append(toClient, l)
	}
	go func() { errc <- sendFile(h.server, batch.String()) }()
	for i, w := range toClient {
		if got := h.clientGets(); got != w {
			t.Fatalf("answer %d: client got %s, want %s", i, got, w)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	d := h.dones()
	if len(d) != len(toClient) || !all(d) {
		t.Fatalf("Done calls: got %d (%v…), want %d true", len(d), d[:min(len(d), 5)], len(toClient))
	}
}

func all(b []bool) bool {
	for _, v := range b {
		if !v {
			return false
		}
	}
	return true
}

// TestPollLongLines: lines far longer than the read buffer (1 MiB and
// more), written in odd-sized pieces and sharing writes with short ones,
// pass whole in both directions; with a small MaxLine, an over-long line is
// answered and the relay goes on with the next.
func TestPollLongLines(t *testing.T) {
	h := newPollHarness(t, allowAll, nil, false)
	args := `{"text":"` + strings.Repeat("0123456789abcdef", 1<<16) + `"}` // 1 MiB
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":` + args + `}}`
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	// The ping shares the call's last write; the call starts after a
	// short notification in the same write.
	note := `{"jsonrpc":"2.0","method":"notifications/initialized"}`
	stream := note + "\n" + call + "\n" + ping + "\n"
	errc := make(chan error, 1)
	go func() {
		for i, step := 0, 1; i < len(stream); i, step = i+step, step*3%65521 {
			if err := sendFile(h.client, stream[i:min(i+step, len(stream))]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for _, w := range []string{note, call, ping} {
		if got := h.serverGets(); got != w {
			t.Fatalf("server got %d bytes (%.80s…), want %d (%.80s…)", len(got), got, len(w), w)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if in := h.decided(); len(in) != 1 || string(in[0].Arguments) != args {
		t.Fatalf("the 1 MiB call was decided %d times, or on other arguments", len(in))
	}

	result := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"` + strings.Repeat("x", 3<<20) + `"}]}}`
	pong := `{"jsonrpc":"2.0","id":2,"result":{}}`
	go func() { errc <- sendFile(h.server, pong+"\n"+result+"\n"+pong+"\n") }()
	for i, w := range []string{pong, result, pong} {
		if got := h.clientGets(); got != w {
			t.Fatalf("line %d: client got %d bytes (%.80s…), want %d", i, len(got), got, len(w))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	t.Run("MaxLine", func(t *testing.T) {
		h := newPollHarness(t, allowAll, func(p *Stdio) { p.MaxLine = 1000 }, false)
		long := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"t":"` + strings.Repeat("x", 300<<10) + `"}}}`
		ok := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}`
		go func() { errc <- sendFile(h.client, long+"\n"+ok+"\n") }()
		if got, want := h.clientGets(), `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"message longer than 1000 bytes"}}`; got != want {
			t.Fatalf("over-long line: client got %.200s, want %s", got, want)
		}
		if got := h.serverGets(); got != ok {
			t.Fatalf("after an over-long line: server got %.200s, want %s", got, ok)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		// From the server, an over-long line is dropped.
		go func() { errc <- sendFile(h.server, long+"\n"+`{"jsonrpc":"2.0","id":2,"result":{}}`+"\n") }()
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
			t.Fatalf("after an over-long server line: client got %.200s", got)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if n := len(h.decided()); n != 1 {
			t.Fatalf("Decide called %d times, want 1 (the over-long call is not decided)", n)
		}
	})
}

// TestPollServerMessagesPassThrough: the server's requests and
// notifications, and the client's answers to them, pass unchanged and
// undecided.
func TestPollServerMessagesPassThrough(t *testing.T) {
	h := newPollHarness(t, allowAll, nil, false)
	fromServer := []string{
		`{"jsonrpc":"2.0","id":99,"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}`,
		`{"jsonrpc":"2.0","id":"r1","method":"roots/list"}`,
		`{"jsonrpc":"2.0","id":7,"method":"ping"}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":0.5}}`,
		`{ "method" : "notifications/tools/list_changed",   "jsonrpc":"2.0" }`,
		`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"caf\u00e9 \"q\""}}`,
		`{"jsonrpc":"2.0","id":"tools/call","method":"tools/call","params":{"name":"delete"}}`, // a server request is not decided
		`{"jsonrpc":"2.0","id":12345,"result":{}}`,                                             // answers nothing pending: passed on
	}
	for _, l := range fromServer {
		h.fromServer(l)
		if got := h.clientGets(); got != l {
			t.Errorf("server→client: got %s, want %s", got, l)
		}
	}
	// All in one write, too.
	h.send(h.server, strings.Join(fromServer, "\n")+"\n")
	for _, l := range fromServer {
		if got := h.clientGets(); got != l {
			t.Errorf("server→client, one write: got %s, want %s", got, l)
		}
	}
	answers := []string{
		`{"jsonrpc":"2.0","id":99,"result":{"model":"m","role":"assistant","content":{"type":"text","text":"sampled"}}}`,
		`{"jsonrpc":"2.0","id":"r1","result":{"roots":[]}}`,
		`{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}`,
	}
	for _, l := range answers {
		h.fromClient(l)
		if got := h.serverGets(); got != l {
			t.Errorf("client→server: got %s, want %s", got, l)
		}
	}
	if n := len(h.decided()); n != 0 {
		t.Errorf("Decide was called %d times, for no client tools/call", n)
	}
}

// TestPollClientEOF: when the client's input ends, the proxy closes the
// server's input, keeps relaying the server to the client until the server
// exits, and Run returns nil.
func TestPollClientEOF(t *testing.T) {
	t.Run("answered", func(t *testing.T) {
		h := newPollHarness(t, allowAll, nil, false)
		call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`
		// The last line has no newline: it is handled at EOF.
		last := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}}`
		h.send(h.client, call+"\n"+last)
		h.client.Close()
		if got := h.serverRest(); got != call+"\n"+last+"\n" {
			t.Fatalf("server input to EOF: got %q", got)
		}
		if h.runReturned(50 * time.Millisecond) {
			t.Fatal("Run returned before the server exited")
		}
		answer := `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`
		h.fromServer(answer)
		if got := h.clientGets(); got != answer {
			t.Fatalf("answer after the client's EOF: client got %s", got)
		}
		// The server's last line, without a newline, is relayed at its EOF.
		bye := `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"bye"}}`
		h.send(h.server, bye)
		h.server.Close()
		if err, ok := h.wait(); !ok || err != nil {
			t.Fatalf("Run: %v (returned: %v), want nil", err, ok)
		}
		h.closeProxyEnds()
		if got := h.clientRest(); got != bye+"\n" {
			t.Fatalf("client output to EOF: got %q, want the server's last line", got)
		}
		if got := fmt.Sprint(h.dones()); got != "[true]" {
			t.Fatalf("Done calls: got %s, want [true]", got)
		}
	})
	t.Run("unanswered", func(t *testing.T) {
		h := newPollHarness(t, allowAll, nil, false)
		h.fromClient(`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo"}}`)
		h.serverGets()
		h.client.Close()
		if rest := h.serverRest(); rest != "" {
			t.Fatalf("server input to EOF: got %q more", rest)
		}
		h.server.Close()
		if err, ok := h.wait(); !ok || err != nil {
			t.Fatalf("Run: %v (returned: %v), want nil", err, ok)
		}
		h.closeProxyEnds()
		if got := h.clientRest(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":"a","error":{"code":-32000,`) || strings.Count(got, "\n") != 1 {
			t.Fatalf("client output to EOF: got %q, want an error for the pending call", got)
		}
		// The server got the call and never answered: it counts (see
		// outcomeUnknown).
		if got := fmt.Sprint(h.dones()); got != "[true]" {
			t.Fatalf("Done calls: got %s, want [true]", got)
		}
	})
	t.Run("nothing sent", func(t *testing.T) {
		h := newPollHarness(t, allowAll, nil, false)
		h.client.Close()
		if rest := h.serverRest(); rest != "" {
			t.Fatalf("server input: got %q", rest)
		}
		h.server.Close()
		if err, ok := h.wait(); !ok || err != nil {
			t.Fatalf("Run: %v (returned: %v), want nil", err, ok)
		}
		h.closeProxyEnds()
		if got := h.clientRest(); got != "" {
			t.Fatalf("client output: got %q", got)
		}
	})
}

// TestPollServerExit: when the server's output ends first, pending calls
// get an error (and count: Done(true)), and Run returns ErrUpstreamExited
// without waiting for the client.
func TestPollServerExit(t *testing.T) {
	h := newPollHarness(t, allowAll, nil, false)
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`)
	h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	h.serverGets()
	h.serverGets()
	h.fromServer(`{"jsonrpc":"2.0","id":2,"result":{}}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":2,"result":{}}` {
		t.Fatalf("client got %s", got)
	}
	h.server.Close()
	if got := h.clientGets(); !strings.HasPrefix(got, `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"the MCP server exited before answering"`) {
		t.Fatalf("pending call after the server exited: client got %s", got)
	}
	err, ok := h.wait()
	if !ok || !errors.Is(err, ErrUpstreamExited) {
		t.Fatalf("Run: %v (returned: %v), want ErrUpstreamExited", err, ok)
	}
	// The server got the call and never answered: it counts (see
	// outcomeUnknown).
	if got := fmt.Sprint(h.dones()); got != "[true]" {
		t.Fatalf("Done calls: got %s, want [true]", got)
	}
	// Run is done with the client's input while the client is still open.
	h.assertPolling(false)
}

// TestPollMalformed: malformed client lines are answered with a JSON-RPC
// error and the loop keeps serving; malformed server lines are dropped.
func TestPollMalformed(t *testing.T) {
	h := newPollHarness(t, allowAll, nil, false)
	tests := []struct{ in, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: not a JSON object"}}`},
		{`not json at all`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: not a JSON object"}}`},
		{"\xff\xfe", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: not a JSON object"}}`},
		{`{"jsonrpc":"1.0","id":4,"method":"ping"}`, `{"jsonrpc":"2.0","id":4,"error":{"code":-32600,"message":"invalid request: not a JSON-RPC 2.0 request, notification or response"}}`},
		{`[{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"x"}}]`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"arguments":{}}}`, `{"jsonrpc":"2.0","id":8,"error":{"code":-32602,`},
	}
	for _, tt := range tests {
		h.fromClient(tt.in)
		if got := h.clientGets(); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%q: client got %s, want %s", tt.in, got, tt.want)
		}
	}
	// Malformed and good lines in one write: each malformed one answered,
	// each good one forwarded, in order.
	var batch strings.Builder
	var good []string
	for i := range 50 {
		batch.WriteString(`{"broken` + strconv.Itoa(i) + "\n")
		g := `{"jsonrpc":"2.0","id":` + strconv.Itoa(100+i) + `,"method":"ping"}`
		batch.WriteString(g + "\n")
		good = append(good, g)
	}
	h.send(h.client, batch.String())
	for i := range good {
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error: not a JSON object"}}` {
			t.Fatalf("malformed line %d: client got %s", i, got)
		}
	}
	for i, g := range good {
		if got := h.serverGets(); got != g {
			t.Fatalf("good line %d: server got %s, want %s", i, got, g)
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
	h.fromServer("\xff")
	h.fromServer(`{"jsonrpc":"2.0","id":10,"result":{},"error":{"code":1,"message":"both"}}`)
	if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":10,"error":{"code":-32000,"message":"the MCP server sent a malformed response"}}` {
		t.Fatalf("broken server response: client got %s", got)
	}
	note := `{"jsonrpc":"2.0","method":"notifications/still/here"}`
	h.fromServer(note)
	if got := h.clientGets(); got != note {
		t.Fatalf("after malformed server output: client got %s", got)
	}
	// Nothing malformed reached the server.
	h.client.Close()
	if rest := h.serverRest(); rest != "" {
		t.Fatalf("the server also got %q", rest)
	}
}

// TestPollConcurrentClients: many goroutines write whole lines to the
// client pipe at once; the one relay decides every call once, forwards
// every allowed call and no denied one, and each request gets exactly its
// answer, from a server that answers concurrently with the writers.
func TestPollConcurrentClients(t *testing.T) {
	h := newPollHarness(t, func(in *bundles.Input) Verdict {
		return Verdict{Allow: in.Tool == "echo", Message: "denied"}
	}, nil, false)
	const writers, each = 8, 300
	// The server: answer each request, echoing its id, as it comes.
	type served struct {
		ids  map[string]int
		err  error
		tool map[string]int
	}
	serverDone := make(chan served, 1)
	go func() {
		s := served{ids: map[string]int{}, tool: map[string]int{}}
		var out []byte
		for {
			h.serverIn.SetReadDeadline(time.Now().Add(pollTimeout))
			l, err := h.toServer.ReadString('\n')
			if err == io.EOF && l == "" {
				break
			}
			if err != nil {
				s.err = err
				break
			}
			// Lines look like {"jsonrpc":"2.0","id":"w-i","method":...}.
			id := between(l, `"id":`, `,"method"`)
			s.ids[id]++
			s.tool[between(l, `"name":"`, `"`)]++
			out = append(append(out[:0], `{"jsonrpc":"2.0","id":`+id+`,"result":{"from":"server"}}`...), '\n')
			if err := sendFile(h.server, string(out)); err != nil {
				s.err = err
				break
			}
		}
		serverDone <- s
	}()
	// The client's reader: every answer, by id.
	clientDone := make(chan map[string]string, 1)
	go func() {
		got := map[string]string{}
		for len(got) < writers*each {
			h.clientOut.SetReadDeadline(time.Now().Add(pollTimeout))
			l, err := h.toClient.ReadString('\n')
			if err != nil {
				break
			}
			id := between(l, `"id":`, `,"`)
			if _, dup := got[id]; dup {
				got[id] = "duplicate"
			} else {
				got[id] = strings.TrimSuffix(l, "\n")
			}
		}
		clientDone <- got
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := `"` + strconv.Itoa(w) + "-" + strconv.Itoa(i) + `"`
				var l string
				switch i % 3 {
				case 0:
					l = `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo","arguments":{"w":` + strconv.Itoa(w) + `}}}`
				case 1:
					l = `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"rm"}}`
				case 2:
					l = `{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}`
				}
				if err := sendFile(h.client, l+"\n"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	answers := <-clientDone
	h.client.Close() // the server then sees EOF
	s := <-serverDone
	if s.err != nil {
		t.Fatalf("server: %v", s.err)
	}
	if len(answers) != writers*each {
		t.Fatalf("the client got %d answers, want %d", len(answers), writers*each)
	}
	for w := range writers {
		for i := range each {
			id := `"` + strconv.Itoa(w) + "-" + strconv.Itoa(i) + `"`
			a := answers[id]
			want := `{"jsonrpc":"2.0","id":` + id + `,"result":{"from":"server"}}`
			forwarded := 1
			if i%3 == 1 {
				want = `{"jsonrpc":"2.0","id":` + id + `,"result":{"content":[{"type":"text","text":"denied"}],"isError":true,"_meta":{"toolgate/decision_id":"","toolgate/rule":"","toolgate/bundle":""}}}`
				forwarded = 0
			}
			if a != want {
				t.Fatalf("request %s: client got %q, want %q", id, a, want)
			}
			if s.ids[id] != forwarded {
				t.Fatalf("request %s reached the server %d times, want %d", id, s.ids[id], forwarded)
			}
		}
	}
	if s.tool["rm"] != 0 || s.tool["echo"] != writers*each/3 || s.tool[""] != writers*each/3 { // "": the pings
		t.Fatalf("tools the server was asked to call: %v", s.tool)
	}
	if n, want := len(h.decided()), writers*(each/3*2); n != want {
		t.Fatalf("Decide called %d times, want %d", n, want)
	}
	if d := h.dones(); len(d) != writers*each/3 || !all(d) {
		t.Fatalf("Done calls: %d, want %d, all true", len(d), writers*each/3)
	}
}

// between returns the text of s between the first before and the next
// after it.
func between(s, before, after string) string {
	_, s, ok := strings.Cut(s, before)
	if !ok {
		return ""
	}
	s, _, _ = strings.Cut(s, after)
	return s
}

// TestPollLargeBothWays is a synchronous server (it reads a request, then
// writes its whole answer, then reads the next) with a client that
// pipelines two requests and reads answers on its own goroutine, the
// requests and answers each bigger than a pipe holds. Connected directly
// the two never block each other, and through the two-goroutine relay
// neither; the poll loop must not deadlock them either (it did, before its
// writes to the server spilled instead of waiting: see spillWriter).
func TestPollLargeBothWays(t *testing.T) {
	for _, portable := range []bool{true, false} {
		t.Run(map[bool]string{true: "two-goroutine relay", false: "poll loop"}[portable], func(t *testing.T) {
			h := newPollHarness(t, allowAll, nil, portable)
			// Requests of 256 KiB, answers of 4 MiB: the second request is
			// whole long before the first answer is.
			req := func(id int) string {
				return `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call","params":{"name":"echo","arguments":{"t":"` + strings.Repeat("q", 256<<10) + `"}}}`
			}
			answer := func(id int) string {
				return `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"result":{"content":[{"type":"text","text":"` + strings.Repeat("a", 4<<20) + `"}]}}`
			}
			serverDone := make(chan error, 1)
			go func() {
				for range 2 {
					h.serverIn.SetReadDeadline(time.Now().Add(pollTimeout))
					l, err := h.toServer.ReadString('\n')
					if err != nil {
						serverDone <- err
						return
					}
					id, _ := strconv.Atoi(between(l, `"id":`, `,`))
					if err := sendFile(h.server, answer(id)+"\n"); err != nil {
						serverDone <- fmt.Errorf("answering %d: %w", id, err)
						return
					}
				}
				serverDone <- nil
			}()
			clientDone := make(chan error, 1)
			go func() {
				for id := range 2 {
					h.clientOut.SetReadDeadline(time.Now().Add(pollTimeout))
					l, err := h.toClient.ReadString('\n')
					if err != nil {
						clientDone <- err
						return
					}
					if l != answer(id)+"\n" {
						clientDone <- fmt.Errorf("answer %d: got %.80s…", id, l)
						return
					}
				}
				clientDone <- nil
			}()
			if err := sendFile(h.client, req(0)+"\n"+req(1)+"\n"); err != nil {
				t.Errorf("client: %v", err)
			}
			if err := <-serverDone; err != nil {
				t.Errorf("server: %v; the relay:\n%s", err, goroutineWith("proxy.(*Stdio).relayPolled("))
			}
			if err := <-clientDone; err != nil {
				t.Errorf("client: %v", err)
			}
		})
	}
}

// TestSpillWriterUnpolledPipe: the binary's server input is a non-blocking
// pipe outside the Go runtime's poller (cmd/toolgate serverPipes). Writes
// larger than the pipe holds return at once, spill, and arrive whole and in
// order; Close waits for the spill before it closes.
func TestSpillWriterUnpolledPipe(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	defer r.Close()
	if err := syscall.SetNonblock(p[1], true); err != nil {
		t.Fatal(err)
	}
	rc, ok := nonBlocking(w)
	if !ok {
		t.Fatal("a non-blocking pipe is not seen as one")
	}
	sw := &spillWriter{rc: rc, file: w}
	var want bytes.Buffer
	start := time.Now()
	for i := range 8 {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, 300<<10) // each over a pipe's 64 KiB
		want.Write(chunk)
		if n, err := sw.Write(chunk); err != nil || n != len(chunk) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("writes waited %v for a reader that had not started", d)
	}
	if !sw.backlog.Load() {
		t.Error("2.4 MiB into a 64 KiB pipe with no reader, and nothing spilled")
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r) // ends once the spill is written and the pipe closed
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes, want %d, in order", len(got), want.Len())
	}
	if sw.backlog.Load() {
		t.Error("still spilling after the reader got everything")
	}
}

// TestSpillWriterAllocs: a write that fits in the pipe, the poll loop's
// every forwarded message, allocates nothing (it made a closure and moved
// two results to the heap per write before).
func TestSpillWriterAllocs(t *testing.T) {
	r, w := pipe(t)
	defer r.Close()
	defer w.Close()
	rc, ok := nonBlocking(w)
	if !ok {
		t.Fatal("os.Pipe's write end is not seen as non-blocking")
	}
	sw := &spillWriter{rc: rc, file: w}
	line := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}` + "\n")
	buf := make([]byte, 4096)
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := sw.Write(line); n != len(line) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
		if n, err := io.ReadFull(r, buf[:len(line)]); err != nil || !bytes.Equal(buf[:n], line) {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations a write, want 0", allocs)
	}
	if sw.backlog.Load() {
		t.Error("a write that fits spilled")
	}
}

// TestSpillCloseWithWriters: while goroutines write long lines to the
// server (as the CallTimeout sweeper and approval holds do) and the pipe
// spills, closing the server's input (client EOF, shutdown) lets every line
// begun finish, and the server reads only whole lines, then EOF. (From
// review: Close used to race them and could cut a line short.)
func TestSpillCloseWithWriters(t *testing.T) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	defer r.Close()
	if err := syscall.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	rc, _ := nonBlocking(w)
	sw := &spillWriter{rc: rc, file: w}
	var lw lineWriter
	lw.setPeer(sw, sw)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line := bytes.Repeat([]byte{byte('a' + g)}, 100<<10)
			for range 20 {
				if lw.write(line) != nil {
					return // closed
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond) // some lines written, the pipe full
	if !lw.close() {
		t.Fatal("close before a peer")
	}
	wg.Wait()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(got, []byte("\n"))
	if last := lines[len(lines)-1]; len(last) != 0 {
		t.Fatalf("the server's input ends in a cut line of %d bytes", len(last))
	}
	for i, l := range lines[:len(lines)-1] {
		if len(l) != 100<<10 || bytes.Count(l, l[:1]) != len(l) {
			t.Fatalf("line %d: %d bytes, mixed or cut", i, len(l))
		}
	}
	if len(lines) < 2 {
		t.Error("no line reached the server")
	}
	if lw.write([]byte("late")) == nil {
		t.Error("a write after close succeeded")
	}
}
