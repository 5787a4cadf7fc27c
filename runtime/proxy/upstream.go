package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits of the connections to the MCP server.
const (
	upstreamDialTimeout = 10 * time.Second
	upstreamKeepAlive   = 30 * time.Second
	// upstreamIdleTimeout: an idle connection older than this is closed,
	// not reused.
	upstreamIdleTimeout = 90 * time.Second
	// upstreamMaxIdle bounds the idle connections kept for reuse.
	upstreamMaxIdle = 256
	// upstreamBufSize is each connection's read and write buffer: a request
	// or a response line rarely needs more (longer ones are read in several
	// steps), and every open event stream holds a connection.
	upstreamBufSize = 2 << 10
)

// newUpstreamClient returns the default client of [HTTP] and [Bridge] for
// the server at target: it follows no redirects, and sends its requests
// through a [directTransport] when target is plain HTTP reached without a
// proxy (on Unix), through an http.Transport otherwise (HTTPS, with HTTP/2
// when the server offers it; proxies from the environment).
func newUpstreamClient(target *url.URL) *http.Client {
	return newUpstreamClientWith(target, http.ProxyFromEnvironment)
}

// newUpstreamClientWith is newUpstreamClient with proxy choosing the
// proxy of each request.
func newUpstreamClientWith(target *url.URL, proxy func(*http.Request) (*url.URL, error)) *http.Client {
	t := &http.Transport{
		Proxy:                 proxy,
		DialContext:           (&net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: upstreamKeepAlive}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * upstreamMaxIdle,
		MaxIdleConnsPerHost:   upstreamMaxIdle,
		IdleConnTimeout:       upstreamIdleTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       upstreamBufSize,
		ReadBufferSize:        upstreamBufSize,
	}
	var rt http.RoundTripper = t
	if directTransportSupported && target != nil && target.Scheme == "http" {
		if p, err := proxy(&http.Request{URL: target}); err == nil && p == nil {
			rt = newDirectTransport(target, t)
		}
	}
	return &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// directTransport sends HTTP/1.1 requests to one plain-HTTP server over
// keep-alive connections that the calling goroutine writes and reads
// itself. http.Transport hands every request to a writer goroutine and
// every response back from a reader goroutine; on a call that takes a few
// tens of microseconds those hand-offs (and the threads they wake) are a
// large part of the proxy's CPU. Requests are written by net/http's
// Request.Write and responses read by http.ReadResponse: only the
// connections are managed here. Request.Write reports an httptrace
// WroteRequest, as http.Transport does: the HTTP proxy learns from it that
// a call was written, and counts it (TestHTTPSentCallCounts). The report
// comes once the request is in the connection's buffer, before the flush:
// a call whose flush fails, or whose resend then finds no connection,
// counts too, the safe side for a limit.
//
// Contracts: a response body must be read to its end or closed; at its end
// the connection goes back to the idle pool (unless either side asked to
// close it), a body closed early closes its connection. A request whose
// context is done is not sent; cancelling it later ends its exchange at
// once (pending reads and writes fail, and the connection is not reused).
// An idle connection is checked before reuse (a server closes idle
// connections when it likes), the most recently used first; a request
// whose write fails on a reused connection is sent again once on a new
// one, as nothing of it reached the server whole. Response headers are
// read up to upstreamMaxHeaderBytes, after at most upstreamMaxInterim
// informational responses; a 101 (a protocol switch nobody asked for) is
// an error. Requests for another host or scheme go to fallback.
//
// Not handled: a server that answers before it has read a large request
// body and closes the connection makes the write fail, and its answer is
// lost (the call gets an error). MCP requests are small.
type directTransport struct {
	scheme, host string // of the server
	addr         string // host:port to dial
	dialer       net.Dialer
	fallback     *http.Transport
	mu           sync.Mutex  // guards idle
	idle         []*upConn   // the idle pool, most recently used last
	sweeping     atomic.Bool // a sweep of the idle pool is scheduled
}

// Limits of reading a response's head.
const (
	upstreamMaxHeaderBytes = 1 << 20
	upstreamMaxInterim     = 5
)

var (
	errHeaderTooLarge = errors.New("proxy: the server's response headers are larger than 1 MiB")
	errTooManyInterim = errors.New("proxy: the server sent too many informational responses")
	errSwitched       = errors.New("proxy: the server switched protocols")
)

func newDirectTransport(target *url.URL, fallback *http.Transport) *directTransport {
	addr := target.Host
	if target.Port() == "" {
		addr = net.JoinHostPort(target.Hostname(), "80")
	}
	return &directTransport{
		scheme:   target.Scheme,
		host:     target.Host,
		addr:     addr,
		dialer:   net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: upstreamKeepAlive},
		fallback: fallback,
	}
}

