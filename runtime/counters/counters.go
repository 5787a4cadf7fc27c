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
	"sync"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// Store holds counter values by key ("<scope>.<counter>"), each in its
// current window. The zero value is not usable; call [New]. Store is safe for
// concurrent use and needs no Close.
type Store struct {
	mu   sync.Mutex        // guards vals
	vals map[string]*value // by counter key
}

// value is one counter in one window: start is the window's start (Unix
// seconds, UTC); a value whose window has passed reads as zero.
type value struct {
	start int64
	n     int64
}

// New returns an empty store: every counter reads 0.
func New() *Store { return &Store{vals: make(map[string]*value)} }

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

// current returns the counter's value in the window that starts at start.
// The caller holds s.mu.
func (s *Store) current(key string, start int64) int64 {
	if v := s.vals[key]; v != nil && v.start == start {
		return v.n
	}
	return 0
}

// Reserve takes the reservations in order, each in its window at now. A
// reservation is refused when its counter's current value plus its amount
// would exceed its limit (a nil limit never refuses), and so is one whose
// window is not minute, hour or day (fail closed). On a refusal the
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
	starts := make([]int64, len(rs))
	s.mu.Lock()
	for i := range rs {
		r := &rs[i]
		start, ok := windowStart(r.Window, now)
		if ok {
			cur := s.current(r.Key, start)
			ok = r.Limit == nil || cur+r.Amount <= *r.Limit
		}
		if !ok {
			s.undo(rs[:i], starts[:i])
			s.mu.Unlock()
			return nil, r
		}
		starts[i] = start
		v := s.vals[r.Key]
		if v == nil {
			v = &value{}
			s.vals[r.Key] = v
		}
		if v.start != start {
			v.start, v.n = start, 0
		}
		v.n += r.Amount
	}
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.undo(rs, starts)
			s.mu.Unlock()
		})
	}, nil
}

// undo takes back reservations whose windows are still current. The caller
// holds s.mu.
func (s *Store) undo(rs []bundles.Reservation, starts []int64) {
	for i := range rs {
		if v := s.vals[rs[i].Key]; v != nil && v.start == starts[i] {
			v.n -= rs[i].Amount
		}
	}
}

// State appends to dst the current value at now of each counter in table
// (a bundle's counter table: Key and Window are read), for the decision
// input's state (policy.md §6). A counter with an unknown window reads 0.
func (s *Store) State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range table {
		var n int64
		if start, ok := windowStart(table[i].Window, now); ok {
			n = s.current(table[i].Key, start)
		}
		dst = append(dst, bundles.CounterValue{Key: table[i].Key, Value: n})
	}
	return dst
}
