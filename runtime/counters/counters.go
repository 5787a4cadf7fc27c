// Package counters keeps the proxy's counter state: the runtime stage that
// reserves, commits and rolls back the counters a decision lists
// (policy.md §3 "Counters", §6 "counters"). The host, never the policy, owns
// this state and the clock.
//
// Three stores share the same methods: [Store] in memory (counters live as
// long as the process), [Disk] embedded on disk (the proxy's default:
// counters survive restarts), and [Redis] (several proxy replicas share
// limits).
package counters

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// Store holds counter values by key ("<scope>.<counter>"), each in its
// current window. The zero value is not usable; call [New]. Store is safe for
// concurrent use and needs no Close. There is no store-wide lock: each
// counter has its own, and a reservation holds the locks of its counters
// only (taken in key order), so calls on different counters never wait for
// each other.
type Store struct {
	vals sync.Map // counter key → *value
}

// value is one counter in one window: start is the window's start (Unix
// seconds, UTC); a value whose window has passed reads as zero.
type value struct {
	mu    sync.Mutex // guards start and n
	start int64
	n     int64
}

// New returns an empty store: every counter reads 0.
func New() *Store { return &Store{} }

// get returns the counter with this key, or nil.
func (s *Store) get(key string) *value {
	if v, ok := s.vals.Load(key); ok {
		return v.(*value)
	}
	return nil
}

// ensure returns the counter with this key, creating it (at 0) if needed.
func (s *Store) ensure(key string) *value {
	if v := s.get(key); v != nil {
		return v
	}
	v, _ := s.vals.LoadOrStore(key, &value{})
	return v.(*value)
}

// set replaces a counter's window and value (replaying a journal).
func (s *Store) set(key string, start, n int64) {
	v := s.ensure(key)
	v.mu.Lock()
	v.start, v.n = start, n
	v.mu.Unlock()
}

// read returns a counter's window start and value.
func (s *Store) read(key string) (start, n int64, ok bool) {
	v := s.get(key)
	if v == nil {
		return 0, 0, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.start, v.n, true
}

// windowStart returns the start of the calendar-aligned UTC window that
// holds now, and false for a window name it does not know.
func windowStart(window string, now time.Time) (int64, bool) {
	t := now.UTC()
	switch window {
	case "minute":
		return t.Truncate(time.Minute).Unix(), true
	case "hour":
		return t.Truncate(time.Hour).Unix(), true
	case "day":
		y, m, d := t.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix(), true
	}
	return 0, false
}

// in returns the counter's value in the window that starts at start. The
// caller holds v.mu.
func (v *value) in(start int64) int64 {
	if v.start == start {
		return v.n
	}
	return 0
}

// Reserve takes the reservations in order, each in its window at now. A
// reservation is refused when its counter's current value plus its amount
// would exceed its limit (a nil limit never refuses), when that sum would
// leave the int64 range (an increment_from amount can be up to 2^63-1: the
// sum must not wrap around and let the call through), when it is Invalid
// (no amount), and when its window is not minute, hour or day (fail
// closed). On a refusal the
// reservations already taken are released and Reserve returns the refused
// one (its Rule and Message say why); release is then nil.
//
// Otherwise the caller owns release: call it to roll the reservations back
// (the upstream call failed); drop it to commit them. release is safe to call
// more than once (only the first call counts) and does nothing to a window
// that has since passed.
func (s *Store) Reserve(rs []bundles.Reservation, now time.Time) (release func(), refusal *bundles.Reservation) {
	if len(rs) == 0 {
		return func() {}, nil
	}
	t := &taken{rs: rs}
	if len(rs) <= len(t.small.vals) {
		t.vals, t.starts, t.order = t.small.vals[:len(rs)], t.small.starts[:len(rs)], t.small.order[:0]
	} else {
		t.vals, t.starts, t.order = make([]*value, len(rs)), make([]int64, len(rs)), make([]int, 0, len(rs))
	}
	for i := range rs {
		t.vals[i] = s.ensure(rs[i].Key)
	}
	t.lock()
	for i := range rs {
		r := &rs[i]
		start, ok := windowStart(r.Window, now)
		if ok && r.Invalid {
			ok = false // no amount: refused in its turn
		}
		if ok {
			sum, fits := add(t.vals[i].in(start), r.Amount)
			ok = fits && (r.Limit == nil || sum <= *r.Limit)
		}
		if !ok {
			t.undo(i)
			t.unlock()
			return nil, r
		}
		t.starts[i] = start
		if v := t.vals[i]; v.start != start {
			v.start, v.n = start, 0
		}
		t.vals[i].n += r.Amount
	}
	t.unlock()
	return t.release, nil
}

// add returns a+b, and false when the sum is outside the int64 range.
func add(a, b int64) (int64, bool) {
	sum := a + b
	return sum, (b >= 0) == (sum >= a)
}

// subSaturating returns a-b, or the int64 bound it passed: other calls may
// have moved a counter between a reservation and its release.
func subSaturating(a, b int64) int64 {
	d := a - b
	switch {
	case b > 0 && d > a:
		return math.MinInt64
	case b < 0 && d < a:
		return math.MaxInt64
	}
	return d
}

// taken is one call's reservations, held until they are committed or
// released.
type taken struct {
	rs     []bundles.Reservation
	vals   []*value // the counter of each reservation
	starts []int64  // the window each was taken in
	order  []int    // indexes of the distinct counters, in key order
	once   sync.Once
	small  struct { // room for the usual one or two reservations
		vals   [2]*value
		starts [2]int64
		order  [2]int
	}
}

// lock locks the distinct counters in key order, so that two calls never
// wait for each other in a cycle.
func (t *taken) lock() {
	if len(t.order) == 0 {
		for i := range t.vals {
			if !slices.ContainsFunc(t.order, func(j int) bool { return t.vals[j] == t.vals[i] }) {
				t.order = append(t.order, i)
			}
		}
		if len(t.order) > 1 {
			slices.SortFunc(t.order, func(a, b int) int { return strings.Compare(t.rs[a].Key, t.rs[b].Key) })
		}
	}
	for _, i := range t.order {
		t.vals[i].mu.Lock()
	}
}

func (t *taken) unlock() {
	for _, i := range t.order {
		t.vals[i].mu.Unlock()
	}
}

// undo takes back the first n reservations where their windows are still
// current. The caller holds the locks.
func (t *taken) undo(n int) {
	for i := range n {
		if v := t.vals[i]; v.start == t.starts[i] {
			v.n = subSaturating(v.n, t.rs[i].Amount)
		}
	}
}

// release rolls the reservations back, once.
func (t *taken) release() {
	t.once.Do(func() {
		t.lock()
		t.undo(len(t.rs))
		t.unlock()
	})
}

// State appends to dst the current value at now of each counter in table
// (a bundle's counter table: Key and Window are read), for the decision
// input's state (policy.md §6). A counter with an unknown window reads 0.
func (s *Store) State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue {
	for i := range table {
		var n int64
		if start, ok := windowStart(table[i].Window, now); ok {
			if v := s.get(table[i].Key); v != nil {
				v.mu.Lock()
				n = v.in(start)
				v.mu.Unlock()
			}
		}
		dst = append(dst, bundles.CounterValue{Key: table[i].Key, Value: n})
	}
	return dst
}
