package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/audit"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
)

// fakeEval returns a fixed decision and records the inputs it saw.
type fakeEval struct {
	d      bundles.Decision
	err    error
	table  []bundles.Reservation
	inputs []bundles.Input
}

func (f *fakeEval) Eval(_ context.Context, in *bundles.Input) (bundles.Decision, engine.Info, error) {
	f.inputs = append(f.inputs, *in)
	return f.d, engine.Info{Digest: "sha256:feed"}, f.err
}

func (f *fakeEval) Manifest() (bundles.Manifest, bool) {
	m := bundles.Manifest{}
	m.Metadata.Compact = &bundles.Compact{Counters: f.table}
	return m, true
}

func (f *fakeEval) ActiveManifest() (*bundles.Manifest, string, bool) {
	m, ok := f.Manifest()
	return &m, "sha256:feed", ok
}

type recordLog struct {
	recs []audit.Record
	err  error
}

func (l *recordLog) Write(r *audit.Record) error {
	if l.err != nil {
		return l.err
	}
	l.recs = append(l.recs, *r)
	return nil
}

func limit(n int64) *int64 { return &n }

var quiet = slog.New(slog.NewJSONHandler(io.Discard, nil))

func TestPolicyDecide(t *testing.T) {
	rate := bundles.Reservation{Key: "t._rate_minute", Amount: 1, Limit: limit(1), Window: "minute", Rule: "p#t/rate", Message: "Rate limit of 1 per minute reached. Try again later."}
	tests := []struct {
		name      string
		eval      fakeEval
		auditErr  error
		allow     bool
		rule, msg string
		decision  string
	}{
		{name: "allow", eval: fakeEval{d: bundles.Decision{Decision: bundles.Allow}}, allow: true, decision: "allow"},
		{name: "deny", eval: fakeEval{d: bundles.Decision{Decision: bundles.Deny, Rule: "p#t/r", Message: "no"}}, rule: "p#t/r", msg: "no", decision: "deny"},
		{name: "approval", eval: fakeEval{d: bundles.Decision{Decision: bundles.RequireApproval, Rule: "p#t/a", Message: "ask ops",
			Approval: &bundles.Approval{Rule: "p#t/a", TimeoutSeconds: 60}}}, rule: "p#t/a", msg: "Approval required: ask ops", decision: "require_approval"},
		{name: "eval error", eval: fakeEval{err: engine.ErrNoBundle}, msg: "could not decide", decision: "deny"},
		{name: "audit error", eval: fakeEval{d: bundles.Decision{Decision: bundles.Allow}}, auditErr: errors.New("disk full"), msg: "audit log"},
		{name: "counter refused", eval: fakeEval{d: bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}}, rule: "p#t/rate", msg: "Rate limit of 1 per minute", decision: "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := counters.New()
			now := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC)
			store.Reserve([]bundles.Reservation{rate}, now) // t._rate_minute is at its limit
			log := &recordLog{err: tt.auditErr}
			ev := tt.eval
			ev.table = []bundles.Reservation{rate}
			p := NewPolicy(&ev, WithCounters(store), WithAudit(log), WithClock(func() time.Time { return now }), WithLogger(quiet))
			v := p.Decide(context.Background(), &bundles.Input{Tool: "t", Arguments: []byte(`{"x":1}`), Identity: bundles.Identity{Subject: "bob"}})
			if v.Allow != tt.allow || v.Rule != tt.rule || !strings.Contains(v.Message, tt.msg) || v.DecisionID == "" {
				t.Fatalf("got %+v, want allow %v rule %q message containing %q", v, tt.allow, tt.rule, tt.msg)
			}
			if got := ev.inputs[0].State; len(got) != 1 || got[0] != (bundles.CounterValue{Key: "t._rate_minute", Value: 1}) {
				t.Errorf("input state: got %v, want the counter table's current values", got)
			}
			if tt.auditErr != nil {
				return
			}
			if len(log.recs) != 1 {
				t.Fatalf("audit records: got %d, want 1", len(log.recs))
			}
			r := log.recs[0]
			if r.Decision != tt.decision || r.Rule != tt.rule || r.DecisionID != v.DecisionID || r.Subject != "bob" ||
				r.ArgsSHA256 != audit.ArgsSHA256([]byte(`{"x":1}`)) {
				t.Errorf("audit record: got %+v", r)
			}
			if tt.name != "eval error" && r.Bundle != "sha256:feed" {
				t.Errorf("audit bundle: got %q", r.Bundle)
			}
		})
	}
}

