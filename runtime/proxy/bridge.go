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
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// Bridge connects an MCP client that speaks stdio (newline-delimited
// JSON-RPC; for some clients, such as Claude Desktop, the only transport)
// to an MCP server's Streamable HTTP endpoint, enforcing policy as [Stdio]
// and [HTTP] do: a client tools/call is decided before it is sent (a denied
// call is answered by the bridge and never reaches the server), and hidden
// tools are removed from tools/list responses. Everything else passes
// through untouched.
//
// Each client message is POSTed to Upstream (Accept: application/json,
// text/event-stream), in the order the client sent them: the next one
// leaves once the previous one is written (once answered, for
// initialize). The session id the server assigns on its initialize
// response, and the protocol version the initialize result names, go with
// every later request. The server's answers, JSON or event streams, come
// back to the client as lines. After initialize, the bridge opens the
// server's GET stream to relay what the server sends outside a request
// (a server that answers 405 has none); it reopens it, with Last-Event-ID,
// when it breaks. An answer's event stream that ends before the response
// (a broken connection, or a server that closes it to have the client come
// back later) is resumed the same way when its events carry ids: a GET with
// the last id, up to maxStreamResumes times in a row without a new event,
// within the request's CallTimeout. When the client's input ends, requests still in flight
// are abandoned (allowed calls rolled back) and the session is ended with a
// DELETE.
//
// A request the server fails (unreachable, an HTTP error, no answer within
// CallTimeout, a stream that ends without the answer) gets a JSON-RPC error
// (code -32000) with its id, and an allowed call the server never received
// is rolled back (Verdict.Done(false); one it received counts, see
// [outcomeUnknown]). Malformed client messages are answered as [Stdio]
// answers them, and ambiguous ones as [HTTP] refuses them. A call held for
// approval (Verdict.Hold) waits off the client's reading path, reporting
// progress when it carries a progress token (through Enforcer.Notify, or
// the client's output when that is nil).
//
// Set the fields, then call Run once.
type Bridge struct {
	// Enforcer decides tools/call and filters tools/list. Required.
	Enforcer *Enforcer
	// Upstream is the server's MCP endpoint. Required.
	Upstream *url.URL
	// Client sends the requests; nil means the same default client as
	// [HTTP]'s.
	Client *http.Client
	// Identity is the caller in decision inputs.
	Identity bundles.Identity
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
	// MaxLine is the longest message in bytes, in either direction; 0
	// means DefaultMaxLine.
	MaxLine int
	// CallTimeout bounds how long a request waits for the server's answer.
	// Zero means no limit.
	CallTimeout time.Duration
	// UpstreamHeaders, when set, adds headers to every request sent to
	// Upstream: the proxy's own credentials for the server
	// (identity.UpstreamCredentials.Apply).
	UpstreamHeaders func(http.Header)

	enforcer *Enforcer // Enforcer, notifying the client
	target   string
	client   *http.Client
	log      *slog.Logger
	toClient lineWriter
	catalog  Catalog
	closing  atomic.Bool    // set once the client's input has ended
	wg       sync.WaitGroup // POSTs in flight and the GET stream
	calls    sync.WaitGroup // the client's messages in flight (POSTs and held calls)
	draining atomic.Bool    // Shutdown has begun: no new request is taken
	endOnce  sync.Once      // the session's DELETE

	mu        sync.Mutex         // guards sessionID, protocol, listening, stopWork
	stopWork  context.CancelFunc // cancels Run's work (set once Run runs)
	sessionID string
	protocol  string
	listening bool
}

// bridgeExchange is one POSTed client message.
type bridgeExchange struct {
	kind     kind
	id       json.RawMessage // a request's id
	watch    uint8
	listAll  bool   // a tools/list asking for the whole list
	listGen  uint64 // the catalog's generation when it was asked
	done     func(ok bool)
	answered bool
	// sent is set once the request is written to the server: from then on,
	// a call whose answer is not seen counts (see [outcomeUnknown]).
	sent atomic.Bool
}

func (x *bridgeExchange) finish(ok bool) {
	if d := x.done; d != nil {
		x.done = nil
		d(ok)
	}
}

