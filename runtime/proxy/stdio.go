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
	"net/http"
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
	// Bundle. [Policy] leaves DecisionID empty on an allowed call that
	// neither an audit log nor a log line records.
	Allow      bool
	Message    string
	DecisionID string
	Rule       string
	Bundle     string
	// Done, when set on an allowed call, is called once with the upstream
	// outcome: ok is false when the server answers with a JSON-RPC error
	// (or an HTTP error status), or never got the call; true when it
	// answers with a result, and when the outcome is unknown (see
	// [outcomeUnknown]). It commits (true) or rolls back (false) counters.
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
//     decision inputs of later calls);
//   - with CallTimeout set, a request the server does not answer in time:
//     the proxy answers it with an error and drops the server's late answer.
//
// Malformed messages never stop the relay: from the client they are answered
// with a JSON-RPC error (-32700 or -32600; id null when no id can be read) or,
// for an invalid notification, logged; from the server they are logged and
// dropped. A line longer than MaxLine is treated as malformed. What counts as
// malformed is [classify]'s business: in particular a message that names an
// envelope member twice, or in another case, is refused, and so is a
// tools/call whose params do the same with name or arguments, or whose tool
// name is not valid UTF-8 (see [Enforcer.DecideCall]).
//
// Each direction is one goroutine that reads into a buffer it reuses and
// handles every complete line in it before reading again; the messages it
// forwards or answers are written out together once those lines are handled
// (one write per peer per read, not per message).
//
// Set the fields, then call Run once. Decide and Hidden are called from the
// goroutine that reads the client and the one that reads the server
// respectively; each must be safe for concurrent use with the other, and
// must not keep the input (or the bytes it points to) past its return.
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
	// ReadsAnnotations reports whether the policy in force reads
	// tool.annotations (see [Enforcer.ReadsAnnotations]): a call that needs
	// the server's list of tools then waits while the proxy lists them with
	// requests of its own, whose ids no client can guess and whose answers
	// the client never sees. Later tools/call requests wait behind it, in
	// order; other messages pass. A "method not found" answer lists
	// nothing; another error, an unreadable answer, or no end within
	// CallTimeout (DefaultListTimeout when zero) for the whole listing
	// fails the calls waiting on it with a JSON-RPC error (-32000), and the
	// next call lists again. Nil never lists.
	ReadsAnnotations func() bool
	// UpstreamError, when set, is told of each failure of the MCP server:
	// unreachable, an error status, an answer that cannot be read, a call
	// it did not answer in time (for metrics).
	UpstreamError func()
	// Listed, when set, is told of each of the proxy's own listings of the
	// server's tools as it ends: listed or failed (for metrics).
	Listed func(ok bool)
	// Logger receives a line per malformed message and per upstream
	// problem; nil means slog.Default().
	Logger *slog.Logger
	// MaxLine is the longest accepted line in bytes; 0 means DefaultMaxLine.
	MaxLine int
	// CallTimeout, when positive, bounds how long a forwarded request waits
	// for the server: past it the client gets a JSON-RPC error (-32000), an
	// allowed call's counters count (Done(true): see [outcomeUnknown]), and the server gets
	// notifications/cancelled for it (not for initialize, which MCP does not
	// let a client cancel). The server's late answer, if it comes within 16
	// CallTimeouts, is dropped, and until then the request's id stays in
	// use: a new request reusing it is refused, since the server would not
	// tell the two answers apart. Overdue requests are found by one sweep
	// every CallTimeout/8 (at most a second), so the error comes up to that
	// much late; a request costs no timer. Zero waits for ever.
	CallTimeout time.Duration

	toClient, toServer lineWriter
	clientClosed       atomic.Bool // set once the client's input has ended

	// DenyAsError answers denied calls with a JSON-RPC error instead of
	// an isError result (see [Enforcer.DenyAsError]).
	DenyAsError bool

	enforcer *Enforcer
	catalog  Catalog

	mu      sync.Mutex             // guards pending, tick, listing, closeAfterListing, ended
	pending map[string]pendingCall // client requests awaiting the server, by raw id
	tick    uint32                 // timeout sweeps so far
	expire  uint32                 // sweeps after which a request has timed out
	forget  uint32                 // sweeps after which a timed-out id is free
	// listing is the proxy's own listing of the server's tools in flight,
	// nil when none (see stdio_listing.go).
	listing *stdioListing
	runCtx  context.Context // Run's, for calls decided off its goroutines
	// closeAfterListing: the client's input ended while calls waited on a
	// listing; the server's input closes once they are sent.
	closeAfterListing bool
	ended             bool // the pending calls were failed: the server exited, or a shutdown aborted them
}

