package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it
// accepted.
type countingServer struct {
	*httptest.Server
	conns atomic.Int64
}

func startCountingServer(t *testing.T, h http.HandlerFunc, idleTimeout time.Duration) *countingServer {
	t.Helper()
	s := &countingServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.IdleTimeout = idleTimeout
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) client(t *testing.T) (*http.Client, *directTransport) {
	t.Helper()
	u, err := url.Parse(s.URL + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	c := newUpstreamClient(u)
	dt, ok := c.Transport.(*directTransport)
	if !ok {
		t.Fatalf("the client of %s uses %T, not the direct transport", u, c.Transport)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c, dt
}

// post sends body and returns the answer's status and body.
func post(t *testing.T, ctx context.Context, c *http.Client, url, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func TestDirectTransportReusesConnections(t *testing.T) {
	s := startCountingServer(t, echoHandler, 0)
	c, _ := s.client(t)
	for i := range 100 {
		want := fmt.Sprintf(`{"n":%d}`, i)
		status, got, err := post(t, context.Background(), c, s.URL+"/mcp", want)
		if err != nil || status != 200 || got != want {
			t.Fatalf("call %d: %d %q %v", i, status, got, err)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("100 calls in turn took %d connections, want 1", n)
	}

	// Chunked answers (no Content-Length), read to their end, too.
	s2 := startCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := range 3 {
			fmt.Fprintf(w, "part %d;", i)
			w.(http.Flusher).Flush()
		}
	}, 0)
	c2, _ := s2.client(t)
	for i := range 10 {
		status, got, err := post(t, context.Background(), c2, s2.URL+"/mcp", "{}")
		if err != nil || status != 200 || got != "part 0;part 1;part 2;" {
			t.Fatalf("call %d: %d %q %v", i, status, got, err)
		}
	}
	if n := s2.conns.Load(); n != 1 {
		t.Errorf("10 chunked answers took %d connections, want 1", n)
	}
}

// TestDirectTransportServerClosedIdle: a server closes idle connections
// when it likes (Node's default is after 5 s); the next call must not fail
// on the dead connection.
func TestDirectTransportServerClosedIdle(t *testing.T) {
	s := startCountingServer(t, echoHandler, 50*time.Millisecond)
	c, _ := s.client(t)
	for i := range 3 {
		status, got, err := post(t, context.Background(), c, s.URL+"/mcp", `{"a":1}`)
		if err != nil || status != 200 || got != `{"a":1}` {
			t.Fatalf("call %d: %d %q %v", i, status, got, err)
		}
		time.Sleep(200 * time.Millisecond) // the server closes the connection meanwhile
	}
	if n := s.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (one per call, each closed by the server while idle)", n)
	}
}

func TestDirectTransportNoReuse(t *testing.T) {
	cases := map[string]http.HandlerFunc{
		"Connection: close": func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Connection", "close")
			w.Write([]byte("ok"))
		},
		"body closed early": func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write([]byte("data: one\n\n"))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // a stream that lasts until the client goes
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			s := startCountingServer(t, h, 0)
			c, _ := s.client(t)
			for i := range 2 {
				req, _ := http.NewRequest(http.MethodPost, s.URL+"/mcp", strings.NewReader("{}"))
				resp, err := c.Do(req)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("call %d: %v %v", i, resp, err)
				}
				buf := make([]byte, 3)
				if _, err := io.ReadFull(resp.Body, buf[:2]); err != nil {
					t.Fatalf("call %d: reading: %v", i, err)
				}
				resp.Body.Close()
				if _, err := resp.Body.Read(buf); !errors.Is(err, errBodyClosed) && !errors.Is(err, io.EOF) {
					t.Errorf("read after close: %v", err)
				}
			}
			if n := s.conns.Load(); n != 2 {
				t.Errorf("%d connections for 2 calls, want 2", n)
			}
		})
	}
}

