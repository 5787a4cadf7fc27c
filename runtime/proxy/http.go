package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/toolgate/toolgate/bundles"
)

// DefaultMaxBody is the largest message [HTTP] and [Bridge] read whole by
// default: 16 MiB.
const DefaultMaxBody = 16 << 20

// DefaultMaxSessions is how many MCP sessions [HTTP] keeps a [Catalog] for
// by default.
const DefaultMaxSessions = 10000

// Header names of the Streamable HTTP transport.
const (
	hdrSession  = "Mcp-Session-Id"
	hdrProtocol = "Mcp-Protocol-Version"
)

// HTTP is the Streamable HTTP transport of the proxy (MCP 2025-03-26 and
// 2025-06-18): an http.Handler that serves one MCP endpoint and forwards
// every request to the MCP endpoint at Upstream, enforcing policy on the
// way. Every message passes through untouched in both directions except
//
//   - a client tools/call request, which Enforcer decides first: a denied
//     call (or one whose params cannot be read) is answered by the proxy
//     with HTTP 200 and a JSON-RPC response, and never reaches the server;
//   - a server response to tools/list, from which every hidden tool is
//     removed (and whose annotations feed later decisions in the session).
//
// POST bodies are one JSON-RPC message each. A batch, a body that is not
// JSON-RPC 2.0, one larger than MaxBody, or one whose member names repeat
// or differ only in case from those the proxy reads (the proxy and the
// server could read different calls from it) is refused with an HTTP
// error (400 or 413) carrying a JSON-RPC error. A call held for approval
// (Verdict.Hold) waits in its POST; when it carries a progress token and
// the client accepts event streams, the wait is reported as progress, the
// answer becoming an event stream with the first report. A server answer in
// text/event-stream form is relayed event by event, flushed as it comes,
// with its event ids, so that clients can resume it with Last-Event-ID. GET
// (the server's stream) and DELETE (the end of a session) are forwarded;
// other methods are refused with 405.
//
// Headers: the request's Accept, Last-Event-ID, User-Agent, trace context
// (traceparent, tracestate, baggage) and every Mcp-* header
// (Mcp-Session-Id, MCP-Protocol-Version, …) are forwarded; a POST goes on
// as Content-Type application/json (the proxy reads bodies as UTF-8 JSON
// and refuses, with 415, a POST that names another charset or media type). Nothing else is;
// in particular the client's Authorization and Cookie headers never reach
// the server: credentials for the server are the proxy's business, not the
// client's. The server's response headers are returned but for hop-by-hop
// ones.
//
// When the server cannot be reached, answers a POST with a 5xx status, or
// does not answer it within CallTimeout, a request gets a JSON-RPC error
// (code -32000) with its id and HTTP status 200, so that clients show the
// message; an allowed tools/call is then rolled back (Verdict.Done(false)).
//
// Sessions: the proxy keeps a Catalog per Mcp-Session-Id the server
// assigned (on its initialize response), and one for requests without a
// session. It forgets a session on a DELETE the server accepts, on a 404
// for it, and when more than MaxSessions are tracked (the least recently
// used goes first).
//
// HTTP serves the MCP endpoint at whatever path it is mounted on; mount it
// on the path clients are configured with. The http.Server serving it
// should not set a WriteTimeout shorter than the longest call (event
// streams clear it for themselves). Set the fields, then serve; the fields
// must not change afterwards. HTTP is safe for concurrent use.
type HTTP struct {
	// Enforcer decides tools/call and filters tools/list. Required. Its
	// Notify is not used: the progress of a held call goes on that call's
	// answer.
	Enforcer *Enforcer
	// Upstream is the server's MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
	// Required.
	Upstream *url.URL
	// Client sends the requests to Upstream. Nil means a client made for
	// this: no redirects followed; a plain-HTTP Upstream reached without a
	// proxy over HTTP/1.1 keep-alive connections that each call writes and
	// reads itself ([directTransport]), anything else through an
	// http.Transport (HTTP/2 over TLS, proxies from the environment). A
	// Client with a Timeout cuts GET streams off: use CallTimeout instead.
	Client *http.Client
	// Identity returns the caller of a request, for decision inputs. Nil
	// means an empty identity.
	Identity func(*http.Request) bundles.Identity
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
	// MaxBody is the largest message the proxy reads whole, in bytes: a
	// POST body from the client, a server's application/json answer it
	// inspects (to tools/call or tools/list), and each event of a server's
	// event stream. Zero means DefaultMaxBody.
	MaxBody int64
	// CallTimeout bounds how long a forwarded POST (or DELETE) waits for
	// the server's answer, response headers and events included. Zero
	// means no limit (a call ends when the client goes away).
	CallTimeout time.Duration
	// MaxSessions is how many sessions get a Catalog; zero means
	// DefaultMaxSessions.
	MaxSessions int
	// UpstreamHeaders, when set, adds headers to every request forwarded to
	// Upstream, after the client's were copied: the proxy's own
	// credentials for the server (identity.UpstreamCredentials.Apply).
	UpstreamHeaders func(http.Header)

	initOnce sync.Once
	target   string // Upstream as a string
	client   *http.Client
	log      *slog.Logger
	maxBody  int64
	sessions sessionTable
}

