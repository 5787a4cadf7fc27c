package proxy

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/audit"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
)

// Evaluator decides calls with the active bundle; *engine.Engine is one.
type Evaluator interface {
	Eval(ctx context.Context, in *bundles.Input) (bundles.Decision, engine.Info, error)
	Manifest() (bundles.Manifest, bool)
	ActiveManifest() (*bundles.Manifest, string, bool)
}

// Counters reserves and reads counters; *counters.Store is one.
type Counters interface {
	Reserve(rs []bundles.Reservation, now time.Time) (release func(), refusal *bundles.Reservation)
	State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue
}

// AuditLog records decisions; *audit.Log is one.
type AuditLog interface {
	Write(r *audit.Record) error
}

var (
	_ Evaluator = (*engine.Engine)(nil)
	_ Counters  = (*counters.Store)(nil)
	_ AuditLog  = (*audit.Log)(nil)
)

// Policy turns the engine's decisions into verdicts for [Stdio]: it fills
// the input's counter state, evaluates, reserves counters, writes the audit
// record and hands back a Verdict whose Done commits or rolls back. It is
// safe for concurrent use.
type Policy struct {
	eval          Evaluator
	counters      Counters
	audit         AuditLog
	auditFailOpen bool
	auditArgs     bool
	now           func() time.Time
	log           *slog.Logger
	decided       func(outcome string, took time.Duration)

	auditErrors atomic.Uint64 // audit writes that failed, ever

	approvals    approvals.Store
	approvalMode ApprovalMode
	noApprovals  string // why approvals cannot be given, when approvals is nil (WithoutApprovals)

	auditLogMu      sync.Mutex // guards auditLogged, auditSuppressed
	auditLogged     time.Time  // when an audit error was last logged
	auditSuppressed uint64     // audit errors not logged since then
}

// auditErrorLogEvery is how often, at most, a failing audit log is logged.
const auditErrorLogEvery = 10 * time.Second

// PolicyOption configures [NewPolicy].
type PolicyOption func(*Policy)

// WithCounters sets the counter store; default a new in-memory
// counters.Store.
func WithCounters(c Counters) PolicyOption { return func(p *Policy) { p.counters = c } }

// WithAudit sets the audit log every decision is written to before its call
// is forwarded; a write error denies the call unless [WithAuditFailOpen]
// says otherwise. Default none.
func WithAudit(a AuditLog) PolicyOption { return func(p *Policy) { p.audit = a } }

// WithAuditFailOpen chooses what a failed audit write does to its call.
// Default false (fail closed): the call is denied, and the model is told the
// audit log could not be written. True (fail open): the call goes on as
// decided without its record. Either way the failure is counted
// ([Policy.AuditErrors]) and logged at most once every 10 seconds, with the
// number of failures not logged since the last time.
func WithAuditFailOpen(failOpen bool) PolicyOption {
	return func(p *Policy) { p.auditFailOpen = failOpen }
}

// WithAuditArguments chooses whether audit records carry the call's
// arguments as sent (the record's "arguments" field) beside their sha256.
// Default false: only the sha256 is logged, since arguments may hold
// secrets and personal data.
func WithAuditArguments(on bool) PolicyOption { return func(p *Policy) { p.auditArgs = on } }

// WithClock sets the clock for counter windows and audit times; default
// time.Now.
func WithClock(now func() time.Time) PolicyOption { return func(p *Policy) { p.now = now } }

// WithLogger sets where shadow outcomes and audit write failures are
// logged; default slog.Default().
func WithLogger(l *slog.Logger) PolicyOption { return func(p *Policy) { p.log = l } }

// WithDecided sets f to be told of every tools/call decision, as the audit
// log records them: its outcome ("allow", "deny", "require_approval", or
// "error" when the policy could not decide and the call was denied; a call
// its counters refuse is "deny") and how long deciding took (the policy,
// the counters and the audit record). A call held for approval is decided
// twice, as it is audited twice: require_approval when held, and again once
// a person approves it (a denial or an expiry is an approval event, not a
// decision). Listing tools is no decision. Default: none.
func WithDecided(f func(outcome string, took time.Duration)) PolicyOption {
	return func(p *Policy) { p.decided = f }
}

