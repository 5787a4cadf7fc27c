package proxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/audit"
)

// PendingApproval is a call waiting for a person's approval: the request's
// id, when it expires, and the rule that asked.
type PendingApproval struct {
	ID        string
	ExpiresAt time.Time
	Rule      string
}

// ApprovalMode says how a call that needs approval is answered.
type ApprovalMode string

const (
	// ApprovalAsync answers at once with a JSON-RPC error carrying the
	// approval id; once a person approves, the same call retried runs once.
	ApprovalAsync ApprovalMode = "async"
	// ApprovalHold keeps the call open until a person decides or the
	// request expires, then runs it or denies it.
	ApprovalHold ApprovalMode = "hold"
)

// WithApprovals sets the approval store and mode: require_approval decisions
// then open (or join) a request bound to the call and let the call through
// once it is approved. Without a store they are denied with a message that
// approvals are not configured.
func WithApprovals(s approvals.Store, mode ApprovalMode) PolicyOption {
	return func(p *Policy) { p.approvals, p.approvalMode = s, mode }
}

// WithoutApprovals says why calls needing approval cannot wait for one
// here (no one could give it): they are denied with a message ending in
// why, a sentence, instead of "approvals are not configured".
func WithoutApprovals(why string) PolicyOption {
	return func(p *Policy) { p.approvals, p.noApprovals = nil, why }
}

// holdProgressEvery is how often a held call reports that it still waits.
const holdProgressEvery = 10 * time.Second

// progressKey is the context key of the function a transport gives for
// progress notifications on the call being decided.
type progressKey struct{}

// WithProgress returns ctx carrying report, which sends a progress
// notification for the call being decided (the transport knows its
// progress token); a held call reports through it while it waits.
func WithProgress(ctx context.Context, report func(message string)) context.Context {
	return context.WithValue(ctx, progressKey{}, report)
}

func progressFrom(ctx context.Context) func(string) {
	f, _ := ctx.Value(progressKey{}).(func(string))
	return f
}

// decideApproval handles a require_approval decision when a store is set:
// an approved request for exactly this call is used (the call runs, its
// counters reserved); otherwise a request is opened or joined and the call
// is answered as waiting, or held in hold mode. It fills v and returns the
// outcome for the audit record and the counters' release.
func (p *Policy) decideApproval(ctx context.Context, in *bundles.Input, d *bundles.Decision, start time.Time, v *Verdict, hold bool) (bundles.Outcome, func()) {
	b := approvals.Binding{
		Identity:   approvals.Identity{Subject: in.Identity.Subject, Groups: in.Identity.Groups},
		Server:     in.Server,
		Tool:       in.Tool,
		ArgsSHA256: audit.ArgsSHA256(in.Arguments),
		Bundle:     v.Bundle,
	}
	release, refusal := p.counters.Reserve(d.Counters, start)
	if refusal != nil {
		v.Rule, v.Message = refusal.Rule, refusalMessage(refusal)
		return bundles.Deny, nil
	}
	req, used, err := p.approvals.Consume(ctx, b)
	if err != nil {
		release()
		p.log.Error("approval store unavailable; call denied", "decision_id", v.DecisionID, "err", err)
		v.Message = "toolgate denied this call because its approval store is unavailable; tell the operator."
		return bundles.Deny, nil
	}
	if used {
		v.Allow = true
		v.Message = fmt.Sprintf("approved by %s (%s)", req.DecidedBy, req.ID)
		return bundles.Allow, release
	}
	release()
	if req.Status == approvals.Denied && start.Before(req.ExpiresAt) {
		v.Message = deniedMessage(req)
		return bundles.Deny, nil
	}
	var who approvals.Approvers
	if m, ok := p.eval.Manifest(); ok {
		a := m.Metadata.Approvers[v.Rule]
		who = approvals.Approvers{Subjects: a.Subjects, Groups: a.Groups}
	}
	var timeout time.Duration
	if d.Approval != nil {
		timeout = time.Duration(d.Approval.TimeoutSeconds) * time.Second
	}
	req, _, err = p.approvals.Request(ctx, b, v.Rule, who, timeout)
	if err != nil {
		p.log.Error("approval store unavailable; call denied", "decision_id", v.DecisionID, "err", err)
		v.Message = "toolgate denied this call because its approval store is unavailable; tell the operator."
		return bundles.Deny, nil
	}
	msg := d.Message
	if msg == "" {
		msg = "rule " + v.Rule + " needs a person's approval."
	}
	v.Approval = &PendingApproval{ID: req.ID, ExpiresAt: req.ExpiresAt, Rule: v.Rule}
	if hold {
		v.Message = fmt.Sprintf("%s Waiting for a person to decide approval %s (until %s).", approvalRequired(msg), req.ID, req.ExpiresAt.Format(time.RFC3339))
		held := *in
		held.Arguments = append([]byte(nil), in.Arguments...)
		held.Annotations = append([]byte(nil), in.Annotations...)
		held.State = nil
		id, expires, report, recheck := req.ID, req.ExpiresAt, progressFrom(ctx), revalidateFrom(ctx)
		v.Hold = func(ctx context.Context) Verdict { return p.hold(ctx, &held, id, expires, report, recheck) }
	} else {
		v.Message = fmt.Sprintf("%s Approval %s waits for a person (until %s): once it is approved (toolgate approvals approve %s), retry this exact call.",
			approvalRequired(msg), req.ID, req.ExpiresAt.Format(time.RFC3339), req.ID)
	}
	return bundles.RequireApproval, nil
}