// pendingCall is a client request the server has not answered yet.
type pendingCall struct {
	id      json.RawMessage // a copy
	method  string
	done    func(ok bool)
	tick    uint32 // the sweep count when it was forwarded, or timed out
	held    bool   // waiting for a person's approval or for a listing, not yet forwarded
	expired bool   // timed out and answered; the server's answer is dropped
	own     bool   // the proxy's own tools/list (held: no sweep times it out), answered to nobody
	waits   bool   // waiting on a listing, or being released from one: a cancellation drops it
	// listAll: a client's tools/list asking for the whole list, at the
	// catalog's generation listGen.
	listAll bool
	listGen uint64
}

// forgetAfter is how many CallTimeouts a timed-out request's id stays in
// use, waiting for the server's late answer.
const forgetAfter = 16

// lineWriter writes whole lines to one peer, through a buffer: queue and
// queueAppend add a line, flush sends what was queued; write does both.
// Safe for concurrent use.
type lineWriter struct {
	mu     sync.Mutex // guards w, closer, closed
	w      *bufio.Writer
	closer io.Closer // closes the peer's input (the server's): see close
	closed bool
}

// setPeer makes the writer write to w and close through c.
func (lw *lineWriter) setPeer(w io.Writer, c io.Closer) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.w, lw.closer = bufio.NewWriterSize(w, 64<<10), c
}

// close flushes what is queued and closes the peer's input, under the
// writer's lock: no line another goroutine is writing is cut short, and
// lines written afterwards fail. It reports false when there is no peer
// yet (before Run).
func (lw *lineWriter) close() bool {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closer == nil {
		return false
	}
	if !lw.closed {
		lw.closed = true
		lw.w.Flush()
		lw.closer.Close()
	}
	return true
}

// write writes line and a newline, and flushes.
func (lw *lineWriter) write(line []byte) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.w.Write(line)
	lw.w.WriteByte('\n')
	return lw.w.Flush()
}

// queue adds line and a newline to what the next flush sends. A line longer
// than the buffer is written out at once, without a copy.
func (lw *lineWriter) queue(line []byte) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.w.Write(line)
	return lw.w.WriteByte('\n')
}

// queueAppend adds the line that build appends to its argument, and a
// newline, to what the next flush sends; build appends to the writer's
// buffer, so a short line costs no allocation.
func (lw *lineWriter) queueAppend(build func(dst []byte) []byte) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	b := append(build(lw.w.AvailableBuffer()), '\n')
	_, err := lw.w.Write(b)
	return err
}

// flush writes out what was queued.
func (lw *lineWriter) flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.w.Buffered() == 0 {
		return nil
	}
	return lw.w.Flush()
}

// batch queues the lines one reading goroutine sends while it handles what
// one read brought, and flushes them when it is done: one write per peer
// per read, not per message.
type batch struct {
	p              *Stdio
	client, server bool // lines are queued for the client, the server
}

func (b *batch) toClient(line []byte) error {
	b.client = true
	return b.p.toClient.queue(line)
}

func (b *batch) toClientAppend(build func(dst []byte) []byte) error {
	b.client = true
	return b.p.toClient.queueAppend(build)
}

func (b *batch) toServer(line []byte) error {
	b.server = true
	return b.p.toServer.queue(line)
}