func TestDirectTransportCancel(t *testing.T) {
	release := make(chan struct{})
	s := startCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Query().Has("hang") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("ok"))
	}, 0)
	defer close(release)
	c, _ := s.client(t)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := post(t, ctx, c, s.URL+"/mcp?hang", "{}")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a hung answer: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the cancelled call took %v", d)
	}
	// The connection of the cancelled call is not reused: the next call
	// works.
	status, got, err := post(t, context.Background(), c, s.URL+"/mcp", "{}")
	if err != nil || status != 200 || got != "ok" {
		t.Fatalf("after a cancelled call: %d %q %v", status, got, err)
	}
}

func TestDirectTransportSkipsInformational(t *testing.T) {
	s := startCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("final"))
	}, 0)
	c, _ := s.client(t)
	status, got, err := post(t, context.Background(), c, s.URL+"/mcp", "{}")
	if err != nil || status != 200 || got != "final" {
		t.Fatalf("%d %q %v, want the final 200", status, got, err)
	}
}

func TestDirectTransportConcurrent(t *testing.T) {
	s := startCountingServer(t, echoHandler, 0)
	c, dt := s.client(t)
	const workers, calls = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				want := fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				status, got, err := post(t, context.Background(), c, s.URL+"/mcp", want)
				if err != nil || status != 200 || got != want {
					t.Errorf("worker %d call %d: %d %q %v", w, i, status, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := s.conns.Load(); n > workers {
		t.Errorf("%d connections for %d concurrent workers", n, workers)
	}
	if n := dt.idleCount(); n < 1 || n > workers {
		t.Errorf("%d idle connections after the calls", n)
	}
	c.CloseIdleConnections()
	if n := dt.idleCount(); n != 0 {
		t.Errorf("%d idle connections after CloseIdleConnections", n)
	}
}

func TestDirectTransportIdleBound(t *testing.T) {
	var inside sync.WaitGroup
	inside.Add(upstreamMaxIdle + 10)
	s := startCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		inside.Done()
		inside.Wait() // every call holds its connection at once
		w.Write([]byte("ok"))
	}, 0)
	c, dt := s.client(t)
	var wg sync.WaitGroup
	for range upstreamMaxIdle + 10 {
		wg.Go(func() {
			if status, _, err := post(t, context.Background(), c, s.URL+"/mcp", "{}"); err != nil || status != 200 {
				t.Errorf("%d %v", status, err)
			}
		})
	}
	wg.Wait()
	if n := dt.idleCount(); n != upstreamMaxIdle {
		t.Errorf("%d idle connections kept, want the bound %d", n, upstreamMaxIdle)
	}
}

// TestUpstreamClientChoice: plain HTTP without a proxy goes direct;
// HTTPS, or a proxy from the environment, through http.Transport.
func TestUpstreamClientChoice(t *testing.T) {
	for _, tc := range []struct {
		url, proxy string
		direct     bool
	}{
		{"http://127.0.0.1:8080/mcp", "", true},
		{"http://mcp.internal/mcp", "", true},
		{"https://mcp.example.com/mcp", "", false},
		{"http://mcp.internal/mcp", "http://proxy.internal:3128", false},
	} {
		u, _ := url.Parse(tc.url)
		// (http.ProxyFromEnvironment reads the environment once per
		// process: the test gives the proxy function instead.)
		c := newUpstreamClientWith(u, func(*http.Request) (*url.URL, error) {
			if tc.proxy == "" {
				return nil, nil
			}
			return url.Parse(tc.proxy)
		})
		_, direct := c.Transport.(*directTransport)
		if direct != tc.direct {
			t.Errorf("%s with proxy %q: direct %v, want %v", tc.url, tc.proxy, direct, tc.direct)
		}
	}
	// A request for another host goes to the fallback.
	other := startCountingServer(t, echoHandler, 0)
	u, _ := url.Parse("http://127.0.0.1:1/mcp")
	c := newUpstreamClient(u)
	status, got, err := post(t, context.Background(), c, other.URL+"/x", "hi")
	if err != nil || status != 200 || got != "hi" {
		t.Fatalf("another host: %d %q %v", status, got, err)
	}
}

