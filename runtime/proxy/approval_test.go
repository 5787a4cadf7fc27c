package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
)

// approvalPolicy holds refunds of 100 or more for a payments lead, and
// counts refunds (5 a minute) so that an approved call also reserves.
const approvalPolicy = `version: "1"
default: allow
tools:
  refund:
    rules:
      - name: big refunds
        action: require_approval
        when:
          - {path: args.amount, op: gte, value: 100}
        approval_timeout: 10m
        approvers:
          groups: [leads]
        on_deny: "Refunds of 100 or more need a lead."
      - name: five a minute
        rate_limit: 5/minute
`

// approvalWorld is a real engine on a compiled bundle and a real on-disk
// approval store.
type approvalWorld struct {
	t     *testing.T
	eng   *engine.Engine
	store *approvals.Disk
	pol   *Policy
}

func newApprovalWorld(t *testing.T, mode ApprovalMode, src string) *approvalWorld {
	t.Helper()
	eng := engine.New()
	t.Cleanup(func() { eng.Close() })
	store, err := approvals.OpenDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	w := &approvalWorld{t: t, eng: eng, store: store}
	w.load(src)
	w.pol = NewPolicy(eng, WithApprovals(store, mode), WithLogger(quiet))
	return w
}

// load builds src and makes it the active bundle.
func (w *approvalWorld) load(src string) string {
	w.t.Helper()
	return swapInPolicy(w.t, w.eng, "pay.yaml", []byte(src))
}

// swapInPolicy builds the policy file src (named path) into a bundle and
// makes it eng's active bundle; it returns the bundle's digest.
func swapInPolicy(tb testing.TB, eng *engine.Engine, path string, src []byte) string {
	tb.Helper()
	b, _, err := build.Build(context.Background(), []policy.Source{{Path: path, Data: src}}, build.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		tb.Fatal(err)
	}
	digest := bundles.Digest(buf.Bytes())
	if err := eng.Swap(context.Background(), digest, b); err != nil {
		tb.Fatal(err)
	}
	return digest
}

func (w *approvalWorld) call(subject string, amount int) Verdict {
	in := &bundles.Input{Server: "pay", Tool: "refund", Identity: bundles.Identity{Subject: subject, Groups: []string{"eng"}},
		Arguments: json.RawMessage(`{"amount":` + itoa(amount) + `}`)}
	return w.pol.Decide(context.Background(), in)
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func (w *approvalWorld) decide(id, by string, groups []string, approve bool) error {
	_, err := w.store.Decide(context.Background(), id, approve, approvals.Identity{Subject: by, Groups: groups}, "checked")
	return err
}

func TestApprovalAsync(t *testing.T) {
	w := newApprovalWorld(t, ApprovalAsync, approvalPolicy)
	if v := w.call("maria", 50); !v.Allow {
		t.Fatalf("a small refund: %+v", v)
	}
	v := w.call("maria", 500)
	if v.Allow || v.Approval == nil || v.Approval.Rule != "pay.yaml#refund/big refunds" {
		t.Fatalf("a big refund: %+v, want it waiting for approval", v)
	}
	id := v.Approval.ID
	// The answer is a JSON-RPC error with the approval id.
	var resp struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				ApprovalID string `json:"approval_id"`
				ExpiresAt  string `json:"expires_at"`
				Rule       string `json:"rule"`
			} `json:"data"`
		} `json:"error"`
	}
	line := (&Enforcer{}).AppendDenial(nil, json.RawMessage(`7`), &v)
	if err := json.Unmarshal(line, &resp); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if resp.Error.Code != CodeApprovalRequired || resp.Error.Data.ApprovalID != id || resp.Error.Data.Rule != v.Approval.Rule {
		t.Fatalf("approval error: %s", line)
	}
	if exp, err := time.Parse(time.RFC3339, resp.Error.Data.ExpiresAt); err != nil || exp.Sub(time.Now()) < 9*time.Minute {
		t.Fatalf("expires_at %q: want about 10 minutes from now", resp.Error.Data.ExpiresAt)
	}

	// A retry while pending joins the same request.
	if v2 := w.call("maria", 500); v2.Approval == nil || v2.Approval.ID != id {
		t.Fatalf("retry while pending: %+v, want approval %s again", v2, id)
	}
	// The requester cannot approve; someone outside the approvers cannot.
	if err := w.decide(id, "maria", []string{"leads"}, true); !errors.Is(err, approvals.ErrSelfApproval) {
		t.Fatalf("self approval: %v", err)
	}
	if err := w.decide(id, "bob", []string{"eng"}, true); !errors.Is(err, approvals.ErrNotApprover) {
		t.Fatalf("approval outside approvers: %v", err)
	}
	if err := w.decide(id, "lee", []string{"leads"}, true); err != nil {
		t.Fatal(err)
	}
	// Different arguments do not use it.
	if v := w.call("maria", 501); v.Allow || v.Approval == nil || v.Approval.ID == id {
		t.Fatalf("other arguments: %+v, want a new request", v)
	}
	// The same call runs once, then needs approval again.
	if v := w.call("maria", 500); !v.Allow {
		t.Fatalf("approved retry: %+v", v)
	}
	if v := w.call("maria", 500); v.Allow || v.Approval == nil || v.Approval.ID == id {
		t.Fatalf("second retry: %+v, want the approval used up", v)
	}
}