// flush writes out what was queued.
func (b *batch) flush() error {
	var errServer, errClient error
	if b.server {
		errServer = b.p.toServer.flush()
	}
	if b.client {
		errClient = b.p.toClient.flush()
	}
	b.client, b.server = false, false
	if errServer != nil {
		return errServer
	}
	return errClient
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
	p.runCtx = ctx
	p.enforcer = &Enforcer{Server: p.Server, Decide: p.Decide, Hidden: p.Hidden, DenyAsError: p.DenyAsError, Notify: p.toClient.write, ReadsAnnotations: p.ReadsAnnotations}
	p.toClient.w = bufio.NewWriterSize(clientOut, 64<<10)
	p.toServer.setPeer(serverIn, serverIn)
	if p.CallTimeout > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go p.sweep(stop)
	}

	if clientErr, serverErr, ok := p.relayPolled(ctx, clientIn, serverIn, serverOut); ok {
		p.failPending("the MCP server exited before answering")
		if p.clientClosed.Load() {
			if clientErr != nil && clientErr != io.EOF {
				return fmt.Errorf("reading the client: %w", clientErr)
			}
			return nil
		}
		if serverErr != nil && serverErr != io.EOF {
			return fmt.Errorf("%w: %v", ErrUpstreamExited, serverErr)
		}
		return ErrUpstreamExited
	}
	clientDone := make(chan error, 1)
	go func() {
		b := &batch{p: p}
		err := readLines(clientIn, p.MaxLine, func(line []byte, tooLong bool) error { return p.fromClient(ctx, b, line, tooLong) }, b.flush)
		if errors.Is(err, io.EOF) {
			p.clientClosed.Store(true)
		}
		p.closeServerInput()
		clientDone <- err
	}()
	b := &batch{p: p}
	serverErr := readLines(serverOut, p.MaxLine, func(line []byte, tooLong bool) error { return p.fromServer(ctx, b, line, tooLong) }, b.flush)

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
	// Requests the server was given stay, marked expired, so that answers
	// it sends later are dropped (the client gets this error only); held
	// calls and the proxy's own requests go.
	var pend []pendingCall
	for key, c := range p.pending {
		switch {
		case c.expired:
		case c.own || c.held || c.waits:
			delete(p.pending, key)
			if !c.own {
				pend = append(pend, c)
			}
		default:
			pend = append(pend, c)
			c.expired, c.tick = true, p.tick
			p.pending[key] = c
		}
	}
	p.ended = true
	cutShort := false             // a listing under way, failed by this
	if l := p.listing; l != nil { // its calls are pending: answered below
		l.timer.Stop()
		l.waiting = nil
		p.listing = nil
		cutShort = !l.finished
		l.finished = true
	}
	p.mu.Unlock()
	if cutShort && p.Listed != nil {
		p.Listed(false)
	}
	for _, c := range pend {
		if c.done != nil {
			c.done(outcomeUnknown(true))
		}
		p.toClient.write(appendError(nil, c.id, codeUpstreamGone, msg))
	}
}

// readLines calls handle for each line of r, without its newline (nor a
// carriage return before it); lines of nothing but white space are
// skipped. A line longer than MaxLine is consumed to its end and handled
// with tooLong set (and no line). The line is only valid during handle. It
// returns the read error (io.EOF at the end) or handle's error.
func (p *Stdio) readLines(r io.Reader, handle func(line []byte, tooLong bool) error) error {
	return readLines(r, p.MaxLine, handle, nil)
}

// readLines is [Stdio.readLines] for lines of at most max bytes; batchDone,
// when set, is called after the lines of each read are handled.
func readLines(r io.Reader, max int, handle func(line []byte, tooLong bool) error, batchDone func() error) error {
	lb := newLineBuffer(max)
	for {
		n, err := r.Read(lb.free())
		handled, herr := lb.split(n, err != nil, handle)
		if herr != nil {
			return herr
		}
		if handled && batchDone != nil {
			if berr := batchDone(); berr != nil {
				return berr
			}
		}
		if err != nil {
			return err
		}
	}
}