var _ http.Handler = (*HTTP)(nil)

func (h *HTTP) init() {
	if h.Upstream != nil {
		h.target = h.Upstream.String()
	}
	h.client = h.Client
	if h.client == nil {
		h.client = newUpstreamClient(h.Upstream)
	}
	h.log = h.Logger
	if h.log == nil {
		h.log = slog.Default()
	}
	h.maxBody = h.MaxBody
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBody
	}
	h.sessions.max = h.MaxSessions
	if h.sessions.max <= 0 {
		h.sessions.max = DefaultMaxSessions
	}
}

// Sessions returns how many sessions the proxy keeps a Catalog for.
func (h *HTTP) Sessions() int {
	h.initOnce.Do(h.init)
	return int(h.sessions.n.Load())
}

// ServeHTTP implements http.Handler.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.initOnce.Do(h.init)
	if h.Enforcer == nil || h.Enforcer.Decide == nil || h.Upstream == nil {
		h.log.Error("the HTTP proxy has no Enforcer, Decide hook or Upstream; answering 500")
		http.Error(w, "toolgate: proxy misconfigured (no upstream or no policy)", http.StatusInternalServerError)
		return
	}
	switch r.Method {
	case http.MethodPost:
		h.servePOST(w, r)
	case http.MethodGet, http.MethodDelete:
		h.serveOther(w, r)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// What the proxy does with the server's answer to a forwarded request.
const (
	watchNone uint8 = iota
	watchCall       // a tools/call: commit or roll back
	watchList       // a tools/list: filter
)

// exchange is one forwarded POST and what the proxy must see in its answer.
type exchange struct {
	r     *http.Request
	ctx   context.Context // r's context, with CallTimeout
	sid   string          // the request's session id
	sess  *session        // its session, when tracked
	kind  kind
	id    json.RawMessage // a request's id
	watch uint8
	// listAll: a tools/list asking for the whole list, at the session
	// catalog's generation listGen.
	listAll bool
	listGen uint64
	done    func(ok bool) // an allowed call's Verdict.Done, until called
	ident   bundles.Identity
	// answered is set once the server's response to the request is seen.
	answered bool
	// events is set when the proxy made the answer an event stream before
	// forwarding (a held call reported progress): the server's answer,
	// JSON or events, goes on it as events.
	events *events
}

// finish calls the pending Done once.
func (x *exchange) finish(ok bool) {
	if d := x.done; d != nil {
		x.done = nil
		d(ok)
	}
}

func (h *HTTP) identity(r *http.Request) bundles.Identity {
	if h.Identity == nil {
		return bundles.Identity{}
	}
	return h.Identity(r)
}

func (h *HTTP) servePOST(w http.ResponseWriter, r *http.Request) {
	if msg := unreadableBodyType(r.Header.Get("Content-Type")); msg != "" {
		h.log.Warn("client message refused", "content_type", r.Header.Get("Content-Type"))
		writeJSON(w, http.StatusUnsupportedMediaType, appendError(nil, nil, codeInvalidRequest, msg))
		return
	}
	body, err := readBody(r.Body, r.ContentLength, h.maxBody)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			h.log.Warn("client message too large", "limit_bytes", h.maxBody)
			writeJSON(w, http.StatusRequestEntityTooLarge, appendError(nil, nil, codeInvalidRequest,
				"message larger than "+strconv.FormatInt(h.maxBody, 10)+" bytes"))
			return
		}
		h.log.Warn("reading a client message", "err", err)
		http.Error(w, "reading the request body failed", http.StatusBadRequest)
		return
	}
	m, k, code := classify(body)
	if k == kindInvalid {
		h.log.Warn("malformed client message", "code", code, "bytes", len(body))
		msg := "parse error: not a JSON object"
		switch {
		case code == codeInvalidRequest && len(bytes.TrimSpace(body)) > 0 && bytes.TrimSpace(body)[0] == '[':
			msg = "invalid request: batches are not supported; send one JSON-RPC message per request"
		case code == codeInvalidRequest:
			msg = "invalid request: not a JSON-RPC 2.0 request, notification or response"
		}
		writeJSON(w, http.StatusBadRequest, appendError(nil, m.ID, code, msg))
		return
	}
	if !m.exactNames(body, k == kindRequest && *m.Method == "tools/call") {
		h.log.Warn("ambiguous client message (member names repeated or differing only in case)", "bytes", len(body))
		writeJSON(w, http.StatusBadRequest, appendError(nil, m.ID, codeInvalidRequest, errAmbiguous))
		return
	}
	x := exchange{r: r, kind: k, sid: r.Header.Get(hdrSession)}
	x.sess = h.sessions.get(x.sid)
	if k == kindRequest {
		x.id = m.ID
		switch *m.Method {
		case "tools/call":
			cat := &noCatalog
			if x.sess != nil {
				cat = &x.sess.catalog
			}
			e, ev := h.Enforcer, (*events)(nil)
			if bytes.Contains(m.Params, []byte(`"progressToken"`)) && strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
				// A call held for approval reports its wait as progress:
				// on this answer, which becomes an event stream then.
				ev = &events{w: w}
				ec := *h.Enforcer
				ec.Notify = ev.send
				e = &ec
			}
			v, errLine, listFirst := e.DecideCall(r.Context(), cat, h.identity(r), &m)
			untracked := listFirst && x.sess == nil
			if untracked {
				// A session the proxy does not track (it restarted, or
				// forgot the session): listed into a catalog of its own,
				// tracked once the server has accepted the session id, so
				// that made-up ids evict no one's catalog.
				cat = &Catalog{}
			}
			if listFirst {
				ls := &lister{timeout: listTimeout(h.CallTimeout), post: h.listPoster(r, x.sid), maxBody: h.maxBody, log: h.log, count: h.UpstreamError, listed: h.Listed}
				var err error
				if v, errLine, err = e.listThenDecide(r.Context(), cat, h.identity(r), &m, ls); err != nil {
					var se statusError
					switch {
					case r.Context().Err() != nil: // the client has gone
					case errors.As(err, &se) && se.code == http.StatusNotFound:
						// The server ended the session: the client must
						// start a new one, as a forwarded call would tell it.
						writeJSON(w, http.StatusNotFound, appendError(nil, m.ID, codeUpstreamGone, "the MCP server does not know this session"))
					default:
						writeJSON(w, http.StatusOK, appendError(nil, m.ID, codeUpstreamGone, listFailure(err, ls.timeout)))
					}
					return
				}
			}
			if untracked {
				x.sess = h.sessions.ensure(x.sid)
				x.sess.catalog.adopt(cat)
			}
			if errLine != nil {
				writeJSON(w, http.StatusOK, errLine)
				return
			}
			if v.Hold != nil {
				v = v.Hold(r.Context())
			}
			if ev != nil && ev.settle() {
				x.events = ev
			}
			if !v.Allow {
				x.answer(w, http.StatusOK, h.Enforcer.AppendDenial(nil, m.ID, &v))
				return
			}
			if v.Done != nil { // else nothing waits for the outcome
				x.watch, x.done = watchCall, v.Done
			}
		case "tools/list":
			x.watch, x.ident = watchList, h.identity(r)
			if fullListing(m.Params) {
				x.listAll = true
				if x.sess != nil {
					x.listGen = x.sess.catalog.generation()
				}
			}
		}
	}
	h.forward(w, &x, body)
}

