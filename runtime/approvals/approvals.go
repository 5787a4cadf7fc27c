// Package approvals is the runtime stage that holds a call for a person's
// decision (policy.md §5, action: require_approval): the approval queue, its
// stores, its admin HTTP API and the webhook that tells people a request is
// waiting (architecture.md, "Proxy").
//
// A [Request] is bound to exactly one call, its [Binding]: the caller's
// identity (subject and groups), the server, the tool, the sha256 of the
// call's canonical arguments (audit.ArgsSHA256) and the digest of the bundle
// whose decision asked for approval. Its life:
//
//	pending ──approve──▶ approved ──Consume──▶ used
//	   │                    │
//	   ├──deny──▶ denied    └──ExpiresAt──▶ expired
//	   └──ExpiresAt──▶ expired
//
// One deadline, ExpiresAt (the decision's timeout_seconds after the request
// was opened, [DefaultTimeout] when it gives none), bounds the whole life of
// a request: a pending request can no longer be decided after it, and an
// approved one can no longer be used. Expiry is applied lazily (every read
// reports a request past its deadline as expired, and Request, Consume and
// Decide move it to expired in the store) and by a periodic sweep, which is
// what emits the expired event of a request nobody touches again.
//
// An approval is single use: [Store.Consume] moves an approved request that
// matches a call's binding exactly to used, atomically, so of any number of
// concurrent retries of one approved call, across any number of proxy
// replicas sharing a store, exactly one runs. A retry of a call while its
// request is pending joins that request instead of opening another.
//
// Two stores implement [Store]: [Disk], embedded in a folder on disk (the
// default; requests survive a restart), and [Redis], shared by proxy
// replicas. [Handler] serves the admin API, [Client] talks to it, and
// [Webhook] posts signed notifications.
package approvals

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// DefaultTimeout is how long a request stays open when the decision gives no
// timeout (policy.md §5: approval_timeout defaults to 15m).
const DefaultTimeout = 15 * time.Minute

// Defaults for the store [Option]s.
const (
	// DefaultRetention is how long a request is kept after its deadline,
	// whatever its status, so that List and Get still show it.
	DefaultRetention = 24 * time.Hour
	// DefaultSweepEvery is how often a store's background sweep moves
	// requests past their deadline to expired.
	DefaultSweepEvery = 30 * time.Second
)

// Sentinel errors. Store methods wrap them with the request id, so test
// with errors.Is.
var (
	// ErrNotFound: no request has this id (it never existed, or it was
	// dropped after its retention).
	ErrNotFound = errors.New("no such approval request")
	// ErrNotPending: the request was already decided (or used, or expired
	// after being approved); only a pending request can be decided.
	ErrNotPending = errors.New("approval request is no longer pending")
	// ErrExpired: the request passed its deadline before it was decided.
	ErrExpired = errors.New("approval request has expired")
	// ErrSelfApproval: the decider is the person who made the call.
	ErrSelfApproval = errors.New("the requester cannot decide their own approval request")
	// ErrNotApprover: the request names its approvers and the decider is
	// not among them.
	ErrNotApprover = errors.New("not among this request's approvers")
	// ErrNoDecider: Decide was called without the decider's name.
	ErrNoDecider = errors.New("no decider named")
	// ErrInvalid: a binding or an id that cannot be stored.
	ErrInvalid = errors.New("invalid approval request")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("approval store is closed")
)

// Status is where a request is in its life.
type Status string

// The statuses a request can have.
const (
	Pending  Status = "pending"
	Approved Status = "approved"
	Denied   Status = "denied"
	Expired  Status = "expired"
	Used     Status = "used"
)

// Valid reports whether s is one of the five statuses.
func (s Status) Valid() bool {
	switch s {
	case Pending, Approved, Denied, Expired, Used:
		return true
	}
	return false
}

// open reports whether a request in status s still has a deadline ahead of
// it (pending or approved and not yet used).
func (s Status) open() bool { return s == Pending || s == Approved }