// lineBuffer splits what is read from one peer into lines. It reads into
// one buffer, reused from read to read (grown for a long line and shrunk
// again after it), and hands out views into it.
type lineBuffer struct {
	buf        []byte
	start, end int  // buf[start:end] is read and not yet handled
	scanned    int  // buf[start:scanned] has no newline
	skipping   bool // discarding the rest of a line longer than max
	max        int
}

const lineBufferSize = 64 << 10

func newLineBuffer(max int) *lineBuffer {
	return &lineBuffer{buf: make([]byte, lineBufferSize), max: max}
}

// free returns the buffer space to read into next: never empty.
func (lb *lineBuffer) free() []byte { return lb.buf[lb.end:] }

// split takes the n bytes just read into free() and hands each complete
// line to handle (see handleLine); at the end of the input (last), the
// rest too, newline or not. It reports whether it handled a line.
func (lb *lineBuffer) split(n int, last bool, handle func(line []byte, tooLong bool) error) (handled bool, err error) {
	lb.end += n
	for {
		i := bytes.IndexByte(lb.buf[lb.scanned:lb.end], '\n')
		if i < 0 {
			break
		}
		nl := lb.scanned + i
		if err := handleLine(lb.buf[lb.start:nl], lb.skipping || nl-lb.start > lb.max, handle); err != nil {
			return true, err
		}
		handled, lb.skipping = true, false
		lb.start, lb.scanned = nl+1, nl+1
	}
	lb.scanned = lb.end
	if last {
		if lb.end > lb.start || lb.skipping {
			// The last line has no newline.
			handled = true
			err = handleLine(lb.buf[lb.start:lb.end], lb.skipping || lb.end-lb.start > lb.max, handle)
		}
		lb.start, lb.end, lb.scanned, lb.skipping = 0, 0, 0, false
		return handled, err
	}
	switch {
	case lb.skipping || lb.end-lb.start > lb.max:
		lb.skipping = true
		lb.start, lb.end, lb.scanned = 0, 0, 0
	case lb.start == lb.end:
		lb.start, lb.end, lb.scanned = 0, 0, 0
		if len(lb.buf) > 1<<20 {
			lb.buf = make([]byte, lineBufferSize) // do not hold a huge buffer between messages
		}
	case lb.end == len(lb.buf) && lb.start > 0:
		lb.end = copy(lb.buf, lb.buf[lb.start:lb.end])
		lb.scanned -= lb.start
		lb.start = 0
	case lb.end == len(lb.buf):
		grown := make([]byte, min(2*len(lb.buf), lb.max+1))
		copy(grown, lb.buf[:lb.end])
		lb.buf = grown
	}
	return handled, nil
}