func TestPolicyCommitAndRollback(t *testing.T) {
	rate := bundles.Reservation{Key: "k", Amount: 1, Limit: limit(1), Window: "day", Rule: "r", Message: "m"}
	ev := &fakeEval{d: bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}}
	p := NewPolicy(ev, WithLogger(quiet))
	in := func() *bundles.Input { return &bundles.Input{Tool: "t"} }
	v := p.Decide(context.Background(), in())
	if !v.Allow || v.Done == nil {
		t.Fatalf("first call: got %+v", v)
	}
	v.Done(false) // upstream JSON-RPC error: rolled back
	v = p.Decide(context.Background(), in())
	if !v.Allow {
		t.Fatalf("after a rollback: got %+v, want allowed", v)
	}
	v.Done(true) // committed
	if v = p.Decide(context.Background(), in()); v.Allow {
		t.Fatal("after a commit at the limit: allowed, want refused")
	}
}

func TestPolicyHidden(t *testing.T) {
	for _, tt := range []struct {
		d    bundles.Decision
		err  error
		want bool
	}{
		{bundles.Decision{Decision: bundles.Deny, Rule: "p/a.yaml#hide"}, nil, true},
		{bundles.Decision{Decision: bundles.Deny, Rule: "p/a.yaml#default"}, nil, false},
		{bundles.Decision{Decision: bundles.Allow}, nil, false},
		{bundles.Decision{}, engine.ErrNoBundle, false},
	} {
		p := NewPolicy(&fakeEval{d: tt.d, err: tt.err}, WithLogger(quiet))
		if got := p.Hidden(context.Background(), &bundles.Input{Tool: "x"}); got != tt.want {
			t.Errorf("%+v, %v: got %v, want %v", tt.d, tt.err, got, tt.want)
		}
	}
}

func TestPolicyAuditFailOpen(t *testing.T) {
	rate := bundles.Reservation{Key: "k", Amount: 1, Limit: limit(3), Window: "day", Rule: "r", Message: "m"}
	tests := []struct {
		name      string
		failOpen  bool
		d         bundles.Decision
		wantAllow bool
		msg       string
	}{
		{"closed allow", false, bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}, false, "could not write its audit log"},
		{"closed deny", false, bundles.Decision{Decision: bundles.Deny, Rule: "p#t/r", Message: "no"}, false, "could not write its audit log"},
		{"open allow", true, bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}, true, ""},
		{"open deny", true, bundles.Decision{Decision: bundles.Deny, Rule: "p#t/r", Message: "no"}, false, "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
			store := counters.New()
			alog := &recordLog{err: errors.New("disk full")}
			p := NewPolicy(&fakeEval{d: tt.d}, WithCounters(store), WithAudit(alog), WithAuditFailOpen(tt.failOpen),
				WithClock(func() time.Time { return now }), WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
			decide := func() Verdict { return p.Decide(context.Background(), &bundles.Input{Tool: "t"}) }
			for i := range 3 { // three failures in one second: one log line
				v := decide()
				if v.Allow != tt.wantAllow || !strings.Contains(v.Message, tt.msg) {
					t.Fatalf("call %d: got %+v, want allow %v, message containing %q", i, v, tt.wantAllow, tt.msg)
				}
				if v.Allow && v.Done == nil {
					t.Fatal("an allowed call without Done: its counters cannot be rolled back")
				}
			}
			if got := p.AuditErrors(); got != 3 {
				t.Errorf("AuditErrors: got %d, want 3", got)
			}
			// Fail open keeps the reservations of the calls it let through;
			// fail closed releases them.
			wantCount := int64(0)
			if tt.failOpen && tt.d.Decision == bundles.Allow {
				wantCount = 3
			}
			if got := store.State(nil, []bundles.Reservation{rate}, now); len(got) != 1 || got[0].Value != wantCount {
				t.Errorf("counter: got %v, want %d", got, wantCount)
			}
			if n := strings.Count(logs.String(), "\n"); n != 1 {
				t.Fatalf("got %d log lines for 3 failures within the rate limit, want 1:\n%s", n, logs.String())
			}
			now = now.Add(auditErrorLogEvery)
			decide()
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) != 2 || !strings.Contains(lines[1], `"failures_not_logged":2`) || !strings.Contains(lines[1], `"failures_total":4`) ||
				!strings.Contains(lines[1], "disk full") {
				t.Fatalf("after the rate limit: got logs\n%s\nwant a second line counting the 2 failures not logged", logs.String())
			}
			if want := map[bool]string{false: "call denied", true: "fail open"}[tt.failOpen]; !strings.Contains(lines[0], want) {
				t.Errorf("log %s does not say %q", lines[0], want)
			}
		})
	}
}

