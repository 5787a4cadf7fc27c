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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// DefaultMaxLine is the longest message line [Stdio] accepts by default:
// 16 MiB, newline excluded.
const DefaultMaxLine = 16 << 20

// ErrUpstreamExited is returned by [Stdio.Run] when the server's output
// ends before the client's input does.
var ErrUpstreamExited = errors.New("the MCP server closed its output (it exited)")

// Verdict is what the Decide hook says about one tools/call.
type Verdict struct {
	// Allow forwards the call; otherwise the proxy answers it with an
	// isError result carrying Message and, in _meta, DecisionID, Rule and
	// Bundle.
	Allow      bool
	Message    string
	DecisionID string
	Rule       string
	Bundle     string
	// Done, when set on an allowed call, is called once with the upstream
	// outcome: ok is false for a JSON-RPC error response, or when the
	// server exits before answering. It commits or rolls back counters.
	Done func(ok bool)
	// Approval, on a call that is not allowed, says it waits for a
	// person's approval (async mode): the transport answers with a JSON-RPC
	// error carrying its id (see [Enforcer.AppendDenial]).
	Approval *PendingApproval
	// Hold, when set, asks the transport to keep the call open (hold mode):
	// it calls Hold off its reading path and acts on the Verdict Hold
	// returns (which has no Hold) instead of this one.
	Hold func(ctx context.Context) Verdict
}

// Stdio relays one MCP client (newline-delimited JSON-RPC) to one MCP server
// process and enforces policy on the way: every message passes through
// untouched in both directions except
//
//   - a client tools/call request, which Decide sees first: a denied call is
//     answered by the proxy and never reaches the server;
//   - a server response to tools/list, from which every tool Hidden reports
//     is removed (and whose tool annotations are remembered for the
//     decision inputs of later calls).
//
// Malformed messages never stop the relay: from the client they are answered
// with a JSON-RPC error (-32700 or -32600; id null when no id can be read) or,
// for an invalid notification, logged; from the server they are logged and
// dropped. A line longer than MaxLine is treated as malformed.
//
// Set the fields, then call Run once. Decide and Hidden are called from the
// goroutine that reads the client and the one that reads the server
// respectively; each must be safe for concurrent use with the other.
type Stdio struct {
	// Server names the MCP server in decision inputs.
	Server string
	// Identity is the caller in decision inputs.
	Identity bundles.Identity
	// Decide decides a tools/call. Required.
	Decide func(ctx context.Context, in *bundles.Input) Verdict
	// Hidden reports whether a tool listed by the server is hidden from the
	// client; the input has empty arguments. Nil hides nothing.
	Hidden func(ctx context.Context, in *bundles.Input) bool
	// Logger receives a line per malformed message and per upstream
	// problem; nil means slog.Default().
	Logger *slog.Logger
	// MaxLine is the longest accepted line in bytes; 0 means DefaultMaxLine.
	MaxLine int
	// CallTimeout, when positive, bounds how long a forwarded request waits
	// for the server: past it the client gets a JSON-RPC error (-32000), an
	// allowed call's counters roll back, and the server's late answer is
	// dropped. Zero waits for ever.
	CallTimeout time.Duration

	toClient, toServer lineWriter
	clientClosed       atomic.Bool // set once the client's input has ended

	// DenyAsError answers denied calls with a JSON-RPC error instead of
	// an isError result (see [Enforcer.DenyAsError]).
	DenyAsError bool

	enforcer *Enforcer
	catalog  Catalog

	mu       sync.Mutex             // guards pending, timedOut
	pending  map[string]pendingCall // client requests awaiting the server, by raw id
	timedOut map[string]struct{}    // ids answered for the server after CallTimeout
}

// pendingCall is a client request the server has not answered yet.
type pendingCall struct {
	id       json.RawMessage
	method   string
	done     func(ok bool)
	deadline int64 // UnixNano after which it is answered with an error; 0: none
}

