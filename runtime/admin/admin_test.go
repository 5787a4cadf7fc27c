package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/toolgate/toolgate/bundles"
)

type fakeEngine struct {
	digest string
	since  time.Time
	rev    string
}

func (f *fakeEngine) Active() (string, time.Time) { return f.digest, f.since }
func (f *fakeEngine) Manifest() (bundles.Manifest, bool) {
	return bundles.Manifest{Revision: f.rev}, f.digest != ""
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestHandler(t *testing.T) {
	eng := &fakeEngine{}
	failedAt := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	swaps := SwapStatus{LastError: "refusing x: no signature", LastErrorAt: failedAt, Swaps: 1, Failures: 2}
	m := NewMetrics()
	h := Handler(eng, func() SwapStatus { return swaps }, m)

	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with no bundle: got %d, want 503", code)
	}

	eng.digest, eng.since, eng.rev = "sha256:aaa", failedAt.Add(-time.Hour), "abc123"
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with a bundle: got %d, want 200", code)
	}
	code, body := get(t, h, "/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
		t.Fatalf("/status: %d %v\n%s", code, err, body)
	}
	want := Status{Digest: "sha256:aaa", Since: eng.since, Revision: "abc123", Ready: true,
		LastSwapError: swaps.LastError, LastSwapErrorAt: failedAt, Swaps: 1, SwapFailures: 2}
	if st != want {
		t.Fatalf("/status: got %+v, want %+v", st, want)
	}

	for _, outcome := range []string{OutcomeAllow, OutcomeAllow, OutcomeDeny, OutcomeError} {
		m.Decided(outcome, 3*time.Microsecond)
	}
	m.UpstreamError()
	m.Listed(true)
	m.Listed(true)
	m.Listed(false)
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, "toolgate_audit_errors_total 0\n") {
		t.Errorf("/metrics before CountAuditErrors lacks toolgate_audit_errors_total 0")
	}
	m.CountAuditErrors(func() uint64 { return 3 })
	_, body = get(t, h, "/metrics")
	for _, line := range []string{
		`toolgate_decisions_total{outcome="allow"} 2`,
		`toolgate_decisions_total{outcome="deny"} 1`,
		`toolgate_decisions_total{outcome="require_approval"} 0`,
		`toolgate_decisions_total{outcome="error"} 1`,
		`toolgate_decision_duration_seconds_bucket{le="+Inf"} 4`,
		`toolgate_decision_duration_seconds_count 4`,
		`toolgate_active_bundle{digest="sha256:aaa"} 1`,
		`toolgate_bundle_swaps_total 1`,
		`toolgate_bundle_swap_failures_total 2`,
		`toolgate_upstream_errors_total 1`,
		`toolgate_tool_listings_total{result="listed"} 2`,
		`toolgate_tool_listings_total{result="failed"} 1`,
		`toolgate_audit_errors_total 3`,
		`# TYPE toolgate_decision_duration_seconds histogram`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", line, body)
		}
	}
}

// TestDecidedOutcomes: each outcome lands on its own counter, and an
// outcome the metrics do not know counts as an error.
func TestDecidedOutcomes(t *testing.T) {
	m := NewMetrics()
	for _, o := range []string{OutcomeAllow, OutcomeDeny, OutcomeDeny, OutcomeRequireApproval, OutcomeRequireApproval, OutcomeRequireApproval, OutcomeError, "maybe", ""} {
		m.Decided(o, time.Microsecond)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.registry(func() Status { return Status{} }), promhttp.HandlerOpts{}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range []string{
		`toolgate_decisions_total{outcome="allow"} 1`,
		`toolgate_decisions_total{outcome="deny"} 2`,
		`toolgate_decisions_total{outcome="require_approval"} 3`,
		`toolgate_decisions_total{outcome="error"} 3`,
	} {
		if !strings.Contains(rec.Body.String(), line+"\n") {
			t.Errorf("lacks %q:\n%s", line, rec.Body.String())
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	m := NewMetrics()
	m.Decided(OutcomeAllow, 20*time.Microsecond)
	m.Decided(OutcomeAllow, 2*time.Second)
	var b strings.Builder
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.registry(func() Status { return Status{} }), promhttp.HandlerOpts{}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b.WriteString(rec.Body.String())
	for _, tt := range []struct{ line string }{
		{`toolgate_decision_duration_seconds_bucket{le="1e-05"} 0`},
		{`toolgate_decision_duration_seconds_bucket{le="2.5e-05"} 1`},
		{`toolgate_decision_duration_seconds_bucket{le="1"} 1`},
		{`toolgate_decision_duration_seconds_bucket{le="+Inf"} 2`},
		{`toolgate_decision_duration_seconds_sum 2.00002`},
	} {
		if !strings.Contains(b.String(), tt.line+"\n") {
			t.Errorf("lacks %q:\n%s", tt.line, b.String())
		}
	}
	if strings.Contains(b.String(), "toolgate_active_bundle{") {
		t.Errorf("an active_bundle sample with no bundle active")
	}
}

func TestListen(t *testing.T) {
	for _, tt := range []struct {
		addr   string
		remote bool
		want   error // nil: listens
	}{
		{"127.0.0.1:0", false, nil},
		{"localhost:0", false, nil},
		{"[::1]:0", false, nil},
		{":0", false, ErrRemote},
		{"0.0.0.0:0", false, ErrRemote},
		{"0.0.0.0:0", true, nil},
	} {
		l, err := Listen(tt.addr, tt.remote)
		if err != nil && strings.Contains(err.Error(), "cannot assign requested address") {
			continue // no IPv6 loopback here
		}
		if got := err; (tt.want == nil) != (got == nil) || (tt.want != nil && !errors.Is(got, tt.want)) {
			t.Errorf("Listen(%q, %v): got %v, want %v", tt.addr, tt.remote, got, tt.want)
		}
		if l != nil {
			l.Close()
		}
	}
	if _, err := Listen("nonsense", false); err == nil {
		t.Error("Listen(nonsense): no error")
	}
}