// watchInit marks an initialize request: its answer names the protocol
// version.
const watchInit = watchList + 1

// Run bridges until the client's input ends, then ends the session and
// returns nil; or returns the error that stopped reading the client or
// writing to it. Run does not watch ctx for ending: it ends with the
// client's input; ctx cancels the requests in flight.
func (b *Bridge) Run(ctx context.Context, clientIn io.Reader, clientOut io.Writer) error {
	if b.Enforcer == nil || b.Enforcer.Decide == nil {
		return errors.New("proxy: Bridge.Enforcer (with Decide) is nil")
	}
	if b.Upstream == nil {
		return errors.New("proxy: Bridge.Upstream is nil")
	}
	b.target = b.Upstream.String()
	b.client = b.Client
	if b.client == nil {
		b.client = newUpstreamClient(b.Upstream)
	}
	b.log = b.Logger
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.MaxLine <= 0 {
		b.MaxLine = DefaultMaxLine
	}
	b.toClient.w = bufio.NewWriterSize(clientOut, 64<<10)
	e := *b.Enforcer
	if e.Notify == nil {
		e.Notify = b.toClient.write
	}
	b.enforcer = &e

	work, stop := context.WithCancel(ctx)
	b.mu.Lock()
	b.stopWork = stop
	b.mu.Unlock()
	lines := &Stdio{MaxLine: b.MaxLine} // for its line reader
	err := lines.readLines(clientIn, func(line []byte, tooLong bool) error { return b.fromClient(work, line, tooLong) })
	b.closing.Store(true)
	stop()
	b.wg.Wait()
	b.endSession(context.WithoutCancel(ctx))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("bridging the client: %w", err)
	}
	return nil
}

// Shutdown ends the bridge for a signal: it takes no new client request
// (each is answered with an error), lets the messages in flight finish
// until ctx is done, answers those still waiting then with an error (cut
// reports that some were), and ends the session (DELETE). Run may stay
// blocked reading the client, which the caller no longer needs: it exits.
func (b *Bridge) Shutdown(ctx context.Context) (cut bool) {
	b.draining.Store(true)
	b.mu.Lock()
	stop := b.stopWork
	b.mu.Unlock()
	if stop == nil {
		return false // Run has not started: nothing is in flight
	}
	done := make(chan struct{})
	go func() { b.calls.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cut = true
		stop() // the requests left fail, each answered with an error
		<-done
	}
	stop() // the GET stream too
	b.endSession(context.WithoutCancel(ctx))
	return cut
}

func (b *Bridge) upstreamError() {
	if b.UpstreamError != nil {
		b.UpstreamError()
	}
}