// handleLine hands one line, without its newline, to handle.
func handleLine(line []byte, tooLong bool, handle func(line []byte, tooLong bool) error) error {
	if tooLong {
		return handle(nil, true)
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if lexSpace(line, 0) == len(line) {
		return nil
	}
	return handle(line, false)
}

func (p *Stdio) upstreamError() {
	if p.UpstreamError != nil {
		p.UpstreamError()
	}
}

func (p *Stdio) fromClient(ctx context.Context, b *batch, line []byte, tooLong bool) error {
	if tooLong {
		p.Logger.Warn("client message too long", "limit_bytes", p.MaxLine)
		return b.toClient(appendError(nil, nil, codeInvalidRequest, fmt.Sprintf("message longer than %d bytes", p.MaxLine)))
	}
	// A raw CR is JSON whitespace, but a server reading its input in text
	// mode (Python's MCP SDK) also ends a line at one: a client could hide
	// a second message, unseen by the policy, behind it. In a line that
	// is valid JSON a raw CR can only be whitespace, so it goes on as a
	// space.
	if bytes.IndexByte(line, '\r') >= 0 {
		blankCRs(line)
	}
	m, k, code := classifyView(line) // m's fields are views into line
	if k == kindInvalid {
		p.Logger.Warn("malformed client message", "code", code, "bytes", len(line))
		if code == codeInvalidRequest && m.ID == nil && looksLikeNotification(line) {
			return nil // JSON-RPC answers no notification, even a bad one
		}
		msg := "parse error: not a JSON object"
		if code == codeInvalidRequest {
			msg = "invalid request: not a JSON-RPC 2.0 request, notification or response"
		}
		return b.toClientAppend(func(dst []byte) []byte { return appendError(dst, m.ID, code, msg) })
	}
	if !m.exactNames(line, k == kindRequest && *m.Method == "tools/call") {
		// The proxy must read the message as the server will: no repeated
		// member names, none differing only in case from one it reads.
		p.Logger.Warn("ambiguous client message (member names repeated or differing only in case)", "bytes", len(line))
		if k == kindNotification {
			return nil
		}
		return b.toClientAppend(func(dst []byte) []byte { return appendError(dst, m.ID, codeInvalidRequest, errAmbiguous) })
	}
	switch k {
	case kindRequest:
		idk := idKey(m.ID)
		p.mu.Lock()
		old, inUse := p.pending[string(idk)]
		listing := p.listing != nil
		p.mu.Unlock()
		if inUse {
			msg := "request id " + string(m.ID) + " is already in use by a pending request"
			if old.expired {
				msg = "request id " + string(m.ID) + " is still in use: the MCP server has not answered the request with this id that timed out"
			}
			return b.toClientAppend(func(dst []byte) []byte { return appendError(dst, m.ID, codeInvalidRequest, msg) })
		}
		key := string(idk)
		id := json.RawMessage(key) // the id as the client wrote it, for the proxy's own answers
		if len(idk) != len(m.ID) || &idk[0] != &m.ID[0] {
			id = bytes.Clone(m.ID)
		}
		c := pendingCall{id: id, method: *m.Method}
		if c.method == "tools/call" {
			if listing { // calls wait behind it, in order
				if queued, err := p.awaitListing(b, c, line, false); queued || err != nil {
					return err
				}
			}
			forward, listFirst, err := p.decideCall(ctx, b, key, c, &m, line)
			switch {
			case listFirst:
				_, err = p.awaitListing(b, c, line, true)
				return err
			case !forward || err != nil:
				return err
			}
			return b.toServer(line)
		}
		if c.method == "tools/list" && fullListing(m.Params) {
			c.listAll, c.listGen = true, p.catalog.generation()
		}
		p.mu.Lock()
		c.tick = p.tick
		p.pending[key] = c
		p.mu.Unlock()
	}
	if k == kindNotification && *m.Method == "notifications/cancelled" {
		// A call still waiting on a listing never reaches the server.
		scanMembers(m.Params, lexSpace(m.Params, 0), func(key, value []byte) {
			if string(key) == `"requestId"` {
				p.cancelWaiting(value)
			}
		})
	}
	// Notifications, responses to server requests, allowed requests:
	// forwarded as they came.
	return b.toServer(line)
}

// decideCall decides the tools/call request m (a view into line, as
// pending call c, whose id is key): it answers it, holds it for approval,
// or makes it pending and reports that the caller is to forward line. A
// call that must wait for a listing of the server's tools is not decided
// (listFirst; see [Enforcer.DecideCall]).
func (p *Stdio) decideCall(ctx context.Context, b *batch, key string, c pendingCall, m *message, line []byte) (forward, listFirst bool, err error) {
	v, errLine, listFirst := p.enforcer.DecideCall(ctx, &p.catalog, p.Identity, m)
	switch {
	case listFirst:
		return false, true, nil
	case errLine != nil:
		if !p.forgetHeld(key, c) {
			return false, false, nil
		}
		return false, false, b.toClient(errLine)
	case v.Hold != nil:
		if c.held && !p.stillPending(key) {
			return false, false, nil
		}
		c.waits = false
		p.hold(ctx, key, c, line, v)
		return false, false, nil
	case !v.Allow:
		if !p.forgetHeld(key, c) {
			return false, false, nil
		}
		return false, false, b.toClientAppend(func(dst []byte) []byte { return p.enforcer.AppendDenial(dst, m.ID, &v) })
	}
	held := c.held
	c.done, c.held, c.waits = v.Done, false, false
	p.mu.Lock()
	if _, still := p.pending[key]; held && !still {
		// Released from a listing, and answered meanwhile (the server
		// exited): it never reaches the server.
		p.mu.Unlock()
		if c.done != nil {
			c.done(false)
		}
		return false, false, nil
	}
	c.tick = p.tick
	p.pending[key] = c
	p.mu.Unlock()
	return true, false, nil
}

// forgetHeld frees the id of call c, answered by the proxy, when it waited
// on a listing (it was pending, held, meanwhile). It reports whether the
// answer is still to be given: false when the call was answered meanwhile
// (the server exited).
func (p *Stdio) forgetHeld(key string, c pendingCall) bool {
	if !c.held {
		return true
	}
	_, ok := p.take(json.RawMessage(key))
	return ok
}

// stillPending reports whether the request with key is pending.
func (p *Stdio) stillPending(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.pending[key]
	return ok
}

// hold keeps a tools/call open while its Verdict's Hold waits for a
// person, off the client's reading path: the request id stays in use, and
// when Hold returns the call is forwarded (line, copied) or answered.
// CallTimeout counts from the forwarding.
func (p *Stdio) hold(ctx context.Context, key string, c pendingCall, line []byte, v Verdict) {
	held := append([]byte(nil), line...)
	c.held = true
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
		c.done, c.held = v2.Done, false
		p.mu.Lock()
		_, still := p.pending[key]
		if still {
			c.tick = p.tick
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

func (p *Stdio) fromServer(ctx context.Context, b *batch, line []byte, tooLong bool) error {
	if tooLong {
		p.Logger.Warn("server message too long; dropped", "limit_bytes", p.MaxLine)
		return nil
	}
	m, k, code := classifyView(line) // m's fields are views into line
	switch k {
	case kindInvalid:
		if m.ID != nil {
			// A broken response to a pending request: the client gets an error
			// for it rather than waiting forever.
			if c, ok := p.take(m.ID); ok {
				if c.own {
					p.Logger.Warn("malformed server answer to the proxy's tools/list", "code", code)
					p.upstreamError()
					p.failListing(string(c.id), "the MCP server sent a malformed answer to the proxy's tools/list, which the policy in force needs (tool.annotations)")
					return nil
				}
				if c.expired {
					// Counted when it timed out.
					p.Logger.Warn("malformed late server response; dropped", "code", code, "method", c.method, "id", string(c.id))
					return nil
				}
				p.Logger.Warn("malformed server response", "code", code, "method", c.method)
				p.upstreamError()
				if c.done != nil {
					c.done(outcomeUnknown(true))
				}
				return b.toClientAppend(func(dst []byte) []byte {
					return appendError(dst, c.id, codeUpstreamGone, "the MCP server sent a malformed response")
				})
			}
		}
		p.Logger.Warn("malformed server message; dropped", "code", code, "bytes", len(line))
		p.upstreamError()
		return nil
	case kindResponse:
		c, ok := p.take(m.ID)
		if !ok {
			if ownListID(m.ID) {
				p.Logger.Warn("the MCP server answered the proxy's tools/list after it ended; answer dropped")
				return nil
			}
			break
		}
		if c.expired {
			p.Logger.Warn("the MCP server answered after the call timed out; answer dropped", "method", c.method, "id", string(c.id))
			return nil
		}
		if c.own {
			p.listed(string(c.id), &m)
			return nil
		}
		if c.done != nil {
			c.done(m.Error == nil)
		}
		if c.method == "tools/list" && m.Result != nil {
			if c.listAll {
				p.catalog.completeFrom(m.Result, c.listGen)
			}
			if filtered := p.enforcer.FilterTools(ctx, &p.catalog, p.Identity, &m); filtered != nil {
				return b.toClient(filtered)
			}
		}
	case kindNotification:
		if *m.Method == "notifications/tools/list_changed" {
			p.catalog.Stale()
		}
	}
	return b.toClient(line)
}

// take removes and returns the pending request with this id.
func (p *Stdio) take(id json.RawMessage) (pendingCall, bool) {
	k := idKey(id)
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.pending[string(k)]
	if ok {
		delete(p.pending, string(k))
	}
	return c, ok
}

// sweep times out pending requests until stop is closed. It is one
// goroutine woken every CallTimeout/8 (at most a second): a request costs no
// timer, only the sweep count stamped on it.
func (p *Stdio) sweep(stop <-chan struct{}) {
	every := min(max(p.CallTimeout/8, time.Millisecond), time.Second)
	p.mu.Lock()
	// A request forwarded during sweep n is at least expire-1 steps old at
	// sweep n+expire.
	p.expire = uint32((p.CallTimeout+every-1)/every) + 1
	p.forget = forgetAfter * (p.expire - 1)
	p.mu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	var late []pendingCall
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		late = p.expireCalls(late[:0])
		if len(late) == 0 {
			continue
		}
		msg := "the MCP server did not answer within " + p.CallTimeout.String()
		for _, c := range late {
			p.Logger.Warn("the MCP server did not answer in time; call answered with an error", "method", c.method, "id", string(c.id), "timeout", p.CallTimeout)
			p.upstreamError()
			if c.done != nil {
				c.done(outcomeUnknown(true))
			}
			p.toClient.queue(appendError(nil, c.id, codeUpstreamGone, msg))
			if c.method != "initialize" {
				p.toServer.queue(appendCancelled(nil, c.id, "toolgate: no answer within "+p.CallTimeout.String()))
			}
		}
		p.toClient.flush()
		p.toServer.flush()
	}
}

// expireCalls counts a sweep, marks the requests that have waited too long
// as expired (appending them to late) and forgets those expired long ago.
func (p *Stdio) expireCalls(late []pendingCall) []pendingCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tick++
	for key, c := range p.pending {
		switch {
		case c.held:
		case c.expired:
			if p.tick-c.tick >= p.forget {
				delete(p.pending, key)
			}
		case p.tick-c.tick >= p.expire:
			late = append(late, c)
			c.expired, c.done, c.tick = true, nil, p.tick
			p.pending[key] = c
		}
	}
	return late
}

// appendCancelled appends the notifications/cancelled for request id.
func appendCancelled(dst []byte, id json.RawMessage, reason string) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, reason)
	return append(dst, "}}"...)
}

func appendInt(dst []byte, n int) []byte { return strconv.AppendInt(dst, int64(n), 10) }

func appendString(dst []byte, s string) []byte { return bundles.AppendString(dst, s) }

// outcomeUnknown is the outcome given to a call the server never answered
// (it ran out of time, the server exited or sent a malformed answer, the
// client or the proxy went away): if the request may have reached the
// server (sent), the call counts against its limits, since the server may
// have run it or still be running it, and a limit such calls slipped past
// would be no limit; a call that never left the proxy spends nothing. Only
// the server's own word that the call failed (a JSON-RPC error, an HTTP
// error status) rolls back a call it was given (spec §4: a failed call
// spends no quota).
func outcomeUnknown(sent bool) (commit bool) { return sent }

// failedStatus reports whether an HTTP error status answering a call says
// the call failed (it is rolled back) rather than that its outcome is
// unknown: 502 Bad Gateway and 504 Gateway Timeout come from a gateway in
// front of the server that may have passed the call on, so such a call
// counts (see [outcomeUnknown]).
func failedStatus(code int) bool {
	return code != http.StatusBadGateway && code != http.StatusGatewayTimeout
}
