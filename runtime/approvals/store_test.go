package approvals_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/test/redistest"
)

var (
	bob   = approvals.Identity{Subject: "bob", Groups: []string{"eng"}}
	alice = approvals.Identity{Subject: "alice", Groups: []string{"eng"}}
)

func mustRequest(t *testing.T, s approvals.Store, b approvals.Binding, approvers approvals.Approvers, timeout time.Duration) approvals.Request {
	t.Helper()
	r, created, err := s.Request(context.Background(), b, rule, approvers, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatalf("Request joined %s (%s); want a new request", r.ID, r.Status)
	}
	return r
}

func consume(t *testing.T, s approvals.Store, b approvals.Binding) (approvals.Request, bool) {
	t.Helper()
	r, ok, err := s.Consume(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return r, ok
}

func TestApprovalStores(t *testing.T) {
	ctx := context.Background()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("approve then consume once", func(t *testing.T) {
				k := open(t)
				b := call("alice", "delete_repo", `{"repo":"x"}`)
				r := mustRequest(t, k.store, b, approvals.Approvers{}, 10*time.Minute)
				if r.Status != approvals.Pending || r.Rule != rule || !r.ExpiresAt.Equal(k.clock.Now().Add(10*time.Minute)) {
					t.Fatalf("new request = %+v", r)
				}
				// A retry while pending joins the same request.
				again, created, err := k.store.Request(ctx, call("alice", "delete_repo", `{ "repo" : "x" }`), rule, approvals.Approvers{}, 10*time.Minute)
				if err != nil || created || again.ID != r.ID {
					t.Fatalf("retry: id %s created %v err %v; want to join %s", again.ID, created, err, r.ID)
				}
				if got, ok := consume(t, k.store, b); ok || got.ID != r.ID || got.Status != approvals.Pending {
					t.Fatalf("Consume while pending = %s %s %v", got.ID, got.Status, ok)
				}
				k.clock.Advance(time.Minute)
				dec, err := k.store.Decide(ctx, r.ID, true, bob, "looks fine")
				if err != nil {
					t.Fatal(err)
				}
				if dec.Status != approvals.Approved || dec.DecidedBy != "bob" || dec.Reason != "looks fine" || !dec.DecidedAt.Equal(k.clock.Now()) {
					t.Fatalf("decided = %+v", dec)
				}
				got, ok := consume(t, k.store, b)
				if !ok || got.Status != approvals.Used || got.UsedAt.IsZero() || got.DecidedBy != "bob" {
					t.Fatalf("Consume after approval = %+v %v", got, ok)
				}
				if got, ok := consume(t, k.store, b); ok || got.Status != approvals.Used {
					t.Fatalf("second Consume = %s %v; an approval is single use", got.Status, ok)
				}
				if _, err := k.store.Decide(ctx, r.ID, true, bob, ""); !errors.Is(err, approvals.ErrNotPending) {
					t.Fatalf("deciding a used request: %v, want ErrNotPending", err)
				}
				// A retry after use opens a new request.
				next := mustRequest(t, k.store, b, approvals.Approvers{}, 0)
				if next.ID == r.ID || !next.ExpiresAt.Equal(k.clock.Now().Add(approvals.DefaultTimeout)) {
					t.Fatalf("next request %s expires %s", next.ID, next.ExpiresAt)
				}
				want := []approvals.EventKind{approvals.EventRequested, approvals.EventApproved, approvals.EventUsed}
				if got := k.events.kinds(r.ID); !reflect.DeepEqual(got, want) {
					t.Fatalf("events %v, want %v", got, want)
				}
				stored, err := k.store.Get(ctx, r.ID)
				if err != nil || !reflect.DeepEqual(stored, got) {
					t.Fatalf("Get = %+v, %v\nwant %+v", stored, err, got)
				}
			})

			t.Run("deny", func(t *testing.T) {
				k := open(t)
				b := call("alice", "delete_repo", `{}`)
				r := mustRequest(t, k.store, b, approvals.Approvers{}, time.Minute)
				dec, err := k.store.Decide(ctx, r.ID, false, bob, "no")
				if err != nil || dec.Status != approvals.Denied {
					t.Fatalf("deny = %+v, %v", dec, err)
				}
				if got, ok := consume(t, k.store, b); ok || got.Status != approvals.Denied {
					t.Fatalf("Consume after deny = %s %v", got.Status, ok)
				}
				if _, err := k.store.Decide(ctx, r.ID, true, bob, ""); !errors.Is(err, approvals.ErrNotPending) {
					t.Fatalf("approving a denied request: %v", err)
				}
				if got := k.events.kinds(r.ID); !reflect.DeepEqual(got, []approvals.EventKind{"requested", "denied"}) {
					t.Fatalf("events %v", got)
				}
			})

			t.Run("expire", func(t *testing.T) {
				k := open(t)
				b := call("alice", "delete_repo", `{}`)
				r := mustRequest(t, k.store, b, approvals.Approvers{}, time.Minute)
				k.clock.Advance(time.Minute)
				if got, err := k.store.Get(ctx, r.ID); err != nil || got.Status != approvals.Expired {
					t.Fatalf("Get at the deadline = %s, %v", got.Status, err)
				}
				if _, err := k.store.Decide(ctx, r.ID, true, bob, ""); !errors.Is(err, approvals.ErrExpired) {
					t.Fatalf("deciding past the deadline: %v, want ErrExpired", err)
				}
				if n, err := k.store.Sweep(ctx); err != nil || n != 0 {
					t.Fatalf("Sweep after Decide expired it = %d, %v; want 0", n, err)
				}
				// An approved request also expires unused.
				b2 := call("alice", "delete_repo", `{"n":2}`)
				r2 := mustRequest(t, k.store, b2, approvals.Approvers{}, time.Minute)
				if _, err := k.store.Decide(ctx, r2.ID, true, bob, ""); err != nil {
					t.Fatal(err)
				}
				k.clock.Advance(2 * time.Minute)
				if got, ok := consume(t, k.store, b2); ok || got.Status != approvals.Expired {
					t.Fatalf("Consume of an approval past its deadline = %s %v", got.Status, ok)
				}
				// A request nobody touches is expired by the sweep, once.
				r3 := mustRequest(t, k.store, call("alice", "delete_repo", `{"n":3}`), approvals.Approvers{}, time.Minute)
				k.clock.Advance(time.Hour)
				if n, err := k.store.Sweep(ctx); err != nil || n != 1 {
					t.Fatalf("Sweep = %d, %v; want 1", n, err)
				}
				if n, _ := k.store.Sweep(ctx); n != 0 {
					t.Fatalf("second Sweep = %d", n)
				}
				for id, want := range map[string][]approvals.EventKind{
					r.ID:  {"requested", "expired"},
					r2.ID: {"requested", "approved", "expired"},
					r3.ID: {"requested", "expired"},
				} {
					if got := k.events.kinds(id); !reflect.DeepEqual(got, want) {
						t.Errorf("events of %s = %v, want %v", id, got, want)
					}
				}
				// A retry after expiry opens a new request.
				if _, created, _ := k.store.Request(ctx, b, rule, approvals.Approvers{}, time.Minute); !created {
					t.Fatal("retry after expiry joined the expired request")
				}
			})

			t.Run("binding must match exactly", func(t *testing.T) {
				k := open(t)
				b := call("alice", "delete_repo", `{"repo":"x","force":true}`)
				r := mustRequest(t, k.store, b, approvals.Approvers{}, time.Minute)
				if _, err := k.store.Decide(ctx, r.ID, true, bob, ""); err != nil {
					t.Fatal(err)
				}
				others := map[string]approvals.Binding{}
				o := b
				o.ArgsSHA256 = call("alice", "delete_repo", `{"repo":"y","force":true}`).ArgsSHA256
				others["arguments"] = o
				o = b
				o.Tool = "archive_repo"
				others["tool"] = o
				o = b
				o.Server = "gitlab"
				others["server"] = o
				o = b
				o.Subject = "mallory"
				others["subject"] = o
				o = b
				o.Groups = []string{"eng"}
				others["groups"] = o
				o = b
				o.Bundle = "sha256:" + fmt.Sprintf("%064d", 1)
				others["bundle digest"] = o
				for what, o := range others {
					if got, ok := consume(t, k.store, o); ok {
						t.Errorf("Consume with another %s used %s", what, got.ID)
					}
				}
				// Groups match as a set.
				o = b
				o.Groups = []string{"oncall", "eng", "eng"}
				if _, ok := consume(t, k.store, o); !ok {
					t.Fatal("the matching call (groups reordered) was refused")
				}
			})

			t.Run("who decides", func(t *testing.T) {
				k := open(t)
				b := call("alice", "delete_repo", `{}`)
				r := mustRequest(t, k.store, b, approvals.Approvers{}, time.Minute)
				if _, err := k.store.Decide(ctx, r.ID, true, alice, ""); !errors.Is(err, approvals.ErrSelfApproval) {
					t.Fatalf("self approval: %v", err)
				}
				if _, err := k.store.Decide(ctx, r.ID, true, approvals.Identity{}, ""); !errors.Is(err, approvals.ErrNoDecider) {
					t.Fatalf("no decider: %v", err)
				}
				if _, err := k.store.Decide(ctx, "ap_NOSUCHREQUEST", true, bob, ""); !errors.Is(err, approvals.ErrNotFound) {
					t.Fatalf("unknown id: %v", err)
				}
				if _, err := k.store.Decide(ctx, "../../etc", true, bob, ""); !errors.Is(err, approvals.ErrNotFound) {
					t.Fatalf("odd id: %v", err)
				}
				restricted := mustRequest(t, k.store, call("alice", "delete_repo", `{"n":1}`),
					approvals.Approvers{Subjects: []string{"carol"}, Groups: []string{"security"}}, time.Minute)
				if _, err := k.store.Decide(ctx, restricted.ID, true, bob, ""); !errors.Is(err, approvals.ErrNotApprover) {
					t.Fatalf("bob is not an approver: %v", err)
				}
				if got, _ := k.store.Get(ctx, restricted.ID); got.Status != approvals.Pending {
					t.Fatalf("refused decision changed the request: %s", got.Status)
				}
				dave := approvals.Identity{Subject: "dave", Groups: []string{"security"}}
				if got, err := k.store.Decide(ctx, restricted.ID, true, dave, ""); err != nil || got.DecidedBy != "dave" {
					t.Fatalf("dave of security: %+v, %v", got, err)
				}
				r2 := mustRequest(t, k.store, call("alice", "delete_repo", `{"n":2}`),
					approvals.Approvers{Subjects: []string{"carol"}}, time.Minute)
				if _, err := k.store.Decide(ctx, r2.ID, false, approvals.Identity{Subject: "carol"}, ""); err != nil {
					t.Fatalf("carol: %v", err)
				}
				if got, _ := k.store.Get(ctx, r.ID); got.Status != approvals.Pending {
					t.Fatalf("request after refused decisions: %s", got.Status)
				}
			})

			t.Run("invalid binding", func(t *testing.T) {
				k := open(t)
				b := call("alice", "delete_repo", `{}`)
				b.ArgsSHA256 = "not a hash"
				b.Bundle = ""
				if _, _, err := k.store.Request(ctx, b, rule, approvals.Approvers{}, 0); !errors.Is(err, approvals.ErrInvalid) {
					t.Fatalf("Request: %v", err)
				}
				if _, _, err := k.store.Consume(ctx, b); !errors.Is(err, approvals.ErrInvalid) {
					t.Fatalf("Consume: %v", err)
				}
			})

			t.Run("list", func(t *testing.T) {
				k := open(t)
				var ids []string
				for i := range 4 {
					r := mustRequest(t, k.store, call("alice", "delete_repo", fmt.Sprintf(`{"n":%d}`, i)), approvals.Approvers{}, time.Hour)
					ids = append(ids, r.ID)
					k.clock.Advance(time.Second)
				}
				if _, err := k.store.Decide(ctx, ids[1], false, bob, ""); err != nil {
					t.Fatal(err)
				}
				all, err := k.store.List(ctx, approvals.Filter{})
				if err != nil || len(all) != 4 || all[0].ID != ids[3] || all[3].ID != ids[0] {
					t.Fatalf("List = %d requests, %v; want 4 newest first", len(all), err)
				}
				pending, _ := k.store.List(ctx, approvals.Filter{Status: approvals.Pending, Limit: 2})
				if len(pending) != 2 || pending[0].ID != ids[3] || pending[1].ID != ids[2] {
					t.Fatalf("pending, limit 2 = %v", pending)
				}
				denied, _ := k.store.List(ctx, approvals.Filter{Status: approvals.Denied})
				if len(denied) != 1 || denied[0].ID != ids[1] {
					t.Fatalf("denied = %v", denied)
				}
			})

			t.Run("wait", func(t *testing.T) {
				k := open(t)
				r := mustRequest(t, k.store, call("alice", "delete_repo", `{}`), approvals.Approvers{}, time.Hour)
				got := make(chan approvals.Request, 1)
				go func() {
					w, err := k.store.Wait(ctx, r.ID)
					if err != nil {
						t.Error(err)
					}
					got <- w
				}()
				time.Sleep(50 * time.Millisecond)
				if _, err := k.store.Decide(ctx, r.ID, true, bob, ""); err != nil {
					t.Fatal(err)
				}
				select {
				case w := <-got:
					if w.Status != approvals.Approved {
						t.Fatalf("Wait returned %s", w.Status)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Wait not woken by the decision")
				}
				// Cancelled.
				r2 := mustRequest(t, k.store, call("alice", "delete_repo", `{"n":2}`), approvals.Approvers{}, time.Hour)
				cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				if _, err := k.store.Wait(cctx, r2.ID); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Wait with a context that ends: %v", err)
				}
				// Woken by the sweep's expiry.
				go func() {
					w, err := k.store.Wait(ctx, r2.ID)
					if err != nil {
						t.Error(err)
					}
					got <- w
				}()
				time.Sleep(50 * time.Millisecond)
				k.clock.Advance(2 * time.Hour)
				if _, err := k.store.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
				select {
				case w := <-got:
					if w.Status != approvals.Expired {
						t.Fatalf("Wait returned %s", w.Status)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Wait not woken by the expiry")
				}
				if _, err := k.store.Wait(ctx, "ap_NOSUCHREQUEST"); !errors.Is(err, approvals.ErrNotFound) {
					t.Fatalf("Wait for an unknown id: %v", err)
				}
			})

			t.Run("wait until the deadline", func(t *testing.T) {
				k := open(t, approvals.WithClock(time.Now))
				r := mustRequest(t, k.store, call("alice", "delete_repo", `{}`), approvals.Approvers{}, 300*time.Millisecond)
				start := time.Now()
				w, err := k.store.Wait(ctx, r.ID)
				if err != nil || w.Status != approvals.Expired {
					t.Fatalf("Wait = %s, %v", w.Status, err)
				}
				if d := time.Since(start); d > 3*time.Second {
					t.Fatalf("Wait took %s past a 300ms deadline", d)
				}
			})

			t.Run("concurrent retries of one approved call", func(t *testing.T) {
				k := open(t)
				replicas := []approvals.Store{k.store}
				if k.open != nil {
					replicas = append(replicas, k.open()) // a second proxy replica
				}
				b := call("alice", "delete_repo", `{}`)
				const n = 32
				// Opening: exactly one request, whoever opens it.
				var created atomic.Int32
				ids := make([]string, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						r, c, err := replicas[i%len(replicas)].Request(ctx, b, rule, approvals.Approvers{}, time.Minute)
						if err != nil {
							t.Error(err)
						}
						if c {
							created.Add(1)
						}
						ids[i] = r.ID
					})
				}
				wg.Wait()
				if created.Load() != 1 {
					t.Fatalf("%d requests opened for one call; want 1", created.Load())
				}
				for _, id := range ids {
					if id != ids[0] {
						t.Fatalf("retries joined different requests: %s and %s", id, ids[0])
					}
				}
				if _, err := replicas[len(replicas)-1].Decide(ctx, ids[0], true, bob, ""); err != nil {
					t.Fatal(err)
				}
				var ran atomic.Int32
				start := make(chan struct{})
				for i := range n {
					wg.Go(func() {
						<-start
						_, ok, err := replicas[i%len(replicas)].Consume(ctx, b)
						if err != nil {
							t.Error(err)
						}
						if ok {
							ran.Add(1)
						}
					})
				}
				close(start)
				wg.Wait()
				if ran.Load() != 1 {
					t.Fatalf("%d of %d concurrent retries ran; want exactly 1", ran.Load(), n)
				}
				if got := k.events.kinds(ids[0]); !reflect.DeepEqual(got, []approvals.EventKind{"requested", "approved", "used"}) {
					t.Fatalf("events %v", got)
				}
			})
		})
	}
}

