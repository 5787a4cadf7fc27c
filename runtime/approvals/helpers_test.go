package approvals_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/audit"
	"github.com/toolgate/toolgate/test/redistest"
)

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// events records a store's events; safe for concurrent use.
type events struct {
	mu   sync.Mutex // guards list
	list []approvals.Event
}

func (e *events) add(ev approvals.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

// kinds returns the kinds recorded for request id, in order.
func (e *events) kinds(id string) []approvals.EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []approvals.EventKind
	for _, ev := range e.list {
		if ev.Request.ID == id {
			out = append(out, ev.Kind)
		}
	}
	return out
}

// call returns a binding for a call with arguments args.
func call(subject, tool, args string) approvals.Binding {
	return approvals.Binding{
		Identity:   approvals.Identity{Subject: subject, Groups: []string{"eng", "oncall"}},
		Server:     "github",
		Tool:       tool,
		ArgsSHA256: audit.ArgsSHA256([]byte(args)),
		Bundle:     "sha256:" + strings.Repeat("ab", 32),
	}
}

const rule = "policies/github.yaml#delete_repo/needs approval"

// kit is one store under test, with its clock and events; open makes
// another Store value on the same state (a second replica for Redis; for
// Disk, nil: one process owns a folder).
type kit struct {
	store  approvals.Store
	clock  *clock
	events *events
	open   func(opts ...approvals.Option) approvals.Store
}

// stores returns a fresh kit per store kind, for table-driven scenarios.
func stores(t *testing.T) map[string]func(t *testing.T, opts ...approvals.Option) *kit {
	return map[string]func(t *testing.T, opts ...approvals.Option) *kit{
		"disk": func(t *testing.T, opts ...approvals.Option) *kit {
			k := &kit{clock: newClock(), events: &events{}}
			d, err := approvals.OpenDisk(t.TempDir(), append([]approvals.Option{
				approvals.WithClock(k.clock.Now), approvals.WithEvents(k.events.add), approvals.WithSweepEvery(-1),
			}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			k.store = d
			return k
		},
		"redis": func(t *testing.T, opts ...approvals.Option) *kit {
			srv := redistest.Start(t)
			k := &kit{clock: newClock(), events: &events{}}
			k.open = func(extra ...approvals.Option) approvals.Store {
				r, err := approvals.OpenRedis(approvals.RedisOptions{Addr: srv.Addr(), KeyPrefix: "test:"}, append(append([]approvals.Option{
					approvals.WithClock(k.clock.Now), approvals.WithEvents(k.events.add), approvals.WithSweepEvery(-1),
				}, opts...), extra...)...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
			k.store = k.open()
			return k
		},
	}
}
