package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// The proxy lists a server's tools itself when the policy in force reads
// tool.annotations and a call names a tool it has not seen listed, or the
// server said its tools changed (see [Enforcer.ReadsAnnotations]). Over
// stdio the requests share the server's pipe ([Stdio.awaitListing]); over
// HTTP each page is a POST of its own, made here.

// Limits of the proxy's own listings.
const (
	// MaxToolPages bounds how many pages of tools/list one listing reads:
	// a server whose cursors never end stops there, and its tools not yet
	// read have no annotations.
	MaxToolPages = 100
	// MaxListRestarts bounds how many times a listing starts over because
	// the server said its tools changed while it read them; past it the
	// calls waiting on it fail.
	MaxListRestarts = 3
	// MaxListWaiting bounds how many stdio calls wait on one listing; more
	// are answered with an error.
	MaxListWaiting = 1024
	// DefaultListTimeout bounds a listing (every page) when no call
	// timeout is set.
	DefaultListTimeout = 30 * time.Second
)

// listTimeout is how long a listing may take under a call timeout of
// callTimeout.
func listTimeout(callTimeout time.Duration) time.Duration {
	if callTimeout > 0 {
		return callTimeout
	}
	return DefaultListTimeout
}

// listIDs is the prefix of the ids of the proxy's own tools/list requests,
// on every transport: random, so that no client can guess one (and have
// the proxy take the server's answer to the client's request, spelled with
// escapes, for a page of its listing), and of letters, digits and dashes
// only, which no JSON encoder escapes (PHP's escapes "/").
var listIDs = func() string {
	var b [12]byte
	rand.Read(b[:])
	return "toolgate-tools-list-" + hex.EncodeToString(b[:]) + "-"
}()

// listRequests numbers the proxy's own tools/list requests.
var listRequests atomic.Uint64

// newListID returns the id (a string) of a new tools/list request of the
// proxy's own.
func newListID() string { return listIDs + strconv.FormatUint(listRequests.Add(1), 10) }

// ownListID reports whether a response id (raw JSON) names one of the
// proxy's own tools/list requests.
func ownListID(id []byte) bool {
	return len(id) > len(listIDs) && id[0] == '"' && bytes.HasPrefix(id[1:], []byte(listIDs))
}