func (b *Bridge) fromClient(ctx context.Context, line []byte, tooLong bool) error {
	if tooLong {
		b.log.Warn("client message too long", "limit_bytes", b.MaxLine)
		return b.toClient.write(appendError(nil, nil, codeInvalidRequest, fmt.Sprintf("message longer than %d bytes", b.MaxLine)))
	}
	m, k, code := classify(line)
	x := &bridgeExchange{kind: k}
	if k == kindInvalid {
		b.log.Warn("malformed client message", "code", code, "bytes", len(line))
		if code == codeInvalidRequest && m.ID == nil && looksLikeNotification(line) {
			return nil // JSON-RPC answers no notification, even a bad one
		}
		msg := "parse error: not a JSON object"
		if code == codeInvalidRequest {
			msg = "invalid request: not a JSON-RPC 2.0 request, notification or response"
		}
		return b.toClient.write(appendError(nil, m.ID, code, msg))
	}
	if !m.exactNames(line, k == kindRequest && *m.Method == "tools/call") {
		b.log.Warn("ambiguous client message (member names repeated or differing only in case)", "bytes", len(line))
		if k == kindNotification {
			return nil
		}
		return b.toClient.write(appendError(nil, m.ID, codeInvalidRequest, errAmbiguous))
	}
	if k == kindRequest && b.draining.Load() {
		return b.toClient.write(appendError(nil, m.ID, codeUpstreamGone, "toolgate is shutting down"))
	}
	if k == kindRequest {
		x.id = m.ID
		switch *m.Method {
		case "tools/call":
			v, errLine, listFirst := b.enforcer.DecideCall(ctx, &b.catalog, b.Identity, &m)
			if listFirst {
				// Waits, reading no further client message meanwhile.
				ls := &lister{timeout: listTimeout(b.CallTimeout), post: b.postList, maxBody: int64(b.MaxLine), log: b.log, count: b.UpstreamError, listed: b.Listed}
				var err error
				if v, errLine, err = b.enforcer.listThenDecide(ctx, &b.catalog, b.Identity, &m, ls); err != nil {
					return b.toClient.write(appendError(nil, m.ID, codeUpstreamGone, listFailure(err, ls.timeout)))
				}
			}
			if errLine != nil {
				return b.toClient.write(errLine)
			}
			if v.Hold != nil {
				b.hold(ctx, bytes.Clone(line), x, v)
				return nil
			}
			if !v.Allow {
				return b.toClient.write(b.enforcer.AppendDenial(nil, m.ID, &v))
			}
			if v.Done != nil {
				x.watch, x.done = watchCall, v.Done
			}
		case "tools/list":
			x.watch = watchList
			if fullListing(m.Params) {
				x.listAll, x.listGen = true, b.catalog.generation()
			}
		case "initialize":
			x.watch = watchInit
		}
	}
	body := bytes.Clone(line) // line is only valid during this call
	if x.watch == watchInit {
		// Later messages need the session id its answer carries.
		b.post(ctx, body, x, nil)
		return nil
	}
	sent := make(chan struct{})
	b.wg.Add(1)
	b.calls.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.calls.Done()
		b.post(ctx, body, x, sent)
	}()
	<-sent
	return nil
}

// hold waits, off the client's reading path, for a person to decide a call
// held for approval, then sends it or answers it.
func (b *Bridge) hold(ctx context.Context, body []byte, x *bridgeExchange, v Verdict) {
	b.wg.Add(1)
	b.calls.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.calls.Done()
		v2 := v.Hold(ctx)
		if !v2.Allow {
			b.write(b.enforcer.AppendDenial(nil, x.id, &v2))
			return
		}
		if v2.Done != nil {
			x.watch, x.done = watchCall, v2.Done
		}
		b.post(ctx, body, x, nil)
	}()
}

// postList posts one of the proxy's own tools/list requests.
func (b *Bridge) postList(ctx context.Context, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header["Content-Type"] = jsonType
	req.Header["Accept"] = acceptBoth
	b.headers(req.Header)
	return b.client.Do(req)
}

// headers sets the headers of a request to the server.
func (b *Bridge) headers(h http.Header) {
	b.mu.Lock()
	sid, pv := b.sessionID, b.protocol
	b.mu.Unlock()
	if sid != "" {
		h.Set(hdrSession, sid)
	}
	if pv != "" {
		h.Set(hdrProtocol, pv)
	}
	if b.UpstreamHeaders != nil {
		b.UpstreamHeaders(h)
	}
}