func TestApprovalDeniedAndBundleSwap(t *testing.T) {
	w := newApprovalWorld(t, ApprovalAsync, approvalPolicy)
	v := w.call("maria", 300)
	if err := w.decide(v.Approval.ID, "lee", []string{"leads"}, false); err != nil {
		t.Fatal(err)
	}
	if v := w.call("maria", 300); v.Allow || v.Approval != nil || v.Message != "A person (lee) denied this call (approval "+w.lastID(t)+"): checked." {
		t.Fatalf("after a denial: %+v", v)
	}

	// Approved under one bundle, retried under another: refused (a new
	// request opens under the new digest).
	v = w.call("maria", 400)
	if err := w.decide(v.Approval.ID, "lee", []string{"leads"}, true); err != nil {
		t.Fatal(err)
	}
	w.load(approvalPolicy + "# a new revision\n")
	if v2 := w.call("maria", 400); v2.Allow || v2.Approval == nil || v2.Approval.ID == v.Approval.ID {
		t.Fatalf("after a bundle swap: %+v, want a new request", v2)
	}
}

// lastID is the newest denied request's id.
func (w *approvalWorld) lastID(t *testing.T) string {
	rs, err := w.store.List(context.Background(), approvals.Filter{Status: approvals.Denied, Limit: 1})
	if err != nil || len(rs) != 1 {
		t.Fatalf("List: %v %v", rs, err)
	}
	return rs[0].ID
}