// appendListRequest appends the proxy's own tools/list request with id (a
// JSON string) for the page after cursor (a JSON string; nil for the
// first).
func appendListRequest(dst []byte, id string, cursor json.RawMessage) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"method":"tools/list"`...)
	if cursor != nil {
		dst = append(dst, `,"params":{"cursor":`...)
		dst = append(dst, cursor...)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// Why a listing fails.
var (
	errListUnreadable   = errors.New("its tools/list result is not a list of tools")
	errListKeptChanging = errors.New("the MCP server's tools kept changing while the proxy listed them")
	errNoListAnswer     = errors.New("the MCP server's answer to the proxy's tools/list holds no response to it")
)

// parsePage adds the tools of one page of a tools/list result to tools and
// returns the cursor of the next page (a JSON string), or nil after the
// last.
func parsePage(result json.RawMessage, tools map[string]toolEntry) (next json.RawMessage, err error) {
	var page struct {
		Tools      []listedTool    `json:"tools"`
		NextCursor json.RawMessage `json:"nextCursor"`
	}
	if err := json.Unmarshal(result, &page); err != nil {
		return nil, errListUnreadable
	}
	for _, t := range page.Tools {
		tools[t.Name] = toolEntry{name: t.Name, annotations: listedAnnotations(t.Annotations)}
	}
	if next = bytes.TrimSpace(page.NextCursor); len(next) == 0 || next[0] != '"' || string(next) == `""` {
		return nil, nil
	}
	return next, nil
}

// listsNothing reports whether an error answer to tools/list (its error
// member) says the server has no tools to list: method not found. Any other
// error fails the listing, and the calls waiting on it.
func listsNothing(errMember json.RawMessage) bool {
	var e struct {
		Code *int `json:"code"`
	}
	return json.Unmarshal(errMember, &e) == nil && e.Code != nil && *e.Code == codeMethodNotFound
}

// fullListing reports whether tools/list params ask for the whole list:
// no cursor. Such a request answered without a next cursor lists every
// tool, whoever asked.
func fullListing(params []byte) bool {
	i := lexSpace(params, 0)
	if i == len(params) || string(params[i:]) == "null" {
		return true
	}
	full := true
	if !scanMembers(params, i, func(key, _ []byte) {
		if string(key) == `"cursor"` {
			full = false
		}
	}) {
		return false
	}
	return full
}

// completeFrom makes a whole list of tools the server gave a client's
// tools/list (result; the request asked for no cursor, at generation gen)
// the catalog, complete, when the answer has no next cursor and the server
// has not said its tools changed since: the proxy then needs no listing of
// its own.
func (c *Catalog) completeFrom(result json.RawMessage, gen uint64) {
	tools := map[string]toolEntry{}
	if next, err := parsePage(result, tools); err == nil && next == nil {
		c.replace(tools, gen)
	}
}

// listing is one listing of a server's tools by the proxy over HTTP: done
// is closed when it ends, and err then says why it failed, or is nil.
type listing struct {
	done chan struct{}
	err  error
}

// join returns the listing in flight, starting one when there is none
// (lead is then true: the caller lists, and ends it with [Catalog.end]),
// or nil when the catalog has become complete meanwhile.
func (c *Catalog) join() (l *listing, lead bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.listing != nil {
		return c.listing, false
	}
	if c.complete.Load() {
		return nil, false
	}
	c.listing = &listing{done: make(chan struct{})}
	return c.listing, true
}

// end ends listing l with err.
func (c *Catalog) end(l *listing, err error) {
	c.mu.Lock()
	c.listing = nil
	c.mu.Unlock()
	l.err = err
	close(l.done)
}

// postFunc sends one request body to the MCP server (with the session's
// headers) and returns its HTTP response.
type postFunc func(ctx context.Context, body []byte) (*http.Response, error)

// awaitListing waits for a listing of the server's tools into cat to end,
// joining the one under way or starting one with ls (none when cat has
// become complete meanwhile). The listing runs on its own, bounded by
// ls.timeout, so that a caller who leaves does not fail the others
// waiting on it; it is logged, and counted when it fails, once. It
// returns the listing's error, or ctx's.
func awaitListing(ctx context.Context, cat *Catalog, ls *lister) error {
	l, lead := cat.join()
	if l == nil {
		return nil
	}
	if lead {
		go func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ls.timeout)
			defer cancel()
			start := time.Now()
			tools, err := listPages(lctx, cat, ls.post, ls.maxBody)
			if err != nil {
				ls.failed(err)
			} else {
				ls.log.Info("listed the MCP server's tools", "tools", tools, "took", time.Since(start))
			}
			if ls.listed != nil {
				ls.listed(err == nil)
			}
			cat.end(l, err)
		}()
	}
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lister is how a transport lists a server's tools itself over HTTP.
type lister struct {
	timeout time.Duration // for a whole listing
	post    postFunc
	maxBody int64
	log     *slog.Logger
	count   func()        // counts an upstream failure; may be nil
	listed  func(ok bool) // told of each listing as it ends; may be nil
}

// failed logs and counts a listing that failed with err.
func (ls *lister) failed(err error) {
	ls.log.Warn("listing the MCP server's tools failed", "err", err)
	if ls.count != nil {
		ls.count()
	}
}

// listThenDecide is DecideCall for a call that must wait for a listing: it
// lists the server's tools into cat (joining a listing under way), then
// decides the call, again as long as the server said its tools changed
// meanwhile, at most MaxListRestarts more times. It returns DecideCall's
// answer, or why the listing failed.
func (e *Enforcer) listThenDecide(ctx context.Context, cat *Catalog, id bundles.Identity, m *message, ls *lister) (Verdict, []byte, error) {
	for tries := 0; ; tries++ {
		if err := awaitListing(ctx, cat, ls); err != nil {
			return Verdict{}, nil, err
		}
		v, errLine, listFirst := e.DecideCall(ctx, cat, id, m)
		if !listFirst {
			return v, errLine, nil
		}
		if tries == MaxListRestarts {
			ls.failed(errListKeptChanging)
			return Verdict{}, nil, errListKeptChanging
		}
	}
}

// listPages reads the server's tools/list page by page, at most
// [MaxToolPages], makes what it read cat's tools and returns how many; when
// the server said its tools changed meanwhile it starts over, at most
// [MaxListRestarts] times. A method-not-found answer ends a listing well
// (the server lists nothing more); any other error answer fails it.
func listPages(ctx context.Context, cat *Catalog, post postFunc, maxBody int64) (int, error) {
	for restarts := 0; ; restarts++ {
		gen := cat.generation()
		tools := map[string]toolEntry{}
		var cursor []byte
		for range MaxToolPages {
			id := newListID()
			m, err := postForAnswer(ctx, cat, post, appendListRequest(nil, id, cursor), id, maxBody)
			if err != nil {
				return 0, err
			}
			if m.Error != nil {
				if listsNothing(m.Error) {
					break
				}
				return 0, fmt.Errorf("the MCP server answered the proxy's tools/list with the error %s", m.Error)
			}
			if cursor, err = parsePage(m.Result, tools); err != nil {
				return 0, err
			}
			if cursor == nil {
				break
			}
		}
		if cat.replace(tools, gen) {
			return len(tools), nil
		}
		if restarts == MaxListRestarts {
			return 0, errListKeptChanging
		}
	}
}

// statusError is a listing refused with an HTTP status.
type statusError struct{ code int }

func (e statusError) Error() string {
	return "the MCP server answered the proxy's tools/list with HTTP " + strconv.Itoa(e.code)
}

// errNoClient refuses a server's request made on the proxy's own stream.
const errNoClient = "toolgate: this request came on the proxy's own tools/list, which no client sees"

// postForAnswer posts body, a request with id (a string), and returns the
// server's response to it, read from a JSON answer or an event stream.
// Other messages on it are dropped (the request is the proxy's), but a
// notification that the tools changed makes cat stale, and a request of
// the server's is refused with a JSON-RPC error (-32000) posted back.
func postForAnswer(ctx context.Context, cat *Catalog, post postFunc, body []byte, id string, maxBody int64) (message, error) {
	resp, err := post(ctx, body)
	if err != nil {
		if ctx.Err() != nil {
			return message{}, ctx.Err()
		}
		return message{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		drain(resp.Body)
		return message{}, statusError{resp.StatusCode}
	}
	want := appendString(nil, id)
	answers := func(msg []byte) (message, bool) {
		m, k, _ := classify(msg)
		switch {
		case k == kindNotification && *m.Method == "notifications/tools/list_changed":
			cat.Stale()
		case k == kindRequest:
			// A request of the server's on the proxy's own stream has no
			// client to reach: refused, so that the server does not wait
			// on it (and hold up the listing).
			if resp, err := post(ctx, appendError(nil, m.ID, codeUpstreamGone, errNoClient)); err == nil {
				drain(resp.Body)
				resp.Body.Close()
			}
		}
		return m, k == kindResponse && sameID(m.ID, want)
	}
	switch mediaType(resp.Header.Get("Content-Type")) {
	case "application/json":
		b, err := readBodyInto(nil, resp.Body, resp.ContentLength, maxBody)
		if err != nil {
			return message{}, err
		}
		for _, msg := range splitMessages(b) {
			if m, ok := answers(msg); ok {
				return m, nil
			}
		}
	case "text/event-stream":
		sr := newSSEReader(resp.Body, int(min(maxBody, 1<<30)))
		defer sr.free()
		for {
			if err := sr.next(); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				if ctx.Err() != nil {
					return message{}, ctx.Err()
				}
				return message{}, err
			}
			if e := sr.parse(); e.isMessage() {
				if m, ok := answers(bytes.Clone(e.data)); ok {
					return m, nil
				}
			}
		}
	default:
		return message{}, fmt.Errorf("the MCP server answered the proxy's tools/list with content type %q", resp.Header.Get("Content-Type"))
	}
	return message{}, errNoListAnswer
}

// listFailure is the JSON-RPC error message for a call whose listing failed
// with err.
func listFailure(err error, timeout time.Duration) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "the MCP server did not answer the proxy's tools/list within " + timeout.String() + "; the policy in force needs the tools' annotations (tool.annotations)"
	}
	return "the proxy could not list the MCP server's tools, which the policy in force needs (tool.annotations)"
}