// post sends one client message and relays the answer. It closes sent (when
// not nil) once the request is written, or has failed.
func (b *Bridge) post(ctx context.Context, body []byte, x *bridgeExchange, sent chan struct{}) {
	defer func() { x.finish(outcomeUnknown(x.sent.Load())) }()
	signal := func() {}
	if sent != nil {
		signal = sync.OnceFunc(func() { close(sent) })
	}
	defer signal()
	reqCtx := ctx
	if b.CallTimeout > 0 && x.kind == kindRequest {
		var cancel context.CancelFunc
		reqCtx, cancel = context.WithTimeout(ctx, b.CallTimeout)
		defer cancel()
	}
	traced := httptrace.WithClientTrace(reqCtx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil { // else the request broke off: the server cannot run it
			x.sent.Store(true)
		}
		signal()
	}})
	req, err := http.NewRequestWithContext(traced, http.MethodPost, b.target, bytes.NewReader(body))
	if err != nil {
		b.failed(x, reqCtx, err)
		return
	}
	req.Header["Content-Type"] = jsonType
	req.Header["Accept"] = acceptBoth
	b.headers(req.Header)
	if x.watch == watchInit {
		// An initialize starts a new session: it carries no session id
		// (after a server restart the old one is unknown there).
		req.Header.Del(hdrSession)
	}
	resp, err := b.client.Do(req)
	signal()
	if err != nil {
		b.failed(x, reqCtx, err)
		return
	}
	defer resp.Body.Close()
	if x.watch == watchInit && resp.StatusCode/100 == 2 {
		if sid := resp.Header.Get(hdrSession); sid != "" {
			b.mu.Lock()
			b.sessionID = sid
			b.mu.Unlock()
		}
	}
	switch {
	case resp.StatusCode/100 != 2:
		b.httpError(x, resp)
		return
	case x.kind != kindRequest:
		drain(resp.Body) // 202 Accepted
		return
	}
	switch mediaType(resp.Header.Get("Content-Type")) {
	case "application/json":
		msg, err := readBodyInto(nil, resp.Body, resp.ContentLength, int64(b.MaxLine))
		if err != nil {
			b.failed(x, reqCtx, err)
			return
		}
		if t := bytes.TrimSpace(msg); len(t) > 0 && t[0] == '[' {
			var msgs []json.RawMessage
			if json.Unmarshal(t, &msgs) == nil {
				for _, m := range msgs {
					b.fromServer(ctx, x, m)
				}
				break
			}
		}
		b.fromServer(ctx, x, msg)
	case "text/event-stream":
		var lastID string
		err = b.relayStream(ctx, x, resp.Body, &lastID)
		// A stream that broke (or that the server closed) before the
		// response is resumed with a GET carrying the last event id, as
		// the Streamable HTTP transport provides, when its events had ids.
		for tries := 1; !x.answered && x.kind == kindRequest && lastID != "" && !errors.Is(err, errEventTooLarge) &&
			tries <= maxStreamResumes && reqCtx.Err() == nil && !b.closing.Load(); tries++ {
			from := lastID
			err = b.resumeStream(reqCtx, ctx, x, &lastID, time.Duration(tries-1)*resumeBackoff)
			if lastID != from {
				tries = 0 // progress: the count starts again
			}
		}
		if !x.answered {
			b.failed(x, reqCtx, err)
		}
	default:
		b.failed(x, reqCtx, fmt.Errorf("unexpected content type %q", resp.Header.Get("Content-Type")))
	}
	if x.kind == kindRequest && !x.answered {
		b.failed(x, reqCtx, io.EOF) // no response in the answer
	}
}

var acceptBoth = []string{"application/json, text/event-stream"}

// Resuming a request's event stream: how often in a row without a new
// event, and the wait before the second and later tries (times the try).
const (
	maxStreamResumes = 3
	resumeBackoff    = 250 * time.Millisecond
)

// relayStream relays the events of a request's event stream to the client
// until its response has come (x.answered) or the stream ends; lastID
// follows the events' ids. It returns why the stream ended (io.EOF for its
// end).
func (b *Bridge) relayStream(ctx context.Context, x *bridgeExchange, body io.Reader, lastID *string) error {
	sr := newSSEReader(body, b.MaxLine)
	defer sr.free()
	for {
		if err := sr.next(); err != nil {
			return err
		}
		ev := sr.parse()
		if ev.hasID {
			*lastID = string(ev.id)
		}
		if ev.isMessage() {
			b.fromServer(ctx, x, ev.data)
			if x.answered {
				return nil // the stream is done with
			}
		}
	}
}

// resumeStream waits wait, then asks the server to replay a request's
// event stream after *lastID (a GET with Last-Event-ID) and relays it.
// reqCtx bounds the request (its CallTimeout); ctx is the bridge's.
func (b *Bridge) resumeStream(reqCtx, ctx context.Context, x *bridgeExchange, lastID *string, wait time.Duration) error {
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-reqCtx.Done():
			t.Stop()
			return reqCtx.Err()
		case <-t.C:
		}
	}
	from := *lastID
	resp, err := b.openStream(reqCtx, from)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !isEventStream(resp) {
		drain(resp.Body)
		b.log.Warn("the MCP server did not resume an answer's event stream", "status", resp.StatusCode)
		*lastID = ""  // it cannot: stop trying (the call's failure is counted once, in failed)
		return io.EOF // the answer ended without its response
	}
	b.log.Info("resumed an answer's event stream", "last_event_id", from)
	return b.relayStream(ctx, x, resp.Body, lastID)
}