// errAmbiguous is the message a message with ambiguous member names is
// refused with.
const errAmbiguous = "invalid request: member names must be unique, and exactly those of JSON-RPC and MCP (case matters)"

// events is an answer the proxy turns into an event stream before the
// server answers: a call held for approval reporting progress.
type events struct {
	mu      sync.Mutex // guards w, rc, started and quiet while reports may come
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool // the event stream's headers are written
	quiet   bool // reports are dropped
}

var (
	eventStreamType = []string{"text/event-stream"}
	noCache         = []string{"no-cache"}
)

// send writes msg as an event, starting the stream on the first.
func (e *events) send(msg []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.quiet {
		return nil
	}
	if !e.started {
		e.started = true
		e.rc = http.NewResponseController(e.w)
		e.rc.SetWriteDeadline(time.Time{})
		e.w.Header()["Content-Type"] = eventStreamType
		e.w.Header()["Cache-Control"] = noCache
		e.w.WriteHeader(http.StatusOK)
	}
	if _, err := e.w.Write(appendMessageEvent(nil, msg)); err != nil {
		return err
	}
	return e.rc.Flush()
}

// settle drops later reports and says whether the stream was started.
func (e *events) settle() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.quiet = true
	return e.started
}

// answer writes msg, the proxy's own answer to the request, as JSON with
// status, or as an event when the answer is already an event stream.
func (x *exchange) answer(w http.ResponseWriter, status int, msg []byte) {
	if x.events != nil {
		w.Write(appendMessageEvent(nil, msg))
		x.events.rc.Flush()
		return
	}
	writeJSON(w, status, msg)
}

// noCatalog is the catalog of a call in a session the proxy does not track
// (yet): empty, and never written.
var noCatalog Catalog

func (h *HTTP) forward(w http.ResponseWriter, x *exchange, body []byte) {
	var sent atomic.Bool // the request was written to the server
	defer func() { x.finish(outcomeUnknown(sent.Load())) }()
	x.ctx = x.r.Context()
	if h.CallTimeout > 0 {
		var cancel context.CancelFunc
		x.ctx, cancel = context.WithTimeout(x.ctx, h.CallTimeout)
		defer cancel()
	}
	reqCtx := x.ctx
	if x.done != nil { // a call whose counters wait on the outcome
		reqCtx = httptrace.WithClientTrace(reqCtx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil { // else the request broke off: the server cannot run it
				sent.Store(true)
			}
		}})
	}
	out, err := http.NewRequestWithContext(reqCtx, http.MethodPost, h.target, bytes.NewReader(body))
	if err != nil {
		h.upstreamFailed(w, x, err)
		return
	}
	h.headers(out.Header, x.r.Header)
	// The body the proxy decided on is UTF-8 JSON; the server must read it
	// so, whatever charset the client named (one that decoded it as UTF-7
	// could read another message in it).
	out.Header["Content-Type"] = jsonType
	resp, err := h.send(out)
	if err != nil {
		h.upstreamFailed(w, x, err)
		return
	}
	defer resp.Body.Close()

	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	switch {
	case resp.StatusCode == http.StatusNotFound && x.sid != "":
		h.sessions.drop(x.sid) // the server ended the session
	case resp.StatusCode >= 500 && x.kind == kindRequest:
		h.log.Warn("the MCP server failed a request", "status", resp.StatusCode)
		h.upstreamError()
		x.finish(!failedStatus(resp.StatusCode))
		drain(resp.Body)
		x.answer(w, http.StatusOK, appendError(nil, x.id, codeUpstreamGone,
			"the MCP server failed: HTTP "+strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode)))
		return
	case ok:
		if sid := resp.Header.Get(hdrSession); sid != "" && (x.sess == nil || sid != x.sid) {
			x.sid, x.sess = sid, h.sessions.ensure(sid) // a new session (initialize)
		}
	}
	ct := mediaType(resp.Header.Get("Content-Type"))
	switch {
	case x.events != nil:
		h.intoEvents(w, resp, x, ct)
	case !ok:
		x.finish(!failedStatus(resp.StatusCode))
		h.pass(w, resp)
	case ct == "text/event-stream":
		h.relay(w, resp, x)
	case ct == "application/json" && x.kind == kindRequest && x.watch != watchNone:
		h.inspectJSON(w, resp, x)
	default:
		h.pass(w, resp)
	}
}

