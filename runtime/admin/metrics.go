package admin

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Decision outcomes counted by [Metrics.Decided]; OutcomeError is a call the
// engine could not decide (and that was therefore denied).
const (
	OutcomeAllow           = "allow"
	OutcomeDeny            = "deny"
	OutcomeRequireApproval = "require_approval"
	OutcomeError           = "error"
)

// outcomes lists every outcome, OutcomeError last.
var outcomes = [...]string{OutcomeAllow, OutcomeDeny, OutcomeRequireApproval, OutcomeError}

// latencyBuckets are the upper bounds, in seconds, of the decision latency
// histogram: 10 µs to 1 s.
var latencyBuckets = []float64{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1}

// Metrics holds the proxy's Prometheus collectors (client_golang). Nothing
// is registered globally: [Handler] serves them from a registry of its own.
// Make one with [NewMetrics]; it is safe for concurrent use.
type Metrics struct {
	decisions *prometheus.CounterVec
	// byOutcome is decisions' counter of each outcome, resolved once: a
	// label lookup hashes and locks on every call.
	byOutcome [len(outcomes)]prometheus.Counter
	latency   prometheus.Histogram
	upstream  prometheus.Counter
	// listed and listFailed count the proxy's own listings of a server's
	// tools (toolgate_tool_listings_total by result).
	listings           *prometheus.CounterVec
	listed, listFailed prometheus.Counter
	// auditErrors reads the audit write failures so far; set by
	// [Metrics.CountAuditErrors], nil reads as 0.
	auditErrors atomic.Pointer[func() uint64]
	auditFunc   prometheus.CounterFunc
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_decisions_total",
			Help: "Decisions on tools/call by final outcome (a call its counters refuse is a deny; error: the policy could not decide, and the call was denied).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "toolgate_decision_duration_seconds",
			Help:    "Time taken to decide a tools/call: the policy, its counters and its audit record.",
			Buckets: latencyBuckets,
		}),
		upstream: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "toolgate_upstream_errors_total",
			Help: "Failures of the upstream MCP server.",
		}),
		listings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_tool_listings_total",
			Help: "The proxy's own listings of the MCP server's tools (the policy reads tool.annotations), by result: listed or failed.",
		}, []string{"result"}),
	}
	m.listed, m.listFailed = m.listings.WithLabelValues("listed"), m.listings.WithLabelValues("failed")
	m.auditFunc = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "toolgate_audit_errors_total",
		Help: "Audit log writes that failed (each call denied, unless the audit log is configured to fail open).",
	}, func() float64 {
		if f := m.auditErrors.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	for i, o := range outcomes {
		m.byOutcome[i] = m.decisions.WithLabelValues(o) // every outcome shows, at 0
	}
	return m
}

// CountAuditErrors exports f, the number of failed audit writes so far, as
// toolgate_audit_errors_total. It may be called after [Handler].
func (m *Metrics) CountAuditErrors(f func() uint64) { m.auditErrors.Store(&f) }

// Decided counts one decision with its outcome (one of the Outcome
// constants; anything else counts as OutcomeError) and how long it took.
func (m *Metrics) Decided(outcome string, took time.Duration) {
	i := len(outcomes) - 1 // OutcomeError, for anything unknown too
	for j, o := range outcomes[:i] {
		if outcome == o {
			i = j
			break
		}
	}
	m.byOutcome[i].Inc()
	m.latency.Observe(took.Seconds())
}

// UpstreamError counts one failure of the upstream MCP server (it exited,
// or a call to it failed).
func (m *Metrics) UpstreamError() { m.upstream.Inc() }

// Listed counts one listing of the server's tools by the proxy: ok, or
// failed.
func (m *Metrics) Listed(ok bool) {
	if ok {
		m.listed.Inc()
	} else {
		m.listFailed.Inc()
	}
}

// statusCollector exports what the bundle source and engine say at scrape
// time: the active digest, swaps and swap failures.
type statusCollector struct {
	status                    func() Status
	active, swaps, swapErrors *prometheus.Desc
}

func newStatusCollector(status func() Status) *statusCollector {
	return &statusCollector{
		status:     status,
		active:     prometheus.NewDesc("toolgate_active_bundle", "The active policy bundle (1), by digest; absent when none is active.", []string{"digest"}, nil),
		swaps:      prometheus.NewDesc("toolgate_bundle_swaps_total", "Bundles loaded and swapped in.", nil, nil),
		swapErrors: prometheus.NewDesc("toolgate_bundle_swap_failures_total", "Bundle loads refused or failed (the active bundle stayed).", nil, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.active
	ch <- c.swaps
	ch <- c.swapErrors
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	if s.Digest != "" {
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, 1, s.Digest)
	}
	ch <- prometheus.MustNewConstMetric(c.swaps, prometheus.CounterValue, float64(s.Swaps))
	ch <- prometheus.MustNewConstMetric(c.swapErrors, prometheus.CounterValue, float64(s.SwapFailures))
}

// registry gathers m and the status collector for one Handler.
func (m *Metrics) registry(status func() Status) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.decisions, m.latency, m.upstream, m.listings, m.auditFunc, newStatusCollector(status))
	return reg
}