// openStream sends the GET that opens the server's event stream, or
// resumes one after lastID when it is not empty.
func (b *Bridge) openStream(ctx context.Context, lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.target, nil)
	if err != nil {
		return nil, err
	}
	req.Header["Accept"] = eventStreamOnly
	b.headers(req.Header)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	return b.client.Do(req)
}

// isEventStream reports whether resp is a successful event stream.
func isEventStream(resp *http.Response) bool {
	return resp.StatusCode/100 == 2 && mediaType(resp.Header.Get("Content-Type")) == "text/event-stream"
}

var eventStreamOnly = []string{"text/event-stream"}

// failed answers a request the server did not answer (err says why) with
// an error.
func (b *Bridge) failed(x *bridgeExchange, ctx context.Context, err error) {
	if x.answered {
		return
	}
	x.answered = true
	x.finish(outcomeUnknown(x.sent.Load()))
	if b.closing.Load() {
		return // the client has gone
	}
	msg := "the MCP server could not be reached"
	switch {
	case b.draining.Load() && errors.Is(ctx.Err(), context.Canceled):
		msg = "toolgate is shutting down and the MCP server did not answer in time"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		msg = "the MCP server did not answer within " + b.CallTimeout.String()
	case errors.Is(err, errTooLarge) || errors.Is(err, errEventTooLarge):
		msg = "the MCP server's answer is longer than " + strconv.Itoa(b.MaxLine) + " bytes"
	case err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		msg = "the MCP server ended its answer without a response"
	}
	b.log.Warn("a request to the MCP server failed", "err", err, "answer", msg)
	b.upstreamError()
	if x.kind != kindRequest {
		return
	}
	if werr := b.toClient.write(appendError(nil, x.id, codeUpstreamGone, msg)); werr != nil {
		b.log.Warn("writing to the client", "err", werr)
	}
}

// httpError handles a server's HTTP error status for a message.
func (b *Bridge) httpError(x *bridgeExchange, resp *http.Response) {
	body, _ := readBodyInto(nil, resp.Body, -1, 64<<10)
	if resp.StatusCode == http.StatusNotFound {
		b.log.Warn("the MCP server does not know the session (it ended it); the client must initialize again")
		if sid := resp.Request.Header.Get(hdrSession); sid != "" {
			b.mu.Lock()
			if b.sessionID == sid {
				b.sessionID = "" // a new initialize starts a new one
			}
			b.mu.Unlock()
		}
	} else {
		b.log.Warn("the MCP server refused a message", "status", resp.StatusCode, "body", string(bytes.TrimSpace(body)))
		if resp.StatusCode >= 500 && x.kind == kindRequest {
			b.upstreamError() // a failed request, as HTTP counts it; a 4xx is the server's answer
		}
	}
	if x.kind != kindRequest {
		return
	}
	// A JSON-RPC error for this request (MCP servers send one with 4xx) is
	// passed on as it came.
	var o callOutcome
	if scanAnswer(body, &o) && o.Error && sameID(o.ID, x.id) {
		x.answered = true
		x.finish(false) // the server's own word that the call failed
		b.write(oneLine(body))
		return
	}
	x.answered = true
	x.finish(!failedStatus(resp.StatusCode))
	b.write(appendError(nil, x.id, codeUpstreamGone,
		"the MCP server answered HTTP "+strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode)))
}