// listPoster returns how the proxy posts its own tools/list requests in
// the session of client request r (session id sid): with the headers a
// forwarded request would carry.
func (h *HTTP) listPoster(r *http.Request, sid string) postFunc {
	hdr := http.Header{}
	h.headers(hdr, r.Header)
	hdr["Content-Type"] = jsonType
	hdr["Accept"] = acceptBoth
	return func(ctx context.Context, body []byte) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = hdr.Clone()
		resp, err := h.send(req)
		if err == nil && resp.StatusCode == http.StatusNotFound && sid != "" {
			h.sessions.drop(sid) // the server ended the session
		}
		return resp, err
	}
}

// headers sets the headers of a request to the server from the client's.
func (h *HTTP) headers(dst, client http.Header) {
	copyRequestHeaders(dst, client)
	if h.UpstreamHeaders != nil {
		h.UpstreamHeaders(dst)
	}
}

// send sends a request to the server: through the Client, or straight to
// the default client's transport (which follows no redirects, so the
// Client's bookkeeping would only cost time).
func (h *HTTP) send(req *http.Request) (*http.Response, error) {
	if h.Client == nil {
		return h.client.Transport.RoundTrip(req)
	}
	return h.client.Do(req)
}

// intoEvents puts the server's answer on an answer that is already an
// event stream (a held call): events as they come, a JSON answer as one
// event, an HTTP error as a JSON-RPC error.
func (h *HTTP) intoEvents(w http.ResponseWriter, resp *http.Response, x *exchange, ct string) {
	switch {
	case resp.StatusCode/100 == 2 && ct == "text/event-stream":
		h.relay(w, resp, x)
		return
	case resp.StatusCode/100 == 2 && ct == "application/json":
		body, err := readBodyInto(nil, resp.Body, resp.ContentLength, h.maxBody)
		if err == nil {
			for _, msg := range splitMessages(body) {
				if rewritten := h.see(x, msg); rewritten != nil {
					msg = rewritten
				}
				w.Write(appendMessageEvent(nil, msg))
			}
			x.events.rc.Flush()
			if x.answered {
				return
			}
		}
	}
	// An error, or an answer without the response: the client still
	// waits for one. A JSON-RPC error for this request (MCP servers send
	// one with 4xx) is passed on.
	body, _ := readBodyInto(nil, resp.Body, -1, 64<<10)
	var o callOutcome
	if resp.StatusCode/100 != 2 && scanAnswer(body, &o) && o.Error && sameID(o.ID, x.id) {
		x.finish(false) // the server's own word that the call failed
		x.answer(w, http.StatusOK, body)
		return
	}
	if resp.StatusCode/100 != 2 {
		x.finish(!failedStatus(resp.StatusCode))
	}
	x.answer(w, http.StatusOK, appendError(nil, x.id, codeUpstreamGone,
		"the MCP server answered HTTP "+strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode)+" without a response"))
}

// splitMessages returns the messages of a JSON answer: one, or the
// elements of an array.
func splitMessages(body []byte) [][]byte {
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '[' {
		var msgs []json.RawMessage
		if json.Unmarshal(t, &msgs) == nil {
			out := make([][]byte, len(msgs))
			for i, m := range msgs {
				out[i] = m
			}
			return out
		}
	}
	return [][]byte{body}
}

func (h *HTTP) upstreamError() {
	if h.UpstreamError != nil {
		h.UpstreamError()
	}
}

// upstreamFailed answers a request whose forwarding failed with err.
func (h *HTTP) upstreamFailed(w http.ResponseWriter, x *exchange, err error) {
	var msg string
	switch {
	case x.r.Context().Err() != nil:
		return // the client has gone: nobody to answer
	case errors.Is(x.ctx.Err(), context.DeadlineExceeded):
		msg = "the MCP server did not answer within " + h.CallTimeout.String()
	default:
		msg = "the MCP server could not be reached"
	}
	h.log.Warn("forwarding to the MCP server failed", "err", err)
	h.upstreamError()
	if x.kind != kindRequest {
		http.Error(w, "toolgate: "+msg, http.StatusBadGateway)
		return
	}
	x.answer(w, http.StatusOK, appendError(nil, x.id, codeUpstreamGone, msg))
}