func TestPolicyAuditArguments(t *testing.T) {
	args := json.RawMessage(`{"path": "/etc/hosts", "n": 1}`)
	for _, tt := range []struct {
		on   bool
		args json.RawMessage
		want json.RawMessage
	}{
		{false, args, nil},
		{true, args, args},
		{true, nil, json.RawMessage("null")},
	} {
		alog := &recordLog{}
		p := NewPolicy(&fakeEval{d: bundles.Decision{Decision: bundles.Allow}}, WithAudit(alog), WithAuditArguments(tt.on), WithLogger(quiet))
		p.Decide(context.Background(), &bundles.Input{Tool: "t", Arguments: tt.args})
		if len(alog.recs) != 1 || !bytes.Equal(alog.recs[0].Arguments, tt.want) || alog.recs[0].ArgsSHA256 != audit.ArgsSHA256(tt.args) {
			t.Errorf("arguments on %v, %s: got %+v, want arguments %s and their sha256", tt.on, tt.args, alog.recs, tt.want)
		}
	}

	// Through a real log: the arguments are on the line, and the chain
	// verifies.
	path := filepath.Join(t.TempDir(), "audit.log")
	alog, err := audit.Open(path, audit.WithMaxBytes(1500))
	if err != nil {
		t.Fatal(err)
	}
	p := NewPolicy(&fakeEval{d: bundles.Decision{Decision: bundles.Allow}}, WithAudit(alog), WithAuditArguments(true), WithLogger(quiet))
	for range 10 {
		if v := p.Decide(context.Background(), &bundles.Input{Tool: "t", Arguments: json.RawMessage("{\n\"q\": \"a\\nb\"\n}")}); !v.Allow {
			t.Fatalf("got %+v", v)
		}
	}
	alog.Close()
	files, err := audit.Files(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := audit.VerifyFiles(files); n != 10 || err != nil || len(files) < 2 {
		t.Fatalf("VerifyFiles(%v): %d lines, %v; want 10 lines over several files", files, n, err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"arguments":{"q":"a\nb"}`) {
		t.Fatalf("arguments not on the line: %s", data)
	}
}

// TestDecisionIDWhereSeen: without an audit log, an allowed call gets no
// decision id (nothing would show it), while a denial, a call refused by
// its counter and a decision with a shadow rule (logged) each get one; with
// an audit log every decision has one (TestPolicyDecide).
func TestDecisionIDWhereSeen(t *testing.T) {
	rate := bundles.Reservation{Key: "t._rate_minute", Amount: 1, Limit: limit(1), Window: "minute", Rule: "p#t/rate", Message: "Rate limit reached."}
	for _, tt := range []struct {
		name   string
		d      bundles.Decision
		allow  bool
		wantID bool
	}{
		{"allowed", bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}, true, false},
		{"denied", bundles.Decision{Decision: bundles.Deny, Rule: "p#t/r"}, false, true},
		{"refused by its counter", bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}, false, true},
		{"allowed, with a shadow rule", bundles.Decision{Decision: bundles.Allow, Shadow: []bundles.ShadowOutcome{{Would: "deny", Rule: "p#t/s"}}}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := counters.New()
			now := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC)
			if !tt.allow && tt.d.Decision == bundles.Allow {
				store.Reserve([]bundles.Reservation{rate}, now) // at its limit
			}
			ev := fakeEval{d: tt.d}
			p := NewPolicy(&ev, WithCounters(store), WithClock(func() time.Time { return now }), WithLogger(quiet))
			v := p.Decide(context.Background(), &bundles.Input{Tool: "t", Arguments: []byte(`{}`)})
			if v.Allow != tt.allow || (v.DecisionID != "") != tt.wantID {
				t.Fatalf("got allow %v, decision id %q; want allow %v, an id: %v", v.Allow, v.DecisionID, tt.allow, tt.wantID)
			}
			if tt.wantID && len(v.DecisionID) != 26 {
				t.Errorf("decision id %q", v.DecisionID)
			}
		})
	}
}

// TestDecisionIDs: ids are distinct, 26 base32 characters, and do not give
// away their order: consecutive ids share no prefix beyond chance, and
// about half of consecutive pairs sort the other way.
func TestDecisionIDs(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	backwards, shared := 0, 0
	const n = 10000
	for range n {
		id := newDecisionID()
		if len(id) != 26 || strings.Trim(id, base32Alphabet) != "" {
			t.Fatalf("id %q is not 26 base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		if id < prev {
			backwards++
		}
		if prev != "" && id[:4] == prev[:4] {
			shared++
		}
		seen[id], prev = true, id
	}
	if backwards < n/3 || backwards > 2*n/3 {
		t.Errorf("%d of %d consecutive ids sort backwards, want about half: the ids leak their sequence", backwards, n)
	}
	if shared > n/100 {
		t.Errorf("%d of %d consecutive ids share their first 4 characters", shared, n)
	}
}

const swapPolicyA = `version: "1"
tools:
  t:
    rules:
      - name: counted
        state: {counter: n, window: hour}
        conditions: [{path: state.t.n, op: lte, value: 10}]
`

// swapPolicyB: a looser limit, and a deny once the count reaches 40.
const swapPolicyB = `version: "1"
tools:
  t:
    rules:
      - name: busy
        action: deny
        when: [{path: state.t.n, op: gte, value: 40}]
      - name: counted
        state: {counter: n, window: hour}
        conditions: [{path: state.t.n, op: lte, value: 1000}]
`

// swapAfterManifest is an engine on which a swap lands right after each
// read of the active manifest, before the evaluation.
type swapAfterManifest struct {
	*engine.Engine
	swap func(n int)
	n    int
}

func (s *swapAfterManifest) ActiveManifest() (*bundles.Manifest, string, bool) {
	m, d, ok := s.Engine.ActiveManifest()
	s.n++
	s.swap(s.n)
	return m, d, ok
}

// TestDecideAcrossSwap: the counter table and its cuts come from the bundle
// that decides. With a count of 45, bundle A's representative (11) judged
// by bundle B would be allowed; B itself denies. (Found by review: the
// table was read from one snapshot and evaluated with another.) A bundle
// that changes on every attempt fails closed.
func TestDecideAcrossSwap(t *testing.T) {
	ctx := context.Background()
	build1 := func(src string) *bundles.Bundle {
		b, _, err := build.Build(ctx, []policy.Source{{Path: "policies/s.yaml", Data: []byte(src)}}, build.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bA, bB := build1(swapPolicyA), build1(swapPolicyB)
	now := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC)
	store := counters.New()
	store.Reserve([]bundles.Reservation{{Key: "t.n", Amount: 45, Window: "hour"}}, now)
	newPolicy := func(swap func(e *engine.Engine, n int)) *Policy {
		e := engine.New()
		t.Cleanup(e.Close)
		if err := e.Swap(ctx, "sha256:a", bA); err != nil {
			t.Fatal(err)
		}
		ev := &swapAfterManifest{Engine: e, swap: func(n int) { swap(e, n) }}
		return NewPolicy(ev, WithCounters(store), WithClock(func() time.Time { return now }),
			WithLogger(quiet))
	}

	once := newPolicy(func(e *engine.Engine, n int) {
		if n == 1 {
			e.Swap(ctx, "sha256:b", bB)
		}
	})
	in := &bundles.Input{Server: "s", Tool: "t"}
	v := once.Decide(ctx, in)
	if v.Allow || v.Bundle != "sha256:b" || !strings.HasSuffix(v.Rule, "#t/busy") {
		t.Errorf("one swap mid-decision: allow=%v bundle %s rule %q, want B's denial by busy", v.Allow, v.Bundle, v.Rule)
	}

	always := newPolicy(func(e *engine.Engine, n int) {
		if n%2 == 1 {
			e.Swap(ctx, "sha256:b", bB)
		} else {
			e.Swap(ctx, "sha256:a", bA)
		}
	})
	v = always.Decide(ctx, &bundles.Input{Server: "s", Tool: "t"})
	if v.Allow || !strings.Contains(v.Message, "changed while the call was decided") {
		t.Errorf("a bundle changing at every attempt: allow=%v message %q, want a fail-closed denial", v.Allow, v.Message)
	}
}

// TestShadowOutcomesRecorded: what shadow rules would have done is logged
// and audited as would_deny / would_require_approval (policy.md §5), while
// the call itself is decided as if they were not there.
func TestShadowOutcomesRecorded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	alog, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := bundles.Decision{Decision: bundles.Allow, Shadow: []bundles.ShadowOutcome{
		{Would: "deny", Rule: "p#t/new limit", Message: "too many"},
		{Would: "require_approval", Rule: "p#t/ask", Message: "ask first"},
	}}
	p := NewPolicy(&fakeEval{d: d}, WithAudit(alog), WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if v := p.Decide(context.Background(), &bundles.Input{Tool: "t", Arguments: []byte(`{}`)}); !v.Allow {
		t.Fatalf("a call only shadow rules stop: got %+v, want it allowed", v)
	}
	alog.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var line struct {
		Decision string
		Shadow   []struct{ Outcome, Rule, Message string }
	}
	if err := json.Unmarshal(data, &line); err != nil {
		t.Fatal(err)
	}
	if line.Decision != "allow" || len(line.Shadow) != 2 || line.Shadow[0].Outcome != "would_deny" || line.Shadow[0].Rule != "p#t/new limit" ||
		line.Shadow[1].Outcome != "would_require_approval" || line.Shadow[1].Message != "ask first" {
		t.Errorf("audit line %s: want decision allow and both shadow outcomes", data)
	}
	if n, err := audit.Verify(bytes.NewReader(data)); n != 1 || err != nil {
		t.Errorf("Verify: %d lines, %v", n, err)
	}
	if !strings.Contains(logs.String(), `"outcome":"would_deny"`) || !strings.Contains(logs.String(), `"outcome":"would_require_approval"`) {
		t.Errorf("log lines %s: want would_deny and would_require_approval", logs.String())
	}
}

// TestDecidedOutcome: WithDecided hears the final outcome of each
// tools/call decision (a counter's refusal is a deny, a policy that cannot
// decide an error), and nothing of tools/list's hide checks.
func TestDecidedOutcome(t *testing.T) {
	rate := bundles.Reservation{Key: "t._rate_minute", Amount: 1, Limit: limit(1), Window: "minute", Rule: "p#t/rate", Message: "Rate limit reached."}
	var got []string
	ev := &fakeEval{d: bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate}}}
	p := NewPolicy(ev, WithLogger(quiet), WithDecided(func(outcome string, took time.Duration) {
		if took <= 0 {
			t.Errorf("%s took %v", outcome, took)
		}
		got = append(got, outcome)
	}))
	in := &bundles.Input{Tool: "t", Arguments: []byte(`{}`)}
	p.Decide(context.Background(), in) // allowed, the counter at its limit now
	p.Decide(context.Background(), in) // refused by its counter
	ev.d = bundles.Decision{Decision: bundles.RequireApproval, Rule: "p#t/ask"}
	p.Decide(context.Background(), in)
	ev.err = errors.New("no bundle")
	p.Decide(context.Background(), in)
	p.Hidden(context.Background(), in)
	if want := []string{"allow", "deny", "require_approval", "error"}; !slices.Equal(got, want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
}

// TestInvalidCounterInTurn: a counter without an amount (its
// increment_from argument missing) denies the call with "Internal policy
// error" when reservation reaches it; an earlier counter's refusal comes
// first, as counters are reserved in turn (policy.md §3).
func TestInvalidCounterInTurn(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC)
	rate := bundles.Reservation{Key: "t._rate_minute", Amount: 1, Limit: limit(1), Window: "minute", Rule: "p#t/rate", Message: "Rate limit reached."}
	spend := bundles.Reservation{Key: "t.spent", Limit: limit(100), Window: "day", Rule: "p#t/spend", Message: "budget", Invalid: true}
	store := counters.New()
	ev := &fakeEval{d: bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{rate, spend}}}
	p := NewPolicy(ev, WithCounters(store), WithClock(func() time.Time { return now }), WithLogger(quiet))
	in := &bundles.Input{Tool: "t", Arguments: []byte(`{}`)}
	if v := p.Decide(context.Background(), in); v.Allow || v.Rule != "p#t/spend" || v.Message != "Internal policy error" {
		t.Fatalf("no amount: got %+v, want a deny by p#t/spend with Internal policy error", v)
	}
	if got := store.State(nil, []bundles.Reservation{rate}, now)[0].Value; got != 0 {
		t.Errorf("the rate counter holds %d after the refusal, want 0 (released)", got)
	}
	store.Reserve([]bundles.Reservation{rate}, now) // the rate counter at its limit
	if v := p.Decide(context.Background(), in); v.Allow || v.Rule != "p#t/rate" || v.Message != "Rate limit reached." {
		t.Fatalf("rate at its limit, then no amount: got %+v, want the rate's refusal first", v)
	}
}

// ReadsAnnotations follows the manifest in force: a manifest that does not
// say whether it reads annotations may read them; no bundle in force reads
// nothing.
func TestPolicyReadsAnnotations(t *testing.T) {
	yes, no := true, false
	for _, tt := range []struct {
		name  string
		reads *bundles.Reads
		ok    bool
		want  bool
	}{
		{"says it reads them", &bundles.Reads{Annotations: &yes}, true, true},
		{"says it reads none", &bundles.Reads{Annotations: &no}, true, false},
		{"says what it reads but not whether annotations (built before)", &bundles.Reads{}, true, true},
		{"does not say", nil, true, true},
		{"no bundle in force", nil, false, false},
	} {
		p := NewPolicy(&manifestEval{reads: tt.reads, ok: tt.ok})
		if got := p.ReadsAnnotations(); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// manifestEval is an Evaluator whose manifest in force says reads.
type manifestEval struct {
	fakeEval
	reads *bundles.Reads
	ok    bool
}

func (m *manifestEval) ActiveManifest() (*bundles.Manifest, string, bool) {
	if !m.ok {
		return nil, "", false
	}
	mf := &bundles.Manifest{}
	mf.Metadata.Reads = m.reads
	return mf, "sha256:feed", true
}