// lineWriter writes whole lines to one peer.
type lineWriter struct {
	mu sync.Mutex // guards w
	w  *bufio.Writer
}

// write writes line and a newline, and flushes.
func (lw *lineWriter) write(line []byte) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.w.Write(line)
	lw.w.WriteByte('\n')
	return lw.w.Flush()
}

// Run relays until the server's output ends. When the client's input ends
// first, Run closes serverIn (so the server can exit), waits for the
// server's output to end and returns nil. When the server's output ends
// first, every pending client request gets a JSON-RPC error and Run returns
// an error wrapping [ErrUpstreamExited]; the client reader is abandoned
// (the caller is expected to exit).
func (p *Stdio) Run(ctx context.Context, clientIn io.Reader, clientOut io.Writer, serverIn io.WriteCloser, serverOut io.Reader) error {
	if p.Decide == nil {
		return errors.New("proxy: Stdio.Decide is nil")
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if p.MaxLine <= 0 {
		p.MaxLine = DefaultMaxLine
	}
	p.pending = make(map[string]pendingCall)
	p.enforcer = &Enforcer{Server: p.Server, Decide: p.Decide, Hidden: p.Hidden, DenyAsError: p.DenyAsError, Notify: p.toClient.write}
	p.toClient.w = bufio.NewWriterSize(clientOut, 64<<10)
	p.toServer.w = bufio.NewWriterSize(serverIn, 64<<10)

	if p.CallTimeout > 0 {
		p.timedOut = make(map[string]struct{})
		stop := make(chan struct{})
		defer close(stop)
		go p.sweep(stop)
	}

	clientDone := make(chan error, 1)
	go func() {
		err := p.readLines(clientIn, func(line []byte, tooLong bool) error { return p.fromClient(ctx, line, tooLong) })
		if errors.Is(err, io.EOF) {
			p.clientClosed.Store(true)
		}
		serverIn.Close()
		clientDone <- err
	}()
	serverErr := p.readLines(serverOut, func(line []byte, tooLong bool) error { return p.fromServer(ctx, line, tooLong) })

	if p.clientClosed.Load() {
		err := <-clientDone
		p.failPending("the MCP server exited before answering")
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading the client: %w", err)
		}
		return nil
	}
	p.failPending("the MCP server exited before answering")
	if serverErr != nil && !errors.Is(serverErr, io.EOF) {
		return fmt.Errorf("%w: %v", ErrUpstreamExited, serverErr)
	}
	return ErrUpstreamExited
}

// failPending answers every pending request with an error and rolls back
// their reservations.
func (p *Stdio) failPending(msg string) {
	p.mu.Lock()
	pend := p.pending
	p.pending = map[string]pendingCall{}
	p.mu.Unlock()
	for _, c := range pend {
		if c.done != nil {
			c.done(false)
		}
		p.toClient.write(appendError(nil, c.id, codeUpstreamGone, msg))
	}
}