// upConn is one connection to the server.
type upConn struct {
	conn      net.Conn
	raw       syscall.RawConn // for the liveness check; nil when the conn has none
	lr        limitedReader   // conn, limited while a response's head is read
	br        *bufio.Reader   // reads lr
	bw        *bufio.Writer
	idleSince time.Time
	peek      func(fd uintptr) bool // the liveness check's read, made once
	peekErr   error                 // its result
}

// limitedReader reads r, at most left more bytes when left is not
// negative.
type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left == 0 {
		return 0, errHeaderTooLarge
	}
	if l.left > 0 && int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	if l.left > 0 {
		l.left -= int64(n)
	}
	return n, err
}

// aLongTimeAgo is a deadline that makes every pending read and write fail.
var aLongTimeAgo = time.Unix(1, 0)

// RoundTrip implements http.RoundTripper.
func (t *directTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != t.scheme || req.URL.Host != t.host || req.Method == http.MethodConnect {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	for retried := false; ; retried = true {
		c, reused, err := t.get(ctx)
		if err != nil {
			closeBody()
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
		if ctx.Err() != nil { // done before anything was sent
			t.release(c, stop, true)
			closeBody()
			return nil, ctx.Err()
		}
		err = req.Write(c.bw)
		if err == nil {
			err = c.bw.Flush()
		}
		if err != nil {
			stop()
			c.conn.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// A write that failed left the request incomplete at the
			// server: on a connection the server had closed, send it
			// again on a new one (a copy: the caller's request is not
			// changed).
			if reused && !retried {
				if req.Body == nil || req.Body == http.NoBody {
					continue
				}
				if req.GetBody != nil {
					if body, gerr := req.GetBody(); gerr == nil {
						again := *req
						again.Body = body
						req = &again
						continue
					}
				}
			}
			return nil, err
		}
		resp, err := readResponse(c, req)
		if err != nil {
			stop()
			c.conn.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		reuse := !resp.Close && !req.Close
		if resp.Body == http.NoBody {
			t.release(c, stop, reuse)
			return resp, nil
		}
		resp.Body = &upBody{t: t, c: c, rc: resp.Body, stop: stop, reuse: reuse}
		return resp, nil
	}
}

// readResponse reads the response to req, skipping informational (1xx)
// responses, its head limited to upstreamMaxHeaderBytes.
func readResponse(c *upConn, req *http.Request) (*http.Response, error) {
	c.lr.left = upstreamMaxHeaderBytes
	defer func() { c.lr.left = -1 }()
	for interim := 0; ; interim++ {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			if c.lr.left == 0 {
				return nil, errHeaderTooLarge
			}
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errSwitched
		case resp.StatusCode >= 100 && resp.StatusCode <= 199:
			if interim >= upstreamMaxInterim {
				return nil, errTooManyInterim
			}
			continue
		}
		return resp, nil
	}
}

// get returns an idle connection that is still open (the most recently
// used first), or a new one.
func (t *directTransport) get(ctx context.Context) (c *upConn, reused bool, err error) {
	for {
		t.mu.Lock()
		if n := len(t.idle); n > 0 {
			c = t.idle[n-1]
			t.idle[n-1] = nil
			t.idle = t.idle[:n-1]
		}
		t.mu.Unlock()
		if c == nil {
			break
		}
		if time.Since(c.idleSince) < upstreamIdleTimeout && c.alive() {
			return c, true, nil
		}
		c.conn.Close()
		c = nil
	}
	conn, err := t.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// The dial ran into the request's deadline (its own timer
			// may fire a moment before the context's): report the
			// deadline, as the caller's timeout.
			<-ctx.Done()
			return nil, false, ctx.Err()
		}
		return nil, false, err
	}
	c = &upConn{conn: conn, lr: limitedReader{r: conn, left: -1}, bw: bufio.NewWriterSize(conn, upstreamBufSize)}
	c.br = bufio.NewReaderSize(&c.lr, upstreamBufSize)
	if sc, ok := conn.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	return c, false, nil
}

