// Package admin is the proxy's operations listener, the runtime stage beside
// enforcement (architecture.md, "Proxy", Operations): /healthz, /readyz,
// /status and /metrics (Prometheus text format 0.0.4), served on loopback
// unless told otherwise.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"net"
	"net/http"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// Engine reports the active bundle; *engine.Engine is one.
type Engine interface {
	Active() (digest string, since time.Time)
	Manifest() (bundles.Manifest, bool)
}

// SwapStatus is what the bundle source last did (a source.Status, copied by
// the caller so that this package needs no source).
type SwapStatus struct {
	// LastError is the last failed load's error, "" when the last load
	// succeeded; LastErrorAt is when it failed.
	LastError   string
	LastErrorAt time.Time
	// LastSwap is when the last load succeeded.
	LastSwap time.Time
	// Swaps and Failures count loads that succeeded and failed.
	Swaps, Failures uint64
}

// Status is the JSON body of /status.
type Status struct {
	Digest          string    `json:"digest"`
	Since           time.Time `json:"since,omitzero"`
	Revision        string    `json:"revision"`
	Ready           bool      `json:"ready"`
	LastSwap        time.Time `json:"lastSwap,omitzero"`
	LastSwapError   string    `json:"lastSwapError"`
	LastSwapErrorAt time.Time `json:"lastSwapErrorAt,omitzero"`
	Swaps           uint64    `json:"swaps"`
	SwapFailures    uint64    `json:"swapFailures"`
}

// Handler returns the admin endpoints for eng:
//
//   - /healthz: 200 while the process serves;
//   - /readyz: 200 when a bundle is active, else 503 (every call is denied);
//   - /status: [Status] as JSON;
//   - /metrics: m's metrics and the active digest, for Prometheus.
//
// swaps, when not nil, reports the bundle source's last load; m may be nil
// (no decision metrics). The handler is safe for concurrent use.
func Handler(eng Engine, swaps func() SwapStatus, m *Metrics) http.Handler {
	if m == nil {
		m = NewMetrics()
	}
	status := func() Status {
		var s Status
		s.Digest, s.Since = eng.Active()
		s.Ready = s.Digest != ""
		if man, ok := eng.Manifest(); ok {
			s.Revision = man.Revision
		}
		if swaps != nil {
			sw := swaps()
			s.LastSwap, s.LastSwapError, s.LastSwapErrorAt = sw.LastSwap, sw.LastError, sw.LastErrorAt
			s.Swaps, s.SwapFailures = sw.Swaps, sw.Failures
		}
		return s
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if d, _ := eng.Active(); d == "" {
			http.Error(w, "not ready: no verified policy bundle is active; every tools/call is denied", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry(status), promhttp.HandlerOpts{}))
	return mux
}

// ErrRemote: the admin address is not on loopback and remote access was not
// allowed. Bind it to 127.0.0.1 or ::1, or allow remote access explicitly.
var ErrRemote = errors.New("admin address is not on loopback")

// Listen opens the admin listener on addr (host:port). A host that is not
// loopback (localhost, 127.0.0.0/8, ::1) — including an empty host, which
// means every interface — is refused with [ErrRemote] unless allowRemote.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w; want HOST:PORT such as 127.0.0.1:9091", addr, err)
	}
	if !allowRemote && !isLoopback(host) {
		return nil, fmt.Errorf("admin address %q: %w; use 127.0.0.1:PORT, or --admin-allow-remote to expose it", addr, ErrRemote)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	return l, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