// serveOther forwards a GET (the server's event stream) or a DELETE (the
// end of a session).
func (h *HTTP) serveOther(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if h.CallTimeout > 0 && r.Method == http.MethodDelete {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.CallTimeout)
		defer cancel()
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, h.target, nil)
	if err == nil {
		h.headers(out.Header, r.Header)
		var resp *http.Response
		if resp, err = h.send(out); err == nil {
			defer resp.Body.Close()
			x := exchange{r: r, ctx: ctx, sid: r.Header.Get(hdrSession)}
			x.sess = h.sessions.get(x.sid)
			if x.sid != "" && (resp.StatusCode == http.StatusNotFound ||
				(r.Method == http.MethodDelete && resp.StatusCode >= 200 && resp.StatusCode < 300)) {
				h.sessions.drop(x.sid)
				x.sess = nil
			}
			if resp.StatusCode >= 200 && resp.StatusCode < 300 && mediaType(resp.Header.Get("Content-Type")) == "text/event-stream" {
				h.relay(w, resp, &x)
				return
			}
			h.pass(w, resp)
			return
		}
	}
	if r.Context().Err() != nil {
		return
	}
	h.log.Warn("forwarding to the MCP server failed", "method", r.Method, "err", err)
	h.upstreamError()
	http.Error(w, "toolgate: the MCP server could not be reached", http.StatusBadGateway)
}

// pass copies the server's response to the client as it came.
func (h *HTTP) pass(w http.ResponseWriter, resp *http.Response) {
	copyResponseHeaders(w.Header(), resp.Header, false)
	w.WriteHeader(resp.StatusCode)
	bp := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(w, onlyReader{resp.Body}, *bp)
	copyBufs.Put(bp)
	if err != nil {
		h.log.Debug("relaying a response ended early", "err", err)
	}
}

// onlyReader hides a body's WriteTo so that io.CopyBuffer uses the pooled
// buffer.
type onlyReader struct{ io.Reader }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// inspectJSON reads the server's application/json answer to a watched
// request, acts on it and writes it (possibly rewritten) to the client.
func (h *HTTP) inspectJSON(w http.ResponseWriter, resp *http.Response, x *exchange) {
	bp := bodyBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 {
			bodyBufs.Put(bp)
		}
	}()
	body, err := readBodyInto((*bp)[:0], resp.Body, resp.ContentLength, h.maxBody)
	*bp = body[:0]
	if err != nil {
		h.log.Warn("reading the MCP server's answer", "err", err)
		if x.r.Context().Err() == nil { // not when the client left
			h.upstreamError()
		}
		msg := "the MCP server's answer could not be read"
		if errors.Is(err, errTooLarge) {
			msg = "the MCP server's answer is larger than " + strconv.FormatInt(h.maxBody, 10) + " bytes"
		} else if x.r.Context().Err() != nil {
			return
		}
		writeJSON(w, http.StatusOK, appendError(nil, x.id, codeUpstreamGone, msg))
		return
	}
	out := body
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '[' {
		if rewritten := h.see(x, body); rewritten != nil {
			out = rewritten
		}
	} else if msgs := splitMessages(body); len(msgs) > 0 {
		// Several messages (notifications before the response): look at each.
		changed := false
		for i, msg := range msgs {
			if rewritten := h.see(x, msg); rewritten != nil {
				msgs[i], changed = rewritten, true
			}
		}
		if changed {
			raw := make([]json.RawMessage, len(msgs))
			for i, m := range msgs {
				raw[i] = m
			}
			if b, err := json.Marshal(raw); err == nil {
				out = b
			}
		}
	}
	copyResponseHeaders(w.Header(), resp.Header, true)
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(resp.StatusCode)
	w.Write(out)
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// callOutcome is what the proxy reads of a message that may answer a
// request: its id, and whether it has a method (then it is no response) and
// an error.
type callOutcome struct {
	ID     []byte
	Method bool
	Error  bool
}

// see looks at one message from the server on the stream of exchange x (or
// on a GET stream, for x without a watched request). It commits or rolls
// back the call x waits for when msg answers it, and returns the filtered
// response when msg answers a tools/list; otherwise nil.
func (h *HTTP) see(x *exchange, msg []byte) []byte {
	switch {
	case x.watch == watchCall && !x.answered:
		var o callOutcome
		if !scanAnswer(msg, &o) || o.Method || !sameID(o.ID, x.id) {
			return nil
		}
		x.answered = true
		x.finish(!o.Error)
		return nil
	case x.watch == watchList && !x.answered:
		m, k, _ := classify(msg)
		if k != kindResponse || !sameID(m.ID, x.id) {
			return nil
		}
		x.answered = true
		return h.filter(x, &m)
	case x.sess != nil && x.sess.orphans.Load() > 0:
		// A tools/list answered on a resumed stream.
		m, k, _ := classify(msg)
		if k == kindResponse && x.sess.takeOrphan(m.ID) {
			return h.filter(x, &m)
		}
	}
	if x.r.Method == http.MethodGet {
		// A GET stream may replay any answer (Last-Event-ID), a tools/list
		// already answered and filtered on its own stream included: every
		// answer carrying a tools list is filtered here.
		m, k, _ := classify(msg)
		if k == kindResponse && m.Result != nil {
			return h.filter(x, &m)
		}
	}
	return nil
}