// TestDirectTransportCancelledNotSent: a call whose context is done before
// it is sent never reaches the server (a client that went away during the
// decision), even on a pooled connection.
func TestDirectTransportCancelledNotSent(t *testing.T) {
	var posts atomic.Int64
	s := startCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		echoHandler(w, r)
	}, 0)
	c, _ := s.client(t)
	if _, _, err := post(t, context.Background(), c, s.URL+"/mcp", "{}"); err != nil { // pool a connection
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 {
		if _, _, err := post(t, ctx, c, s.URL+"/mcp", "{}"); !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled call: %v", err)
		}
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("the server got %d requests, want only the first", n)
	}
}

// rawServer answers each connection with answer, whatever it is sent.
func rawServer(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				c.Read(buf) // the request (small, one read)
				answer(c)
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return "http://" + l.Addr().String() + "/mcp"
}

// TestDirectTransportBadHeads: limits on what the server's head may be.
func TestDirectTransportBadHeads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		want   error
	}{
		{"protocol switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n", errSwitched},
		{"endless interim", strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 10) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", errTooManyInterim},
		{"huge header", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", upstreamMaxHeaderBytes+10) + "\r\nContent-Length: 2\r\n\r\nok", errHeaderTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn) { io.WriteString(c, tc.answer) })
			u, _ := url.Parse(addr)
			c := newUpstreamClient(u)
			defer c.CloseIdleConnections()
			_, _, err := post(t, context.Background(), c, addr, "{}")
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if n := c.Transport.(*directTransport).idleCount(); n != 0 {
				t.Errorf("%d connections kept after a bad head", n)
			}
		})
	}
	// A head within the limits still works.
	addr := rawServer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 100<<10)+"\r\nContent-Length: 2\r\n\r\nok")
	})
	u, _ := url.Parse(addr)
	if status, got, err := post(t, context.Background(), newUpstreamClient(u), addr, "{}"); err != nil || status != 200 || got != "ok" {
		t.Fatalf("a large but allowed head: %d %q %v", status, got, err)
	}
}

// TestDirectTransportMostRecentFirst: the pool hands out the connection
// used last (the one least likely to have been closed by the server's idle
// timeout), so that a burst's extra connections age out.
func TestDirectTransportMostRecentFirst(t *testing.T) {
	s := startCountingServer(t, echoHandler, 0)
	_, dt := s.client(t)
	ctx := context.Background()
	a, _, err := dt.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := dt.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dt.release(a, func() bool { return true }, true)
	dt.release(b, func() bool { return true }, true)
	got, reused, err := dt.get(ctx)
	if err != nil || !reused || got != b {
		t.Fatalf("got %p (reused %v, %v), want the last released %p", got, reused, err, b)
	}
	got.conn.Close()
}

// TestAliveCheck: the liveness check tells an open idle connection from
// one the server closed.
func TestAliveCheck(t *testing.T) {
	s := startCountingServer(t, echoHandler, 0)
	_, dt := s.client(t)
	c, _, err := dt.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if !c.alive() || !c.alive() {
		t.Error("an open idle connection reads as closed")
	}
	if n := testing.AllocsPerRun(100, func() { c.alive() }); n != 0 {
		t.Errorf("the check allocates %v times a call (it runs on every reuse)", n)
	}
	// Closed again until it reads as closed: the server may not have
	// accepted the connection yet when it is first told to close them.
	deadline := time.Now().Add(2 * time.Second)
	for c.alive() && time.Now().Before(deadline) {
		s.CloseClientConnections()
		time.Sleep(5 * time.Millisecond)
	}
	if c.alive() {
		t.Error("a connection the server closed reads as open")
	}
}

// TestDirectTransportHonoursConnectionClose: a connection whose answer said
// "Connection: close" is not reused, even while the server keeps it open
// (this server answers one request per connection and then only reads).
func TestDirectTransportHonoursConnectionClose(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
	})
	u, _ := url.Parse(addr)
	c := newUpstreamClient(u)
	defer c.CloseIdleConnections()
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		status, got, err := post(t, ctx, c, addr, "{}")
		cancel()
		if err != nil || status != 200 || got != "ok" {
			t.Fatalf("call %d: %d %q %v (a closed-by-header connection reused?)", i, status, got, err)
		}
	}
}