// readLines calls handle for each line of r, without its newline. A line
// longer than MaxLine is consumed to its end and handled with tooLong set
// and a truncated prefix. The line is only valid during handle. It returns
// the read error (io.EOF at the end) or handle's error.
func (p *Stdio) readLines(r io.Reader, handle func(line []byte, tooLong bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a line longer than br's buffer, being gathered
	n := 0          // length of the line so far
	for {
		frag, err := br.ReadSlice('\n')
		n += len(frag)
		if err == bufio.ErrBufferFull {
			if n <= p.MaxLine+1 {
				long = append(long, frag...)
			}
			continue
		}
		line := frag
		if len(long) > 0 {
			if n <= p.MaxLine+1 {
				long = append(long, frag...)
			}
			line = long
		}
		if n > 0 {
			hasNL := len(frag) > 0 && frag[len(frag)-1] == '\n'
			size := n
			if hasNL {
				size--
				line = line[:len(line)-1]
			}
			tooLong := size > p.MaxLine
			line = bytes.TrimSuffix(line, []byte("\r"))
			if tooLong || len(bytes.TrimSpace(line)) > 0 {
				if herr := handle(line, tooLong); herr != nil {
					return herr
				}
			}
		}
		n = 0
		if cap(long) > 1<<20 {
			long = nil // do not hold a huge buffer between messages
		} else {
			long = long[:0]
		}
		if err != nil {
			return err
		}
	}
}

func (p *Stdio) fromClient(ctx context.Context, line []byte, tooLong bool) error {
	if tooLong {
		p.Logger.Warn("client message too long", "limit_bytes", p.MaxLine)
		return p.toClient.write(appendError(nil, nil, codeInvalidRequest, fmt.Sprintf("message longer than %d bytes", p.MaxLine)))
	}
	m, k, code := classify(line)
	switch k {
	case kindInvalid:
		p.Logger.Warn("malformed client message", "code", code, "bytes", len(line))
		if code == codeInvalidRequest && m.ID == nil && looksLikeNotification(line) {
			return nil // JSON-RPC answers no notification, even a bad one
		}
		msg := "parse error: not a JSON object"
		if code == codeInvalidRequest {
			msg = "invalid request: not a JSON-RPC 2.0 request, notification or response"
		}
		return p.toClient.write(appendError(nil, m.ID, code, msg))
	}
	if !exactNames(line, k == kindRequest && *m.Method == "tools/call") {
		// The proxy must read the message as the server will: no repeated
		// member names, none differing only in case from one it reads.
		p.Logger.Warn("ambiguous client message (member names repeated or differing only in case)", "bytes", len(line))
		if k == kindNotification {
			return nil
		}
		return p.toClient.write(appendError(nil, m.ID, codeInvalidRequest, errAmbiguous))
	}
	switch k {
	case kindRequest:
		key := string(m.ID)
		c := pendingCall{id: m.ID, method: *m.Method}
		p.mu.Lock()
		_, dup := p.pending[key]
		p.mu.Unlock()
		if dup {
			return p.toClient.write(appendError(nil, m.ID, codeInvalidRequest, "request id "+key+" is already in use by a pending request"))
		}
		if c.method == "tools/call" {
			v, errLine := p.enforcer.DecideCall(ctx, &p.catalog, p.Identity, &m)
			if errLine != nil {
				return p.toClient.write(errLine)
			}
			if v.Hold != nil {
				p.hold(ctx, key, c, line, v)
				return nil
			}
			if !v.Allow {
				return p.toClient.write(p.enforcer.AppendDenial(nil, m.ID, &v))
			}
			c.done = v.Done
		}
		c.deadline = p.deadline()
		p.mu.Lock()
		p.pending[key] = c
		p.mu.Unlock()
	}
	// Notifications, responses to server requests, allowed requests:
	// forwarded as they came.
	return p.toServer.write(line)
}

// hold keeps a tools/call open while its Verdict's Hold waits for a
// person, off the client's reading path: the request id stays in use, and
// when Hold returns the call is forwarded (line, copied) or answered.
func (p *Stdio) hold(ctx context.Context, key string, c pendingCall, line []byte, v Verdict) {
	held := append([]byte(nil), line...)
	p.mu.Lock()
	p.pending[key] = c // the id is in use while the call is held
	p.mu.Unlock()
	go func() {
		v2 := v.Hold(ctx)
		if !v2.Allow {
			if _, ok := p.take(c.id); ok { // else already answered (the server exited)
				p.toClient.write(p.enforcer.AppendDenial(nil, c.id, &v2))
			}
			return
		}
		c.done = v2.Done
		c.deadline = p.deadline()
		p.mu.Lock()
		_, still := p.pending[key]
		if still {
			p.pending[key] = c
		}
		p.mu.Unlock()
		if !still {
			if c.done != nil {
				c.done(false)
			}
			return
		}
		p.toServer.write(held)
	}()
}

// deadline returns the deadline of a request forwarded now (0: none).
func (p *Stdio) deadline() int64 {
	if p.CallTimeout <= 0 {
		return 0
	}
	return time.Now().Add(p.CallTimeout).UnixNano()
}

// maxTimedOut bounds the ids of timed-out calls kept to drop late answers.
const maxTimedOut = 4096

// sweep answers, until stop closes, every forwarded request past its
// deadline: an error to the client, a rollback for its counters.
func (p *Stdio) sweep(stop <-chan struct{}) {
	every := min(max(p.CallTimeout/10, 5*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	msg := fmt.Sprintf("the MCP server did not answer within %s", p.CallTimeout)
	var late []pendingCall
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		late = late[:0]
		p.mu.Lock()
		for key, c := range p.pending {
			if c.deadline != 0 && now > c.deadline {
				delete(p.pending, key)
				if len(p.timedOut) >= maxTimedOut {
					clear(p.timedOut)
				}
				p.timedOut[key] = struct{}{}
				late = append(late, c)
			}
		}
		p.mu.Unlock()
		for _, c := range late {
			p.Logger.Warn("MCP server call timed out", "method", c.method, "timeout", p.CallTimeout.String())
			if c.done != nil {
				c.done(false)
			}
			p.toClient.write(appendError(nil, c.id, codeUpstreamGone, msg))
		}
	}
}

// lateAnswer reports (and forgets) whether id is a call already answered
// because it timed out.
func (p *Stdio) lateAnswer(id json.RawMessage) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.timedOut[string(id)]; ok {
		delete(p.timedOut, string(id))
		return true
	}
	return false
}

// looksLikeNotification reports whether an invalid message has a method
// but no id.
func looksLikeNotification(line []byte) bool {
	var probe struct {
		ID     json.RawMessage `json:"id"`
		Method json.RawMessage `json:"method"`
	}
	return json.Unmarshal(line, &probe) == nil && probe.ID == nil && probe.Method != nil
}

func (p *Stdio) fromServer(ctx context.Context, line []byte, tooLong bool) error {
	if tooLong {
		p.Logger.Warn("server message too long; dropped", "limit_bytes", p.MaxLine)
		return nil
	}
	m, k, code := classify(line)
	switch k {
	case kindInvalid:
		if m.ID != nil {
			// A broken response to a pending request: the client gets an error
			// for it rather than waiting forever.
			if c, ok := p.take(m.ID); ok {
				p.Logger.Warn("malformed server response", "code", code, "method", c.method)
				if c.done != nil {
					c.done(false)
				}
				return p.toClient.write(appendError(nil, c.id, codeUpstreamGone, "the MCP server sent a malformed response"))
			}
		}
		p.Logger.Warn("malformed server message; dropped", "code", code, "bytes", len(line))
		return nil
	case kindResponse:
		c, ok := p.take(m.ID)
		if !ok {
			if p.lateAnswer(m.ID) {
				p.Logger.Warn("late answer from the MCP server dropped (the call timed out)", "id", string(m.ID))
				return nil
			}
			break
		}
		if c.done != nil {
			c.done(m.Error == nil)
		}
		if c.method == "tools/list" && m.Result != nil {
			if filtered := p.enforcer.FilterTools(ctx, &p.catalog, p.Identity, &m); filtered != nil {
				return p.toClient.write(filtered)
			}
		}
	}
	return p.toClient.write(line)
}

// take removes and returns the pending request with this id.
func (p *Stdio) take(id json.RawMessage) (pendingCall, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.pending[string(id)]
	if ok {
		delete(p.pending, string(id))
	}
	return c, ok
}

func appendInt(dst []byte, n int) []byte { return strconv.AppendInt(dst, int64(n), 10) }

func appendString(dst []byte, s string) []byte { return bundles.AppendString(dst, s) }