// filter removes hidden tools from a tools/list response m.
func (h *HTTP) filter(x *exchange, m *message) []byte {
	if m.Result == nil {
		return nil
	}
	if x.sess == nil {
		x.sess = h.sessions.ensure(x.sid) // the server accepted the session
	}
	ident := x.ident
	if x.watch != watchList {
		ident = h.identity(x.r) // a tools/list answered on a GET stream
	}
	if x.watch == watchList && x.listAll {
		x.sess.catalog.completeFrom(m.Result, x.listGen)
	}
	return h.Enforcer.FilterTools(x.r.Context(), &x.sess.catalog, ident, m)
}

// toolsChanged is what a server's notification that its tools changed
// holds: an event holding it makes the session's catalog stale (a false
// alarm costs one listing, when a call needs annotations).
var toolsChanged = []byte("notifications/tools/list_changed")

// toolsMember is what an answer carrying a tools list holds.
var toolsMember = []byte(`"tools"`)

// sameID reports whether a and b are the same request id as a server reads
// ids (see [idKey]: 1 and 1.0, "a" and "\u0061" are one).
func sameID(a, b json.RawMessage) bool {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	return len(a) > 0 && (bytes.Equal(a, b) || bytes.Equal(idKey(a), idKey(b)))
}

// relay streams the server's text/event-stream answer to the client event
// by event, flushing whenever no further event is already buffered.
func (h *HTTP) relay(w http.ResponseWriter, resp *http.Response, x *exchange) {
	var rc *http.ResponseController
	if x.events != nil {
		rc = x.events.rc // the answer is an event stream already
	} else {
		rc = http.NewResponseController(w)
		rc.SetWriteDeadline(time.Time{}) // a stream lasts as long as it lasts
		copyResponseHeaders(w.Header(), resp.Header, true)
		w.WriteHeader(resp.StatusCode)
		rc.Flush()
	}

	sr := newSSEReader(resp.Body, int(min(h.maxBody, 1<<30)))
	defer sr.free()
	var out []byte // a rewritten event
	resumable := false
	var err, readErr error // readErr: the server's stream broke (not the client)
	for {
		if err = sr.next(); err != nil {
			readErr = err
			break
		}
		ev := sr.raw
		if x.sess != nil && bytes.Contains(ev, toolsChanged) {
			x.sess.catalog.Stale() // listed again when a call needs it
		}
		if (x.watch != watchNone && !x.answered) || (x.sess != nil && x.sess.orphans.Load() > 0) ||
			(x.r.Method == http.MethodGet && bytes.Contains(ev, toolsMember)) {
			e := sr.parse()
			resumable = resumable || e.hasID
			if e.isMessage() {
				if rewritten := h.see(x, e.data); rewritten != nil {
					out = appendEvent(out[:0], sr.raw, rewritten)
					ev = out[:len(out)-1] // without the blank line, added below
				}
			}
		}
		ev = append(ev, '\n')
		if _, err = w.Write(ev); err != nil {
			break
		}
		if sr.br.Buffered() == 0 {
			if err = rc.Flush(); err != nil {
				break
			}
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		h.log.Warn("the MCP server's event stream broke", "err", err)
	}
	// An upstream failure, once: the server's GET stream broke, or a
	// watched request's stream ended (broke, ran out of time) without its
	// answer. Not a client that left or could not be written to, and not
	// an answered call whose stream outlived it.
	switch {
	case x.r.Context().Err() != nil:
	case x.r.Method == http.MethodGet:
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			h.upstreamError()
		}
	case x.watch != watchNone && !x.answered:
		h.upstreamError()
	}
	if x.watch == watchNone || x.answered {
		return
	}
	// The stream ended before the answer.
	switch {
	case x.r.Context().Err() != nil:
		// The client went away.
	case errors.Is(x.ctx.Err(), context.DeadlineExceeded):
		msg := appendError(nil, x.id, codeUpstreamGone, "the MCP server did not answer within "+h.CallTimeout.String())
		w.Write(appendMessageEvent(nil, msg))
		rc.Flush()
	case errors.Is(err, errEventTooLarge):
		msg := appendError(nil, x.id, codeUpstreamGone, "the MCP server's answer is larger than "+strconv.FormatInt(h.maxBody, 10)+" bytes")
		w.Write(appendMessageEvent(nil, msg))
		rc.Flush()
	}
	if x.watch == watchList && resumable {
		// The client may resume the stream with a GET: filter the answer
		// there.
		if x.sess == nil {
			x.sess = h.sessions.ensure(x.sid) // the server accepted the session
		}
		x.sess.addOrphan(x.id)
	}
}

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	hd := w.Header()
	hd["Content-Type"] = jsonType
	hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
}

var jsonType = []string{"application/json"}

// mediaType returns a Content-Type's media type, lowercased.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; 'A' <= c && c <= 'Z' {
			mt, _, err := mime.ParseMediaType(ct)
			if err != nil {
				return ct
			}
			return mt
		}
	}
	return ct
}

