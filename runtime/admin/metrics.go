package admin

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/engine"
)

// Decision outcomes counted by [Metrics.Decided]; OutcomeError is a call the
// engine could not decide (and that was therefore denied).
const (
	OutcomeAllow           = "allow"
	OutcomeDeny            = "deny"
	OutcomeRequireApproval = "require_approval"
	OutcomeError           = "error"
)

var outcomes = [...]string{OutcomeAllow, OutcomeDeny, OutcomeRequireApproval, OutcomeError}

// latencyBuckets are the upper bounds, in seconds, of the decision latency
// histogram: 10 µs to 1 s.
var latencyBuckets = [...]float64{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1}

// Metrics holds the proxy's counters, written in Prometheus text format by
// [Handler]'s /metrics. Each Metrics is its own registry: nothing is global.
// The zero value is ready to use, and it is safe for concurrent use.
type Metrics struct {
	decisions [len(outcomes)]atomic.Uint64
	buckets   [len(latencyBuckets)]atomic.Uint64 // non-cumulative counts
	latencyNS atomic.Uint64
	count     atomic.Uint64
	upstream  atomic.Uint64
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics { return &Metrics{} }

// Decided counts one decision with its outcome (one of the Outcome
// constants; anything else counts as OutcomeError) and how long it took.
func (m *Metrics) Decided(outcome string, took time.Duration) {
	i := len(outcomes) - 1
	for j, o := range outcomes {
		if o == outcome {
			i = j
			break
		}
	}
	m.decisions[i].Add(1)
	s := took.Seconds()
	for j, le := range latencyBuckets {
		if s <= le {
			m.buckets[j].Add(1)
			break
		}
	}
	m.latencyNS.Add(uint64(max(took, 0)))
	m.count.Add(1)
}

// UpstreamError counts one failure of the upstream MCP server (it exited,
// or a call to it failed).
func (m *Metrics) UpstreamError() { m.upstream.Add(1) }

// write writes every metric; digest is the active bundle ("" for none).
func (m *Metrics) write(w io.Writer, digest string, swaps, failures uint64) {
	var b strings.Builder
	b.WriteString("# HELP toolgate_decisions_total Decisions on tools/call by outcome (error: the policy could not decide; the call was denied).\n")
	b.WriteString("# TYPE toolgate_decisions_total counter\n")
	for i, o := range outcomes {
		fmt.Fprintf(&b, "toolgate_decisions_total{outcome=%q} %d\n", o, m.decisions[i].Load())
	}
	b.WriteString("# HELP toolgate_decision_duration_seconds Time the policy took to decide a tools/call.\n")
	b.WriteString("# TYPE toolgate_decision_duration_seconds histogram\n")
	var cum uint64
	for i, le := range latencyBuckets {
		cum += m.buckets[i].Load()
		fmt.Fprintf(&b, "toolgate_decision_duration_seconds_bucket{le=%q} %d\n", strconv.FormatFloat(le, 'g', -1, 64), cum)
	}
	n := m.count.Load()
	fmt.Fprintf(&b, "toolgate_decision_duration_seconds_bucket{le=\"+Inf\"} %d\n", n)
	fmt.Fprintf(&b, "toolgate_decision_duration_seconds_sum %s\n", strconv.FormatFloat(float64(m.latencyNS.Load())/1e9, 'g', -1, 64))
	fmt.Fprintf(&b, "toolgate_decision_duration_seconds_count %d\n", n)
	b.WriteString("# HELP toolgate_active_bundle The active policy bundle (1), by digest; absent when none is active.\n")
	b.WriteString("# TYPE toolgate_active_bundle gauge\n")
	if digest != "" {
		fmt.Fprintf(&b, "toolgate_active_bundle{digest=%q} 1\n", digest)
	}
	b.WriteString("# HELP toolgate_bundle_swaps_total Bundles loaded and swapped in.\n")
	b.WriteString("# TYPE toolgate_bundle_swaps_total counter\n")
	fmt.Fprintf(&b, "toolgate_bundle_swaps_total %d\n", swaps)
	b.WriteString("# HELP toolgate_bundle_swap_failures_total Bundle loads refused or failed (the active bundle stayed).\n")
	b.WriteString("# TYPE toolgate_bundle_swap_failures_total counter\n")
	fmt.Fprintf(&b, "toolgate_bundle_swap_failures_total %d\n", failures)
	b.WriteString("# HELP toolgate_upstream_errors_total Failures of the upstream MCP server.\n")
	b.WriteString("# TYPE toolgate_upstream_errors_total counter\n")
	fmt.Fprintf(&b, "toolgate_upstream_errors_total %d\n", m.upstream.Load())
	io.WriteString(w, b.String())
}

// Evaluator is what runtime/proxy's Policy decides with; *engine.Engine is
// one.
type Evaluator interface {
	Eval(ctx context.Context, in *bundles.Input) (bundles.Decision, engine.Info, error)
	Manifest() (bundles.Manifest, bool)
}

var _ Evaluator = (*engine.Engine)(nil)

// Instrument returns ev with every Eval counted in m, by outcome, with its
// latency. Pass the result to proxy.NewPolicy in place of ev. It counts what
// the policy decided; a call then refused by a counter limit is counted as
// the policy's allow.
func Instrument(ev Evaluator, m *Metrics) Evaluator { return instrumented{ev, m} }

type instrumented struct {
	Evaluator
	m *Metrics
}

func (e instrumented) Eval(ctx context.Context, in *bundles.Input) (bundles.Decision, engine.Info, error) {
	start := time.Now()
	d, info, err := e.Evaluator.Eval(ctx, in)
	outcome := string(d.Decision)
	if err != nil {
		outcome = OutcomeError
	}
	e.m.Decided(outcome, time.Since(start))
	return d, info, err
}