// release ends an exchange on c: c goes back to the idle pool when reuse
// holds and its request's context did not cancel it (stop reports that),
// and is closed otherwise.
func (t *directTransport) release(c *upConn, stop func() bool, reuse bool) {
	if !stop() || !reuse || c.br.Buffered() > 0 {
		c.conn.Close()
		return
	}
	c.idleSince = time.Now()
	t.mu.Lock()
	full := len(t.idle) >= upstreamMaxIdle
	if !full {
		t.idle = append(t.idle, c)
	}
	t.mu.Unlock()
	if full {
		c.conn.Close()
		return
	}
	if !t.sweeping.Swap(true) {
		time.AfterFunc(upstreamIdleTimeout/3, t.sweep)
	}
}

// sweep closes the idle connections that are too old or closed by the
// server, and schedules itself again while some remain.
func (t *directTransport) sweep() {
	t.mu.Lock()
	var stale []*upConn
	kept := t.idle[:0]
	for _, c := range t.idle {
		if time.Since(c.idleSince) >= upstreamIdleTimeout || !c.alive() {
			stale = append(stale, c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(t.idle[len(kept):])
	t.idle = kept
	more := len(kept) > 0
	t.mu.Unlock()
	for _, c := range stale {
		c.conn.Close()
	}
	t.sweeping.Store(false)
	if more && !t.sweeping.Swap(true) {
		time.AfterFunc(upstreamIdleTimeout/3, t.sweep)
	}
}

// CloseIdleConnections closes the idle connections (http.Client calls it).
func (t *directTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
	t.fallback.CloseIdleConnections()
}

// idleCount returns how many connections wait in the idle pool.
func (t *directTransport) idleCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.idle)
}

// upBody is the body of a response read by [directTransport]: its end
// gives the connection back.
type upBody struct {
	t     *directTransport
	c     *upConn
	rc    io.ReadCloser // the body as http.ReadResponse made it
	stop  func() bool   // stops the context's watch of the exchange
	reuse bool
	state atomic.Int32 // bodyOpen, bodyEnded or bodyClosed
	err   error        // why the body ended, once state is bodyEnded
}

// States of an [upBody].
const (
	bodyOpen   = iota
	bodyEnded  // read to its end (or to an error): the connection is released
	bodyClosed // closed before its end: the connection is closed
)

var errBodyClosed = errors.New("proxy: read on a closed response body")

func (b *upBody) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyEnded:
		return 0, b.err
	case bodyClosed:
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.err = err // written before the state says so; read after
		if b.state.CompareAndSwap(bodyOpen, bodyEnded) {
			b.t.release(b.c, b.stop, b.reuse && err == io.EOF)
		}
	}
	return n, err
}

// Close ends the exchange; before the body's end that closes the
// connection (which unblocks a Read in progress).
func (b *upBody) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.stop()
		b.c.conn.Close()
	}
	return nil
}

var _ io.ReadCloser = (*upBody)(nil)