// TestApprovalConcurrentRetries: of 16 concurrent retries of one approved
// call, exactly one runs.
func TestApprovalConcurrentRetries(t *testing.T) {
	w := newApprovalWorld(t, ApprovalAsync, approvalPolicy)
	v := w.call("maria", 200)
	if err := w.decide(v.Approval.ID, "lee", []string{"leads"}, true); err != nil {
		t.Fatal(err)
	}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v := w.call("maria", 200); v.Allow {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 1 {
		t.Fatalf("%d concurrent retries ran, want exactly 1", n)
	}
}

func TestApprovalHold(t *testing.T) {
	w := newApprovalWorld(t, ApprovalHold, approvalPolicy)
	in := &bundles.Input{Server: "pay", Tool: "refund", Identity: bundles.Identity{Subject: "maria"}, Arguments: json.RawMessage(`{"amount":900}`)}
	var progress []string
	var mu sync.Mutex
	ctx := WithProgress(context.Background(), func(msg string) { mu.Lock(); progress = append(progress, msg); mu.Unlock() })
	v := w.pol.Decide(ctx, in)
	if v.Allow || v.Hold == nil || v.Approval == nil {
		t.Fatalf("hold mode: %+v, want a Hold", v)
	}
	in.Arguments[2] = 'X' // the transport reuses its buffer: Hold must not depend on it
	go func() {
		time.Sleep(100 * time.Millisecond)
		w.decide(v.Approval.ID, "lee", []string{"leads"}, true)
	}()
	got := v.Hold(ctx)
	if !got.Allow || got.Hold != nil {
		t.Fatalf("held call after approval: %+v", got)
	}
	// Denied while held.
	v = w.call("maria", 901)
	go func() {
		time.Sleep(50 * time.Millisecond)
		w.decide(v.Approval.ID, "lee", []string{"leads"}, false)
	}()
	if got := v.Hold(context.Background()); got.Allow || got.Message == "" {
		t.Fatalf("held call after denial: %+v", got)
	}
	// Cancelled while held.
	v = w.call("maria", 902)
	cctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if got := v.Hold(cctx); got.Allow {
		t.Fatalf("held call cancelled: %+v", got)
	}
}

func TestApprovalWithoutStoreDenies(t *testing.T) {
	w := newApprovalWorld(t, ApprovalAsync, approvalPolicy)
	pol := NewPolicy(w.eng, WithLogger(quiet))
	v := pol.Decide(context.Background(), &bundles.Input{Server: "pay", Tool: "refund", Arguments: json.RawMessage(`{"amount":900}`)})
	if v.Allow || v.Approval != nil || v.Hold != nil || v.Message != "Approval required: Refunds of 100 or more need a lead. Approvals are not configured on this proxy, so the call is denied." {
		t.Fatalf("%+v", v)
	}
}

// TestApprovalUnavailable: without a way to approve (WithoutApprovals),
// a call needing approval is denied saying why — unless a counter refuses
// it first, which denies it as it would with approvals (deny beats
// approval) and spends nothing.
func TestApprovalUnavailable(t *testing.T) {
	w := newApprovalWorld(t, ApprovalAsync, approvalPolicy)
	ctrs := counters.New()
	pol := NewPolicy(w.eng, WithLogger(quiet), WithCounters(ctrs), WithoutApprovals("No one can approve it here."))
	decide := func(amount int) Verdict {
		return pol.Decide(context.Background(), &bundles.Input{Server: "pay", Tool: "refund", Arguments: json.RawMessage(fmt.Sprintf(`{"amount":%d}`, amount))})
	}
	if v := decide(900); v.Allow || v.Approval != nil || v.Hold != nil || v.Message != "Approval required: Refunds of 100 or more need a lead. No one can approve it here." {
		t.Fatalf("%+v", v)
	}
	for i := 0; i < 5; i++ { // five a minute: small refunds use them up
		if v := decide(1); !v.Allow {
			t.Fatalf("small refund %d: %+v", i, v)
		}
	}
	if v := decide(900); v.Allow || !strings.HasSuffix(v.Rule, "#refund/five a minute") || !strings.HasPrefix(v.Message, "Rate limit of 5 per minute") {
		t.Fatalf("a call needing approval past the rate limit: %+v", v)
	}
}

// TestApprovalRequired: the answer's first sentence says approval is
// required once, whether or not the rule's message says it already.
func TestApprovalRequired(t *testing.T) {
	for msg, want := range map[string]string{
		`Approval required by rule "big refunds"`: `Approval required by rule "big refunds".`,
		"Refunds of 100 or more need a lead.":     "Approval required: Refunds of 100 or more need a lead.",
		"ask a lead":                              "Approval required: ask a lead.",
		"Approval required: a lead must say yes!": "Approval required: a lead must say yes!",
	} {
		if got := approvalRequired(msg); got != want {
			t.Errorf("approvalRequired(%q) = %q, want %q", msg, got, want)
		}
	}
}