// NewPolicy returns a Policy deciding with ev.
func NewPolicy(ev Evaluator, opts ...PolicyOption) *Policy {
	p := &Policy{eval: ev, now: time.Now}
	for _, opt := range opts {
		opt(p)
	}
	if p.counters == nil {
		p.counters = counters.New()
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	return p
}

// Decide decides one tools/call (the [Stdio] Decide hook). An evaluation
// error denies the call (fail closed), and a counter refusal denies with the
// refused counter's rule and message. require_approval uses an approved
// request for exactly this call, or opens (joins) one and answers that the
// call waits (async mode) or returns a Verdict whose Hold waits (hold
// mode); with no approval store it denies.
func (p *Policy) Decide(ctx context.Context, in *bundles.Input) Verdict {
	return p.decide(ctx, in, p.approvalMode == ApprovalHold)
}

// Decision ids are 26 characters of Crockford's base32: a sequence number
// and 64 random bits drawn once per process, encrypted together as one AES
// block under a key drawn once per process, and the first 128 bits of it
// written out (26 characters hold 130). AES is a permutation, so the ids
// of one process never repeat; the ids of two processes collide with the
// odds of two random 128-bit values; and an id says nothing of how many
// decisions came before it (a client seeing its own ids learns nothing of
// other clients' traffic). One atomic add and one AES block per call
// instead of a crypto/rand draw. They name a decision in logs and answers;
// approval ids, which are secrets, stay fully random.
var (
	decisionIDBlock = newDecisionIDCipher()
	decisionIDSalt  = randomUint64()
	decisionIDSeq   atomic.Uint64
)

const base32Alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

func newDecisionIDCipher() cipher.Block {
	var key [16]byte
	_, _ = rand.Read(key[:]) // never fails on supported systems (crypto/rand)
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 16-byte key: cannot fail
	}
	return b
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// newDecisionID returns a new decision id.
func newDecisionID() string {
	var block [16]byte
	binary.BigEndian.PutUint64(block[:8], decisionIDSeq.Add(1))
	binary.BigEndian.PutUint64(block[8:], decisionIDSalt)
	decisionIDBlock.Encrypt(block[:], block[:])
	hi, lo := binary.BigEndian.Uint64(block[:8]), binary.BigEndian.Uint64(block[8:])
	var id [26]byte
	for i := 12; i >= 0; i-- { // the high 64 bits in the first 13 characters
		id[i] = base32Alphabet[hi&31]
		hi >>= 5
	}
	for i := 25; i >= 13; i-- { // the low 64 in the last 13
		id[i] = base32Alphabet[lo&31]
		lo >>= 5
	}
	return string(id[:])
}

// swapRetries is how many times a decision is taken again when the bundle
// changed between reading its counter table and evaluating.
const swapRetries = 3

// errSwapping: the bundle kept changing while a call was decided.
var errSwapping = errors.New("the policy bundle changed while the call was decided")

// evalWithState fills in's counter state from the active bundle's counter
// table, each value as its class's representative (which decides as the
// value does, so that calls between two limits look alike to the decision
// memo), and evaluates. The table and the evaluation must come from the
// same bundle — a swap in between could judge one bundle's representatives
// by another's conditions — so when the deciding bundle is not the one the
// table came from, it decides again; after swapRetries it fails (closed).
func (p *Policy) evalWithState(ctx context.Context, in *bundles.Input, now time.Time) (bundles.Decision, engine.Info, error) {
	for attempt := 1; ; attempt++ {
		m, digest, ok := p.eval.ActiveManifest()
		in.State = in.State[:0]
		if ok && m.Metadata.Compact != nil {
			in.State = p.counters.State(in.State, m.Metadata.Compact.Counters, now)
			m.Metadata.Compact.Canonicalize(in.State)
		}
		d, info, err := p.eval.Eval(ctx, in)
		if err != nil || info.Digest == digest {
			return d, info, err
		}
		if attempt == swapRetries {
			return bundles.Decision{}, info, errSwapping
		}
	}
}

// decide is Decide; hold says whether a call needing approval is held.
func (p *Policy) decide(ctx context.Context, in *bundles.Input, hold bool) Verdict {
	if p.decided == nil {
		v, _ := p.decideOnce(ctx, in, hold)
		return v
	}
	start := time.Now()
	v, outcome := p.decideOnce(ctx, in, hold)
	p.decided(outcome, time.Since(start))
	return v
}

// decideOnce is decide, returning the outcome it reports too.
func (p *Policy) decideOnce(ctx context.Context, in *bundles.Input, hold bool) (Verdict, string) {
	start := p.now()
	d, info, err := p.evalWithState(ctx, in, start)
	v := Verdict{Bundle: info.Digest}
	// The id names the decision where it is seen: a denial's _meta, the
	// audit record, the logs. An allowed call none of them records needs
	// none, and skips its cipher block and allocations.
	if err != nil || d.Decision != bundles.Allow || p.audit != nil || len(d.Shadow) > 0 {
		v.DecisionID = newDecisionID()
	}
	var release func()
	outcome := d.Decision
	switch {
	case err != nil:
		outcome = bundles.Deny
		v.Rule = ""
		v.Message = "toolgate denied this call because the policy could not decide it (" + err.Error() + ")."
	case d.Decision == bundles.Allow:
		var refusal *bundles.Reservation
		release, refusal = p.counters.Reserve(d.Counters, start)
		if refusal != nil {
			outcome = bundles.Deny
			v.Rule, v.Message = refusal.Rule, refusalMessage(refusal)
			if v.DecisionID == "" {
				v.DecisionID = newDecisionID()
			}
		} else {
			v.Allow = true
		}
	case d.Decision == bundles.RequireApproval:
		v.Rule = d.Rule
		if d.Approval != nil && d.Approval.Rule != "" {
			v.Rule = d.Approval.Rule
		}
		if p.approvals != nil {
			outcome, release = p.decideApproval(ctx, in, &d, start, &v, hold)
			break
		}
		// A counter that would refuse the call denies it before any
		// approval is asked for, as decideApproval does.
		undo, refusal := p.counters.Reserve(d.Counters, start)
		if refusal != nil {
			outcome = bundles.Deny
			v.Rule, v.Message = refusal.Rule, refusalMessage(refusal)
			break
		}
		if undo != nil {
			undo()
		}
		msg := d.Message
		if msg == "" {
			msg = "rule " + v.Rule + " needs a person's approval."
		}
		why := p.noApprovals
		if why == "" {
			why = "Approvals are not configured on this proxy, so the call is denied."
		}
		v.Message = approvalRequired(msg) + " " + why // audited as require_approval, the policy's decision
	default:
		outcome = bundles.Deny
		v.Rule, v.Message = d.Rule, d.Message
	}
	for _, s := range d.Shadow {
		p.log.Info("shadow decision", "decision_id", v.DecisionID, "outcome", "would_"+string(s.Would), "rule", s.Rule, "message", s.Message, "tool", in.Tool)
	}
	if p.audit != nil {
		rec := audit.Record{
			Time: start, DecisionID: v.DecisionID, Bundle: v.Bundle, Subject: in.Identity.Subject, Groups: in.Identity.Groups,
			Server: in.Server, Tool: in.Tool, Decision: string(outcome), Rule: v.Rule, Message: v.Message,
			ArgsSHA256: audit.ArgsSHA256(in.Arguments), LatencyUS: p.now().Sub(start).Microseconds(),
		}
		for _, s := range d.Shadow {
			rec.Shadow = append(rec.Shadow, audit.Shadow{Outcome: "would_" + string(s.Would), Rule: s.Rule, Message: s.Message})
		}
		if p.auditArgs {
			rec.Arguments = in.Arguments
			if rec.Arguments == nil {
				rec.Arguments = json.RawMessage("null") // logged as absent, not left out
			}
		}
		if err := p.audit.Write(&rec); err != nil {
			p.auditFailed(v.DecisionID, err)
			if !p.auditFailOpen {
				if release != nil {
					release()
				}
				return Verdict{DecisionID: v.DecisionID, Bundle: v.Bundle, Rule: v.Rule,
					Message: "toolgate denied this call because it could not write its audit log; tell the operator."}, reported(err, bundles.Deny)
			}
		}
	}
	if v.Allow && release != nil {
		v.Done = func(ok bool) {
			if !ok {
				release()
			}
		}
	}
	return v, reported(err, outcome)
}

// refusalMessage is what a call refused by counter r is told: r's message,
// or bundles.MsgNoAmount for a counter without an amount.
func refusalMessage(r *bundles.Reservation) string {
	if r.Invalid {
		return bundles.MsgNoAmount
	}
	return r.Message
}

// reported is the outcome WithDecided hears: "error" when the policy could
// not decide (err), else outcome.
func reported(err error, outcome bundles.Outcome) string {
	if err != nil {
		return "error"
	}
	return string(outcome)
}

// Refused writes the audit record of a request refused before any decision
// (no credential, a bad one, or one not granted the server): decision
// "unauthenticated", the reason in the message. A failed write is counted
// and logged like any other.
func (p *Policy) Refused(server, reason string) {
	if p.audit == nil {
		return
	}
	rec := audit.Record{Time: p.now(), DecisionID: newDecisionID(), Server: server, Decision: "unauthenticated", Message: reason}
	if err := p.audit.Write(&rec); err != nil {
		p.auditFailed(rec.DecisionID, err)
	}
}

// auditFailed counts a failed audit write and logs it, at most once every
// auditErrorLogEvery.
func (p *Policy) auditFailed(decisionID string, err error) {
	p.auditErrors.Add(1)
	now := p.now()
	p.auditLogMu.Lock()
	if !p.auditLogged.IsZero() && now.Sub(p.auditLogged) < auditErrorLogEvery {
		p.auditSuppressed++
		p.auditLogMu.Unlock()
		return
	}
	suppressed := p.auditSuppressed
	p.auditLogged, p.auditSuppressed = now, 0
	p.auditLogMu.Unlock()
	msg := "audit log write failed; call denied"
	if p.auditFailOpen {
		msg = "audit log write failed; the decision stands without its record (fail open)"
	}
	p.log.Error(msg, "decision_id", decisionID, "err", err, "failures_not_logged", suppressed, "failures_total", p.auditErrors.Load())
}

// AuditErrors returns how many audit writes have failed since the Policy
// was made, whether their calls were then denied or forwarded.
func (p *Policy) AuditErrors() uint64 { return p.auditErrors.Load() }

// ReadsAnnotations reports whether the bundle in force reads
// tool.annotations paths (the [Enforcer.ReadsAnnotations] hook); a manifest
// that does not say so (built before it was written) may read them. False
// while no bundle is in force: every call is denied then.
func (p *Policy) ReadsAnnotations() bool {
	m, _, ok := p.eval.ActiveManifest()
	if !ok || m == nil {
		return false
	}
	r := m.Metadata.Reads
	return r == nil || r.Annotations == nil || *r.Annotations
}

// Hidden reports whether the decision for in (a listed tool, empty
// arguments) comes from a hide rule (the [Stdio] Hidden hook). When the
// policy cannot decide, the tool stays listed: its calls are denied anyway.
func (p *Policy) Hidden(ctx context.Context, in *bundles.Input) bool {
	d, _, err := p.eval.Eval(ctx, in)
	return err == nil && d.Decision != bundles.Allow && strings.HasSuffix(d.Rule, "#hide")
}