// unreadableBodyType says why a POST whose Content-Type is ct is refused,
// or "" when it is not: the proxy reads every body as UTF-8 JSON, so a
// body in another charset would mean one message to the proxy and another
// to a server that honoured the charset. A missing Content-Type, or one
// without a charset, is read as UTF-8 JSON.
func unreadableBodyType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "unsupported Content-Type: send application/json"
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return "unsupported charset " + strconv.Quote(cs) + ": MCP messages are UTF-8 JSON (send application/json)"
	}
	if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return "unsupported Content-Type " + strconv.Quote(mt) + ": send application/json"
	}
	return ""
}

// copyRequestHeaders copies the headers [HTTP] forwards (see its doc).
func copyRequestHeaders(dst, src http.Header) {
	for k, vv := range src {
		switch k {
		case "Accept", "Last-Event-Id", "User-Agent", "Traceparent", "Tracestate", "Baggage":
		default:
			if !strings.HasPrefix(k, "Mcp-") {
				continue
			}
		}
		dst[k] = vv
	}
	if _, ok := dst["User-Agent"]; !ok {
		dst["User-Agent"] = noUserAgent // not Go's default
	}
}

var noUserAgent = []string{""}

// copyResponseHeaders copies a response's end-to-end headers; without
// Content-Length when the body may change.
func copyResponseHeaders(dst, src http.Header, dropLength bool) {
	conn := src["Connection"]
	for k, vv := range src {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade":
			continue
		case "Content-Length":
			if dropLength {
				continue
			}
		}
		if len(conn) > 0 && listedIn(conn, k) {
			continue
		}
		dst[k] = vv
	}
}

// listedIn reports whether a Connection header names header k.
func listedIn(conn []string, k string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

var errTooLarge = errors.New("message too large")

// readBody reads a whole body of at most max bytes; size is its declared
// length, or -1.
func readBody(r io.Reader, size, max int64) ([]byte, error) {
	if size > max {
		return nil, errTooLarge
	}
	var buf []byte
	if size >= 0 {
		buf = make([]byte, 0, size+1) // +1: room to see the end without growing
	}
	return readBodyInto(buf, r, size, max)
}

// readBodyInto appends a whole body of at most max bytes to buf; size is
// its declared length, or -1.
func readBodyInto(buf []byte, r io.Reader, size, max int64) ([]byte, error) {
	if size > max {
		return buf, errTooLarge
	}
	if size >= 0 {
		buf = slices.Grow(buf, int(size)+1)
	}
	start := len(buf)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		room := buf[len(buf):cap(buf)]
		if left := max + 1 - int64(len(buf)-start); int64(len(room)) > left {
			room = room[:left]
		}
		n, err := r.Read(room)
		buf = buf[:len(buf)+n]
		if int64(len(buf)-start) > max {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// drain reads a little of a body so its connection can be reused.
func drain(r io.Reader) { io.CopyN(io.Discard, r, 64<<10) }

// sessionTable holds the sessions [HTTP] tracks. Reads are lock-free;
// inserts and evictions take mu.
type sessionTable struct {
	max   int
	byID  sync.Map // session id → *session
	n     atomic.Int64
	clock atomic.Int64 // ticks once per lookup, for least-recently-used eviction
	mu    sync.Mutex   // serialises inserts and evictions
	none  session      // requests without a session id
}

// session is what the proxy keeps of one MCP session.
type session struct {
	catalog Catalog
	used    atomic.Int64 // clock value of the last lookup
	orphans atomic.Int32 // len(lists), read without mu
	mu      sync.Mutex   // guards lists
	// lists are the ids of tools/list requests whose event stream ended
	// before their response: the client may resume it on a GET stream.
	lists []string
}

// maxOrphans bounds session.lists.
const maxOrphans = 16

func (s *session) addOrphan(id json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lists) >= maxOrphans {
		s.lists = s.lists[1:]
	}
	s.lists = append(s.lists, string(idKey(id)))
	s.orphans.Store(int32(len(s.lists)))
}

func (s *session) takeOrphan(id json.RawMessage) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := idKey(bytes.TrimSpace(id))
	for i, l := range s.lists {
		if l == string(k) {
			s.lists = append(s.lists[:i], s.lists[i+1:]...)
			s.orphans.Store(int32(len(s.lists)))
			return true
		}
	}
	return false
}

// get returns the session with this id, or nil when it is not tracked.
func (t *sessionTable) get(id string) *session {
	if id == "" {
		return &t.none
	}
	v, ok := t.byID.Load(id)
	if !ok {
		return nil
	}
	s := v.(*session)
	s.used.Store(t.clock.Add(1))
	return s
}

// ensure returns the session with this id, tracking it if it is not yet,
// and evicting the least recently used one when the table is full.
func (t *sessionTable) ensure(id string) *session {
	if s := t.get(id); s != nil {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.byID.Load(id); ok {
		return v.(*session)
	}
	for t.n.Load() >= int64(t.max) {
		var oldest any
		var used int64
		t.byID.Range(func(k, v any) bool {
			if u := v.(*session).used.Load(); oldest == nil || u < used {
				oldest, used = k, u
			}
			return true
		})
		if oldest == nil {
			break
		}
		if _, ok := t.byID.LoadAndDelete(oldest); ok {
			t.n.Add(-1)
		}
	}
	s := &session{}
	s.used.Store(t.clock.Add(1))
	t.byID.Store(strings.Clone(id), s)
	t.n.Add(1)
	return s
}

// drop forgets a session.
func (t *sessionTable) drop(id string) {
	if id == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byID.LoadAndDelete(id); ok {
		t.n.Add(-1)
	}
}

// Reading the members of a JSON object without decoding it. The scanners
// below follow the structure of strings, objects and arrays, and stop at the
// first thing out of place; they do not check literals and numbers.

// skipWS returns the index of the first byte of b from i that is not JSON
// whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] (a
// quote), or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := skipString(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j
		}
		j++
	}
	return j
}