// Identity is a person or a caller: a subject and its groups.
type Identity struct {
	Subject string   `json:"subject"`
	Groups  []string `json:"groups,omitempty"`
}

// Binding is the one call a request is for. Two bindings match when every
// field is equal; groups match as sets (order and duplicates do not count).
type Binding struct {
	// Identity is who made the call. An empty subject is allowed (an
	// anonymous caller); such a request can be decided by anyone allowed.
	Identity
	// Server is the MCP server the call goes to.
	Server string `json:"server"`
	// Tool is the called tool's name. Required.
	Tool string `json:"tool"`
	// ArgsSHA256 is audit.ArgsSHA256 of the call's arguments: 64 lowercase
	// hex digits. Required.
	ArgsSHA256 string `json:"args_sha256"`
	// Bundle is the digest of the bundle whose decision asked for approval.
	// Required: an approval given under one policy is not used under
	// another.
	Bundle string `json:"bundle"`
}

// Approvers names who may decide a request. Empty (no subjects and no
// groups) means anyone holding an admin token. A decider qualifies when
// their subject is in Subjects or one of their groups is in Groups.
type Approvers struct {
	Subjects []string `json:"subjects,omitempty"`
	Groups   []string `json:"groups,omitempty"`
}

// Empty reports whether a has no subjects and no groups.
func (a Approvers) Empty() bool { return len(a.Subjects) == 0 && len(a.Groups) == 0 }

// allows reports whether who may decide under a.
func (a Approvers) allows(who Identity) bool {
	if a.Empty() {
		return true
	}
	if slices.Contains(a.Subjects, who.Subject) {
		return true
	}
	for _, g := range who.Groups {
		if slices.Contains(a.Groups, g) {
			return true
		}
	}
	return false
}

