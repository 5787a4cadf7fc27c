package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// The proxy lists a server's tools itself when the policy in force reads
// tool.annotations and a call names a tool it has not seen listed (see
// [Enforcer.ReadsAnnotations]). Over stdio the requests share the server's
// pipe ([Stdio.awaitListing]); over HTTP each page is a POST of its own,
// made here.

// listRequests numbers the proxy's own tools/list requests over HTTP.
var listRequests atomic.Uint64

// postFunc sends one request body to the MCP server (with the session's
// headers) and returns its HTTP response.
type postFunc func(ctx context.Context, body []byte) (*http.Response, error)

// awaitListing waits until cat is complete, listing the server's tools with
// post when no listing is under way. The listing runs on its own, bounded
// by timeout (zero: none), so that a caller who leaves does not fail the
// others waiting on it; failed, when set, is told once why it failed. It
// returns the listing's error, or ctx's.
func awaitListing(ctx context.Context, cat *Catalog, timeout time.Duration, post postFunc, maxBody int64, failed func(error)) error {
	l, lead := cat.join()
	if lead {
		go func() {
			lctx := context.WithoutCancel(ctx)
			if timeout > 0 {
				var cancel context.CancelFunc
				lctx, cancel = context.WithTimeout(lctx, timeout)
				defer cancel()
			}
			err := listPages(lctx, cat, post, maxBody)
			if err != nil && failed != nil {
				failed(err)
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

// listPages reads the server's tools/list page by page into cat, at most
// [MaxToolPages]. A method-not-found answer ends it well: the server lists
// nothing (more); any other error answer fails it.
func listPages(ctx context.Context, cat *Catalog, post postFunc, maxBody int64) error {
	var cursor []byte
	for range MaxToolPages {
		id := "toolgate/tools-list/" + strconv.FormatUint(listRequests.Add(1), 10)
		m, err := postForAnswer(ctx, post, appendListRequest(nil, id, cursor), id, maxBody)
		if err != nil {
			return err
		}
		if m.Error != nil {
			if listsNothing(m.Error) {
				return nil
			}
			return fmt.Errorf("the MCP server answered the proxy's tools/list with the error %s", m.Error)
		}
		next, err := cat.recordPage(m.Result)
		if err != nil || next == nil {
			return err
		}
		cursor = next
	}
	return nil
}

// errNoListAnswer is why a listing fails when the server's answer holds
// no response to it.
var errNoListAnswer = errors.New("the MCP server's answer to the proxy's tools/list holds no response to it")

// postForAnswer posts body, a request with id (a string), and returns the
// server's response to it, read from a JSON answer or an event stream
// (whose other messages are dropped: the request is the proxy's).
func postForAnswer(ctx context.Context, post postFunc, body []byte, id string, maxBody int64) (message, error) {
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
		return message{}, fmt.Errorf("the MCP server answered the proxy's tools/list with HTTP %d", resp.StatusCode)
	}
	want := appendString(nil, id)
	answers := func(msg []byte) (message, bool) {
		m, k, _ := classify(msg)
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