// members calls f with the name (as written, without quotes) and the value
// of each member of the object b, in order, until f returns false. It
// reports whether b is an object it could read to its end.
func members(b []byte, f func(name, value []byte) bool) bool {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		end := skipString(b, i)
		if end < 0 {
			return false
		}
		name := b[i+1 : end-1]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		vend := skipValue(b, i)
		if vend < 0 {
			return false
		}
		if !f(name, b[i:vend]) {
			return true
		}
		i = skipWS(b, vend)
		if i < len(b) && b[i] == '}' {
			return skipWS(b, i+1) == len(b)
		}
		if i >= len(b) || b[i] != ',' {
			return false
		}
		i = skipWS(b, i+1)
	}
}

// scanAnswer reads the id, method and error members of a server message
// into o. It reports whether msg is an object it could read.
func scanAnswer(msg []byte, o *callOutcome) bool {
	*o = callOutcome{}
	return members(msg, func(name, value []byte) bool {
		switch string(name) {
		case "id":
			o.ID = value
		case "method":
			o.Method = true
		case "error":
			o.Error = string(value) != "null"
		}
		return true
	})
}

// Member names the proxy reads: of a JSON-RPC message, and of the params of
// a tools/call.
var (
	envelopeNames = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	callNames     = []string{"name", "arguments"}
)

// exactNames reports whether a client message (valid JSON, as classify
// found) reads the same to the proxy as to the server: in the message, and
// in the params of a tools/call (call), no member name is repeated and none
// differs only in case from one the proxy reads. The proxy reads messages
// with encoding/json, which matches names regardless of case and keeps the
// last of repeated ones; MCP servers match them exactly (the Go SDK) or may
// keep the first: {"method":"tools/call","Method":"ping",…} would be
// forwarded as a ping and run as a tools/call.
func exactNames(msg []byte, call bool) bool {
	var params []byte
	if !distinctNames(msg, envelopeNames, func(name, value []byte) {
		if string(name) == "params" {
			params = value
		}
	}) {
		return false
	}
	return !call || params == nil || distinctNames(params, callNames, nil)
}

// distinctNames reports whether the names of the members of object b are
// distinct ignoring case, and each of known or unlike all of them ignoring
// case; f, when set, sees each member. A name with escapes is compared
// unescaped. b that is not an object passes. known holds at most 64 names,
// none equal to another ignoring case.
func distinctNames(b []byte, known []string, f func(name, value []byte)) bool {
	var knownSeen uint64 // known names seen, by index
	var small [16][]byte
	seen := small[:0]          // names seen that are not known
	var folded map[string]bool // once there are many names
	ok := true
	read := members(b, func(name, value []byte) bool {
		if bytes.IndexByte(name, '\\') >= 0 {
			var s string
			if json.Unmarshal(append(append([]byte{'"'}, name...), '"'), &s) != nil {
				ok = false
				return false
			}
			name = []byte(s)
		}
		if i := slices.Index(known, string(name)); i >= 0 {
			// A name the proxy reads, spelled exactly (the usual case): it
			// must not repeat. No other name can fold to it: distinct known
			// names differ under folding, and any other name folding to a
			// known one is refused below.
			if knownSeen&(1<<i) != 0 {
				ok = false
				return false
			}
			knownSeen |= 1 << i
			if f != nil {
				f(name, value)
			}
			return true
		}
		for _, k := range known {
			if bytes.EqualFold(name, []byte(k)) {
				ok = false
				return false
			}
		}
		if folded == nil && len(seen) < len(small) {
			for _, n := range seen {
				if bytes.EqualFold(n, name) {
					ok = false
					return false
				}
			}
			seen = append(seen, name)
		} else {
			if folded == nil {
				folded = make(map[string]bool, 2*len(small))
				for _, n := range seen {
					folded[foldKey(n)] = true
				}
			}
			low := foldKey(name)
			if folded[low] {
				ok = false
				return false
			}
			folded[low] = true
		}
		if f != nil {
			f(name, value)
		}
		return true
	})
	return ok && (read || !isObject(b))
}

func isObject(b []byte) bool {
	i := skipWS(b, 0)
	return i < len(b) && b[i] == '{'
}

// foldKey returns a key equal for names equal under Unicode case folding
// (as bytes.EqualFold compares them): each rune replaced by the smallest of
// its folding orbit.
func foldKey(name []byte) string {
	out := make([]rune, 0, len(name))
	for _, r := range string(name) {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		out = append(out, least)
	}
	return string(out)
}