// hold waits for a person to decide request id, reporting progress through
// report (the reporter the call was decided with; nil for none), then
// decides the held call again: an approval lets it through once; a denial
// or the deadline denies it. recheck, when set, checks the caller's
// credential again before an approved call runs: a token revoked or
// expired while the call waited stops it (the approval stays unused).
func (p *Policy) hold(ctx context.Context, in *bundles.Input, id string, expires time.Time, report func(string), recheck func() error) Verdict {
	wctx, cancel := context.WithDeadline(ctx, expires)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	if report != nil {
		go func() {
			t := time.NewTicker(holdProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					report("waiting for a person to decide approval " + id)
				}
			}
		}()
	}
	req, err := p.approvals.Wait(wctx, id)
	switch {
	case err != nil && ctx.Err() != nil:
		return Verdict{DecisionID: newDecisionID(), Message: "the call was cancelled while waiting for approval " + id + "."}
	case err != nil:
		return Verdict{DecisionID: newDecisionID(), Message: "Approval " + id + " expired without a decision; the call was not run."}
	case req.Status == approvals.Denied:
		return Verdict{DecisionID: newDecisionID(), Rule: req.Rule, Message: deniedMessage(req)}
	case req.Status != approvals.Approved:
		return Verdict{DecisionID: newDecisionID(), Rule: req.Rule, Message: "Approval " + id + " " + string(req.Status) + "; the call was not run."}
	}
	if recheck != nil {
		if err := recheck(); err != nil {
			return Verdict{DecisionID: newDecisionID(), Rule: req.Rule,
				Message: "Approval " + id + " was given, but the caller's credential is no longer valid (" + err.Error() + "); the call was not run."}
		}
	}
	// Approved: decide the call again (the bundle may have changed, and
	// counters are reserved now); the approval is used there.
	return p.decide(ctx, in, false)
}

// deniedMessage tells the model a person denied its call.
func deniedMessage(r approvals.Request) string {
	msg := "A person (" + r.DecidedBy + ") denied this call (approval " + r.ID + ")"
	if r.Reason != "" {
		msg += ": " + r.Reason
	}
	return msg + "."
}

// ApprovalAuditor returns an approvals event hook that writes each event to
// the audit log as a record whose decision is "approval_<event>" (requested,
// approved, denied, expired, used), naming the request id, the rule, the
// requester and, in the message, who decided and why.
func ApprovalAuditor(log AuditLog, onError func(error)) func(approvals.Event) {
	return func(e approvals.Event) {
		r := e.Request
		msg := r.ID
		if r.DecidedBy != "" {
			msg += " decided by " + r.DecidedBy
			if r.Reason != "" {
				msg += ": " + r.Reason
			}
		}
		rec := audit.Record{
			Time: e.At, DecisionID: r.ID, Bundle: r.Bundle, Subject: r.Subject, Server: r.Server, Tool: r.Tool,
			Decision: "approval_" + string(e.Kind), Rule: r.Rule, Message: msg, ArgsSHA256: r.ArgsSHA256,
		}
		if err := log.Write(&rec); err != nil && onError != nil {
			onError(err)
		}
	}
}

// approvalRequired is the first sentence of the answer to a call that needs
// approval: the rule's message, saying that approval is required (the
// default message, `Approval required by rule "NAME"`, says it already),
// ending as a sentence.
func approvalRequired(msg string) string {
	if !strings.HasPrefix(msg, "Approval required") {
		msg = "Approval required: " + msg
	}
	if !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, "!") && !strings.HasSuffix(msg, "?") {
		msg += "."
	}
	return msg
}