// Request is one approval request, as a store and the admin API report it.
// Times are UTC with millisecond precision.
type Request struct {
	// ID is random (128 bits from crypto/rand) and unguessable.
	ID string `json:"id"`
	Binding
	// Rule is the rule that asked for approval.
	Rule      string    `json:"rule"`
	Approvers Approvers `json:"approvers"`
	Status    Status    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// DecidedBy, DecidedAt and Reason are set when a person approved or
	// denied the request (they stay set when an approved request is then
	// used or expires).
	DecidedBy string    `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	// UsedAt is when the approved call was let through.
	UsedAt time.Time `json:"used_at,omitzero"`
}

// effective returns r as seen at now: an open request past its deadline
// reads as expired.
func (r Request) effective(now time.Time) Request {
	if r.Status.open() && !now.Before(r.ExpiresAt) {
		r.Status = Expired
	}
	return r
}

// EventKind names an event.
type EventKind string

// The events a store emits, one per transition.
const (
	EventRequested EventKind = "requested"
	EventApproved  EventKind = "approved"
	EventDenied    EventKind = "denied"
	EventExpired   EventKind = "expired"
	EventUsed      EventKind = "used"
)

// Event is one transition of a request; Request is its state afterwards.
type Event struct {
	Kind    EventKind `json:"event"`
	At      time.Time `json:"at"`
	Request Request   `json:"request"`
}

// Filter selects requests for List.
type Filter struct {
	// Status keeps only requests in this status (as of now: a pending
	// request past its deadline counts as expired); "" keeps all.
	Status Status
	// Limit keeps at most this many, newest first (requests opened in the
	// same millisecond in id order); 0 keeps all.
	Limit int
}

// Store keeps approval requests. Implementations are safe for concurrent
// use; whoever opens one must Close it.
type Store interface {
	// Request opens a request for the call b, asked by rule, decidable by
	// approvers, open for timeout (DefaultTimeout when timeout <= 0). When
	// a request for the same binding is still open (pending, or approved
	// and not used), it is returned instead, with created false: a retry
	// joins the request already waiting.
	Request(ctx context.Context, b Binding, rule string, approvers Approvers, timeout time.Duration) (r Request, created bool, err error)
	// Consume uses the approval for the call b: when the latest request for
	// exactly this binding is approved and before its deadline, it is moved
	// to used, atomically, and returned with true; then, and only then, the
	// call may run. Otherwise it returns that latest request (pending,
	// denied, used, expired) with false, or a zero Request with false when
	// there is none. An error means the store could not answer: deny the
	// call.
	Consume(ctx context.Context, b Binding) (Request, bool, error)
	// Decide approves or denies the pending request id on behalf of by,
	// recording reason. It fails with ErrNoDecider when by has no subject,
	// ErrSelfApproval when by is the requester, ErrNotApprover when the
	// request names approvers and by is not one, ErrExpired past the
	// deadline, ErrNotPending when already decided, ErrNotFound.
	Decide(ctx context.Context, id string, approve bool, by Identity, reason string) (Request, error)
	// Get returns request id, or ErrNotFound.
	Get(ctx context.Context, id string) (Request, error)
	// List returns the requests f selects, newest first.
	List(ctx context.Context, f Filter) ([]Request, error)
	// Wait blocks until request id is no longer pending (approved, denied
	// or expired) and returns it, or returns ctx's error.
	Wait(ctx context.Context, id string) (Request, error)
	// Sweep moves every open request past its deadline to expired, emitting
	// its event, and returns how many it moved. Stores also run it in the
	// background.
	Sweep(ctx context.Context) (int, error)
	// Close stops the background sweep and releases the store.
	Close() error
}

// Option configures [OpenDisk] and [OpenRedis].
type Option func(*options)

type options struct {
	now        func() time.Time
	onEvent    func(Event)
	retention  time.Duration
	sweepEvery time.Duration
	compactAt  int64
	pollEvery  time.Duration
	log        *slog.Logger
}

func buildOptions(opts []Option) options {
	o := options{
		now:        time.Now,
		retention:  DefaultRetention,
		sweepEvery: DefaultSweepEvery,
		compactAt:  DefaultCompactAt,
		pollEvery:  DefaultPollEvery,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	return o
}

// WithClock sets the clock for creation times, deadlines and decisions;
// default time.Now. Replicas sharing a Redis store each use their own clock,
// so keep them in sync (NTP).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithEvents sets a function called once for each transition (requested,
// approved, denied, expired, used), after the transition is stored, in the
// goroutine that made it (the background sweep for most expiries), without
// holding the lock that guards the requests. It must be safe for concurrent
// use and should return quickly: it delays the call that caused the
// transition (and, for a Disk store, the report of the next one). It may
// read the store (Get, List) but must not change it (Request, Consume,
// Decide, Sweep): that deadlocks a Disk store. A Disk store reports events
// in the order of their transitions. With a shared Redis store, the replica
// that made a transition is the one that reports it, so two transitions of
// one request made at nearly the same time on different replicas (an
// approval and the use it allows) may be reported out of order: Event.At
// and the request's status tell. Default none.
func WithEvents(f func(Event)) Option { return func(o *options) { o.onEvent = f } }

// WithRetention sets how long a request is kept after its deadline;
// default DefaultRetention.
func WithRetention(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.retention = d
		}
	}
}

// WithSweepEvery sets how often the background sweep runs; default
// DefaultSweepEvery. A negative value turns the background sweep off (call
// Sweep yourself).
func WithSweepEvery(d time.Duration) Option {
	return func(o *options) {
		if d != 0 {
			o.sweepEvery = d
		}
	}
}

// WithLogger sets where the store logs what it cannot return (a failed
// background sweep, a failed compaction); default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

func (o *options) emit(evs []Event) {
	if o.onEvent == nil {
		return
	}
	for _, e := range evs {
		o.onEvent(e)
	}
}

// clock returns now in UTC, truncated to the millisecond so that both stores
// report the same times.
func (o *options) clock() time.Time { return o.now().UTC().Truncate(time.Millisecond) }

// newID returns a fresh request id: "ap_" and 26 base32 characters (128
// random bits).
func newID() string { return "ap_" + rand.Text() }

// validID reports whether id could be a request id: it keeps ids that come
// from URLs out of store keys and file names.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// normalize returns b with its groups sorted and deduplicated (a copy), or
// an error naming every problem.
func (b Binding) normalize() (Binding, error) {
	var errs []error
	if b.Tool == "" {
		errs = append(errs, errors.New("no tool"))
	}
	if len(b.ArgsSHA256) != 64 || strings.Trim(b.ArgsSHA256, "0123456789abcdef") != "" {
		errs = append(errs, fmt.Errorf("arguments hash %q is not 64 lowercase hex digits (use audit.ArgsSHA256)", b.ArgsSHA256))
	}
	if b.Bundle == "" {
		errs = append(errs, errors.New("no bundle digest"))
	}
	if len(errs) > 0 {
		return b, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	b.Groups = sortedSet(b.Groups)
	return b, nil
}

func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// key returns the hex sha256 naming b's fields, each length-prefixed, so
// that two bindings have the same key exactly when they match. b must be
// normalized.
func (b Binding) key() string {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("toolgate approval binding v1")
	put(b.Subject)
	binary.BigEndian.PutUint64(n[:], uint64(len(b.Groups)))
	h.Write(n[:])
	for _, g := range b.Groups {
		put(g)
	}
	put(b.Server)
	put(b.Tool)
	put(b.ArgsSHA256)
	put(b.Bundle)
	return hex.EncodeToString(h.Sum(nil))
}

// mayDecide checks the rules that do not depend on the request's status.
func mayDecide(r *Request, by Identity) error {
	switch {
	case by.Subject == "":
		return fmt.Errorf("deciding %s: %w; say who decides", r.ID, ErrNoDecider)
	case by.Subject == r.Subject:
		return fmt.Errorf("deciding %s as %q: %w; ask another approver", r.ID, by.Subject, ErrSelfApproval)
	case !r.Approvers.allows(by):
		return fmt.Errorf("deciding %s as %q: %w (%s)", r.ID, by.Subject, ErrNotApprover, describeApprovers(r.Approvers))
	}
	return nil
}

func describeApprovers(a Approvers) string {
	var parts []string
	if len(a.Subjects) > 0 {
		parts = append(parts, "subjects "+strings.Join(a.Subjects, ", "))
	}
	if len(a.Groups) > 0 {
		parts = append(parts, "groups "+strings.Join(a.Groups, ", "))
	}
	if len(parts) == 0 {
		return "anyone with an admin token"
	}
	return strings.Join(parts, "; ")
}

// statusError is the error for deciding a request whose (effective) status
// is not pending.
func statusError(r *Request) error {
	if r.Status == Expired {
		return fmt.Errorf("deciding %s: %w (at %s)", r.ID, ErrExpired, r.ExpiresAt.Format(time.RFC3339))
	}
	return fmt.Errorf("deciding %s: %w (it is %s)", r.ID, ErrNotPending, r.Status)
}

// timeoutOrDefault returns timeout, or DefaultTimeout when it is not
// positive.
func timeoutOrDefault(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return DefaultTimeout
	}
	return timeout
}

func eventFor(kind EventKind, r Request, at time.Time) Event {
	return Event{Kind: kind, At: at, Request: r}
}

// runSweeper calls sweep every o.sweepEvery until stop is closed, logging
// its errors; it closes done when it returns.
func runSweeper(o *options, sweep func(context.Context) (int, error), stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if o.sweepEvery < 0 {
		<-stop
		return
	}
	t := time.NewTicker(o.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := sweep(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
				o.log.Error("approval store sweep failed; expired requests are still refused, their events come later", "err", err)
			}
		}
	}
}