// fromServer relays one message from the server to the client; x is the
// exchange whose answer it came in, or nil for the GET stream.
func (b *Bridge) fromServer(ctx context.Context, x *bridgeExchange, msg []byte) {
	msg = oneLine(msg)
	if bytes.Contains(msg, toolsChanged) {
		b.catalog.Stale() // listed again when a call needs it
	}
	startListening := false
	if x != nil && x.kind == kindRequest && !x.answered {
		var o callOutcome
		if scanAnswer(msg, &o) && !o.Method && sameID(o.ID, x.id) {
			x.answered = true
			switch x.watch {
			case watchCall:
				x.finish(!o.Error)
			case watchList:
				if m, k, _ := classify(msg); k == kindResponse && m.Result != nil {
					if x.listAll {
						b.catalog.completeFrom(m.Result, x.listGen)
					}
					if filtered := b.enforcer.FilterTools(ctx, &b.catalog, b.Identity, &m); filtered != nil {
						msg = filtered
					}
				}
			case watchInit:
				var r struct {
					Result struct {
						ProtocolVersion string `json:"protocolVersion"`
					} `json:"result"`
				}
				if json.Unmarshal(msg, &r) == nil && r.Result.ProtocolVersion != "" {
					b.mu.Lock()
					b.protocol = r.Result.ProtocolVersion
					startListening = !b.listening
					b.listening = true
					b.mu.Unlock()
				}
			}
		}
	}
	b.write(msg)
	if startListening {
		b.wg.Add(1)
		go b.listen(ctx)
	}
}

// write writes a line to the client, unless it has gone.
func (b *Bridge) write(line []byte) {
	if b.closing.Load() {
		return
	}
	if err := b.toClient.write(line); err != nil {
		b.log.Warn("writing to the client", "err", err)
	}
}

// oneLine returns msg without line ends: in JSON they can only be
// whitespace between tokens, and a line is one message to a stdio client.
func oneLine(msg []byte) []byte {
	if bytes.IndexAny(msg, "\r\n") < 0 {
		return msg
	}
	out := bytes.Clone(msg)
	for i, c := range out {
		if c == '\n' || c == '\r' {
			out[i] = ' '
		}
	}
	return out
}

// listen relays the server's GET stream until ctx ends, the server says it
// has none, or it cannot be reopened.
func (b *Bridge) listen(ctx context.Context) {
	defer b.wg.Done()
	var lastID string
	failures := 0
	for ctx.Err() == nil {
		progress, retry := b.listenOnce(ctx, &lastID)
		if !retry {
			return
		}
		if progress {
			failures = 0
		} else if failures++; failures > 5 {
			b.log.Warn("the MCP server's GET stream cannot be reopened; server-initiated messages outside requests are lost")
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(failures) * 500 * time.Millisecond):
		}
	}
}

// listenOnce opens the GET stream once and relays it. It reports whether
// any event came, and whether to try again.
func (b *Bridge) listenOnce(ctx context.Context, lastID *string) (progress, retry bool) {
	resp, err := b.openStream(ctx, *lastID)
	if err != nil {
		return false, ctx.Err() == nil
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed:
		return false, false // the server offers no stream
	case !isEventStream(resp):
		b.log.Warn("the MCP server refused its GET stream", "status", resp.StatusCode)
		return false, false
	}
	sr := newSSEReader(resp.Body, b.MaxLine)
	defer sr.free()
	for sr.next() == nil {
		progress = true
		ev := sr.parse()
		if ev.hasID {
			*lastID = string(ev.id)
		}
		if ev.isMessage() {
			b.fromServer(ctx, nil, ev.data)
		}
	}
	return progress, true
}

// endSession sends the DELETE that ends the session, if there is one. It
// does so once: Shutdown and the end of Run may both ask, and the second
// waits for the first (the process may exit as soon as one returns).
func (b *Bridge) endSession(ctx context.Context) {
	b.endOnce.Do(func() { b.deleteSession(ctx) })
}

func (b *Bridge) deleteSession(ctx context.Context) {
	b.mu.Lock()
	sid := b.sessionID
	b.mu.Unlock()
	if sid == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, b.target, nil)
	if err != nil {
		return
	}
	b.headers(req.Header)
	resp, err := b.client.Do(req)
	if err != nil {
		b.log.Warn("ending the MCP session", "err", err)
		return
	}
	drain(resp.Body)
	resp.Body.Close()
}