// TestApprovalRedisReplicas: a request opened through one replica is
// decided through another and used by a third; Wait on one replica is woken
// by a decision on another through the channel, not the poll.
func TestApprovalRedisReplicas(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	var evs events
	open := func() *approvals.Redis {
		r, err := approvals.OpenRedis(approvals.RedisOptions{Addr: srv.Addr()}, approvals.WithEvents(evs.add),
			approvals.WithPollEvery(time.Minute), approvals.WithSweepEvery(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b, c := open(), open(), open()
	call := call("alice", "delete_repo", `{}`)
	r := mustRequest(t, a, call, approvals.Approvers{}, time.Hour)
	if joined, created, err := b.Request(ctx, call, rule, approvals.Approvers{}, time.Hour); err != nil || created || joined.ID != r.ID {
		t.Fatalf("replica b did not join: %s %v %v", joined.ID, created, err)
	}
	woken := make(chan approvals.Request, 1)
	go func() {
		w, err := a.Wait(ctx, r.ID)
		if err != nil {
			t.Error(err)
		}
		woken <- w
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if _, err := b.Decide(ctx, r.ID, true, bob, "ok"); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-woken:
		if w.Status != approvals.Approved || w.DecidedBy != "bob" {
			t.Fatalf("woken with %+v", w)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("woken after %s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait on replica a not woken by the decision on replica b")
	}
	if _, ok, err := c.Consume(ctx, call); err != nil || !ok {
		t.Fatalf("replica c could not use the approval: %v %v", ok, err)
	}
	if _, ok, _ := a.Consume(ctx, call); ok {
		t.Fatal("replica a used the approval again")
	}
	if got := evs.kinds(r.ID); !reflect.DeepEqual(got, []approvals.EventKind{"requested", "approved", "used"}) {
		t.Fatalf("events across replicas %v: each transition must be reported once", got)
	}
	list, err := c.List(ctx, approvals.Filter{})
	if err != nil || len(list) != 1 || list[0].Status != approvals.Used {
		t.Fatalf("List on c = %v, %v", list, err)
	}
}

func TestApprovalRedisOptions(t *testing.T) {
	_, err := approvals.OpenRedis(approvals.RedisOptions{Addr: "no-port", DB: -1, Timeout: -1, Password: "hunter2hunter2"})
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"no-port", "database -1", "timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q shows the password", err)
	}
}

// TestApprovalRedisUnavailable: a store that cannot reach its server
// answers errors, never a consumed approval.
func TestApprovalRedisUnavailable(t *testing.T) {
	r, err := approvals.OpenRedis(approvals.RedisOptions{Addr: "127.0.0.1:1", Timeout: 200 * time.Millisecond}, approvals.WithSweepEvery(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := call("alice", "delete_repo", `{}`)
	if _, ok, err := r.Consume(context.Background(), b); ok || err == nil {
		t.Fatalf("Consume without a server = %v, %v; want an error", ok, err)
	}
	if _, _, err := r.Request(context.Background(), b, rule, approvals.Approvers{}, 0); err == nil {
		t.Fatal("Request without a server succeeded")
	}
}
