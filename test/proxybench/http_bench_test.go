package proxybench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/engine"
	"github.com/toolgate/toolgate/runtime/proxy"
)

// This file measures what the Streamable HTTP proxy (proxy.HTTP) adds to a
// tools/call round trip, in process: the clients, the proxies and the
// upstream are HTTP servers and clients on loopback in the benchmark's own
// process, sharing its cores. Paths: direct to the upstream;
// through httputil.ReverseProxy (the price of an HTTP hop alone); through
// toolgate with an allowed call (decided by the compiled testdata policy,
// a counter reserved in memory, forwarded, its answer read for the
// commit); and a call toolgate denies (answered without the upstream
// hop). The figure to compare is the latency each proxy adds over direct.
// Each client is a goroutine sending one call at a time over its own
// keep-alive connection; ns/op is wall time per round trip over all
// clients, p50-ns and p99-ns the round trips' own latencies, cpu-ns/op the
// process's CPU time per round trip (clients, proxy and upstream).

// httpUpstream answers every POST with the JSON result of a tools/call,
// carrying the request's id, as fast as net/http allows.
func httpUpstream(w http.ResponseWriter, r *http.Request) {
	var buf [512]byte
	n, _ := io.ReadFull(r.Body, buf[:])
	body := buf[:n]
	i := bytes.Index(body, []byte(`"id":`))
	if i < 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	j := bytes.IndexByte(body[i:], ',')
	if j < 0 {
		http.Error(w, "no id", http.StatusBadRequest)
		return
	}
	out := make([]byte, 0, 128)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, body[i+5:i+j]...)
	out = append(out, `,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}`...)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.Write(out)
}

// httpTransport is the transport of the clients and of ReverseProxy:
// keep-alive connections for every concurrent client, as toolgate's default
// client keeps them.
func httpTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
}

// httpPolicy compiles testdata/policies (as the stdio benchmark's
// toolgate does at start) into an engine.
func httpPolicy(b *testing.B) *proxy.Policy {
	ctx := context.Background()
	sources, err := policy.ReadSources([]string{"testdata/policies"})
	if err != nil {
		b.Fatal(err)
	}
	bundle, _, err := build.Build(ctx, sources, build.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, bundle); err != nil {
		b.Fatal(err)
	}
	eng := engine.New()
	b.Cleanup(eng.Close)
	if err := eng.Swap(ctx, bundles.Digest(buf.Bytes()), bundle); err != nil {
		b.Fatal(err)
	}
	return proxy.NewPolicy(eng, proxy.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
}

// httpClient is one benchmark client: it sends tools/call requests to one
// endpoint and reads their answers.
type httpClient struct {
	hc       *http.Client
	endpoint string
	tool     string
	next     int
	req      []byte
	resp     []byte
}

// roundTrip sends one tools/call and checks that the answer is for it.
func (c *httpClient) roundTrip() error {
	c.next++
	c.req = append(c.req[:0], `{"jsonrpc":"2.0","id":`...)
	c.req = strconv.AppendInt(c.req, int64(c.next), 10)
	c.req = append(c.req, `,"method":"tools/call","params":{"name":"`...)
	c.req = append(c.req, c.tool...)
	c.req = append(c.req, `","arguments":{"path":"/srv/a","text":"hello"}}}`...)
	req, err := http.NewRequest(http.MethodPost, c.endpoint, bytes.NewReader(c.req))
	if err != nil {
		return err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Accept"] = []string{"application/json, text/event-stream"}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	c.resp = c.resp[:0]
	for {
		if len(c.resp) == cap(c.resp) {
			c.resp = append(c.resp, 0)[:len(c.resp)]
		}
		n, err := resp.Body.Read(c.resp[len(c.resp):cap(c.resp)])
		c.resp = c.resp[:len(c.resp)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			resp.Body.Close()
			return err
		}
	}
	resp.Body.Close()
	id := c.req[len(`{"jsonrpc":"2.0","id":`):]
	id = id[:bytes.IndexByte(id, ',')+1]
	if resp.StatusCode != http.StatusOK || !bytes.Contains(c.resp, append([]byte(`"id":`), id...)) {
		return fmt.Errorf("answer %d %q is not for request %d", resp.StatusCode, c.resp, c.next)
	}
	return nil
}

// httpRun measures b.N round trips spread over clients goroutines, and
// reports their median and 99th-percentile latencies.
func httpRun(b *testing.B, clients int, endpoint, tool string) {
	hc := &http.Client{Transport: httpTransport()}
	defer hc.CloseIdleConnections()
	cs := make([]*httpClient, clients)
	for i := range cs {
		cs[i] = &httpClient{hc: hc, endpoint: endpoint, tool: tool, resp: make([]byte, 0, 512)}
	}
	// Warm up: connections open, policy instances and buffers in use.
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			for range 200 {
				if err := c.roundTrip(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}

	rts := make([]roundTripper, len(cs))
	for i, c := range cs {
		rts[i] = c
	}
	var cpu0 time.Duration
	measure(b, rts, func(after bool) {
		if !after {
			cpu0 = httpCPUTime()
			return
		}
		b.ReportMetric(float64((httpCPUTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
}

// httpCPUTime returns the CPU time the process has used, user and system:
// clients, proxy and upstream together. Per round trip it is what a path
// costs on a machine whose other load makes wall times noisy.
func httpCPUTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHTTPRoundTrip is the Streamable HTTP proxy's latency benchmark
// (see the comment at the top of this file).
func BenchmarkHTTPRoundTrip(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(httpUpstream))
	defer up.Close()
	upURL, err := url.Parse(up.URL + "/mcp")
	if err != nil {
		b.Fatal(err)
	}

	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(upURL) },
		Transport: httpTransport(),
	}
	rpSrv := httptest.NewServer(rp)
	defer rpSrv.Close()

	pol := httpPolicy(b)
	tg := &proxy.HTTP{ // with its default client, as toolgate runs it
		Enforcer: &proxy.Enforcer{Server: "bench", Decide: pol.Decide, Hidden: pol.Hidden},
		Upstream: upURL,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	tgSrv := httptest.NewServer(tg)
	defer tgSrv.Close()

	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			b.Run("path=direct", func(b *testing.B) { httpRun(b, clients, up.URL+"/mcp", "echo") })
			b.Run("path=reverseproxy", func(b *testing.B) { httpRun(b, clients, rpSrv.URL+"/mcp", "echo") })
			b.Run("path=toolgate", func(b *testing.B) { httpRun(b, clients, tgSrv.URL+"/mcp", "echo") })
			b.Run("path=denied", func(b *testing.B) { httpRun(b, clients, tgSrv.URL+"/mcp", "delete_everything") })
		})
	}
}
