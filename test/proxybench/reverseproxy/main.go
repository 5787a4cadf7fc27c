// Command reverseproxy is the bare HTTP hop of BenchmarkHTTPProcesses:
// httputil.ReverseProxy in front of one upstream, in its own process, as
// toolgate runs in its own. It prints the address it listens on.
//
//	reverseproxy UPSTREAM-URL
package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: reverseproxy UPSTREAM-URL")
		os.Exit(2)
	}
	up, err := url.Parse(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(up); r.Out.URL.Path = up.Path },
		// Keep-alive connections for every concurrent client, as
		// toolgate's default client keeps them.
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	fmt.Println(l.Addr().String())
	fmt.Fprintln(os.Stderr, http.Serve(l, rp))
	os.Exit(1)
}
