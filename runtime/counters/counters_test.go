package counters

import (
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

func limit(n int64) *int64 { return &n }

func res(key, window string, amount int64, lim *int64) bundles.Reservation {
	return bundles.Reservation{Key: key, Amount: amount, Limit: lim, Window: window, Rule: "r#" + key, Message: "limit " + key}
}

func valueOf(s *Store, key, window string, now time.Time) int64 {
	return s.State(nil, []bundles.Reservation{{Key: key, Window: window}}, now)[0].Value
}

func TestReserveLimit(t *testing.T) {
	s := New()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs := []bundles.Reservation{res("t._rate_minute", "minute", 1, limit(2))}
	for i := 0; i < 2; i++ {
		if _, refusal := s.Reserve(rs, now); refusal != nil {
			t.Fatalf("call %d refused", i+1)
		}
	}
	_, refusal := s.Reserve(rs, now)
	if refusal == nil || refusal.Rule != "r#t._rate_minute" {
		t.Fatalf("third call: got refusal %v, want the rate rule", refusal)
	}
	// The next whole minute starts a new window.
	if _, refusal := s.Reserve(rs, now.Add(55*time.Second)); refusal != nil {
		t.Fatal("refused in the next minute")
	}
}

func TestWindowsCalendarAligned(t *testing.T) {
	now := time.Date(2026, 1, 2, 23, 59, 59, 0, time.UTC)
	tests := []struct {
		window string
		later  time.Duration
		same   bool
	}{
		{"minute", 0, true},
		{"minute", time.Second, false},
		{"hour", time.Second, false},
		{"day", time.Second, false},
		{"day", -23 * time.Hour, true},
		{"hour", -59 * time.Minute, true},
	}
	for _, tt := range tests {
		s := New()
		s.Reserve([]bundles.Reservation{res("k", tt.window, 1, nil)}, now)
		got := valueOf(s, "k", tt.window, now.Add(tt.later))
		want := int64(0)
		if tt.same {
			want = 1
		}
		if got != want {
			t.Errorf("%s window, %v later: got %d, want %d", tt.window, tt.later, got, want)
		}
	}
	// Windows are UTC whatever the clock's zone.
	s := New()
	est := time.FixedZone("X", -5*3600)
	local := time.Date(2026, 1, 2, 20, 0, 0, 0, est) // 01:00 UTC on the 3rd
	s.Reserve([]bundles.Reservation{res("k", "day", 1, nil)}, local)
	if got := valueOf(s, "k", "day", time.Date(2026, 1, 3, 0, 0, 1, 0, time.UTC)); got != 1 {
		t.Errorf("day window in UTC: got %d, want 1", got)
	}
}

func TestRefusalReleasesEarlier(t *testing.T) {
	s := New()
	now := time.Now()
	rs := []bundles.Reservation{
		res("a", "hour", 1, nil),
		res("b", "hour", 5, limit(10)),
		res("c", "day", 3, limit(2)),
	}
	release, refusal := s.Reserve(rs, now)
	if release != nil || refusal == nil || refusal.Key != "c" {
		t.Fatalf("got release %v refusal %v, want refusal of c", release != nil, refusal)
	}
	for _, k := range []string{"a", "b", "c"} {
		if got := valueOf(s, k, "hour", now); got != 0 {
			t.Errorf("%s: got %d, want 0 after the refusal", k, got)
		}
	}
}

func TestReleaseRollsBackOnce(t *testing.T) {
	s := New()
	now := time.Now()
	rs := []bundles.Reservation{res("a", "day", 2, limit(4))}
	s.Reserve(rs, now)
	release, _ := s.Reserve(rs, now)
	release()
	release()
	if got := valueOf(s, "a", "day", now); got != 2 {
		t.Fatalf("got %d, want 2 (one committed, one rolled back once)", got)
	}
}

func TestUnknownWindowRefused(t *testing.T) {
	s := New()
	if _, refusal := s.Reserve([]bundles.Reservation{res("a", "week", 1, nil)}, time.Now()); refusal == nil {
		t.Fatal("unknown window reserved; want a refusal (fail closed)")
	}
}

func TestConcurrentReserve(t *testing.T) {
	s := New()
	now := time.Now()
	rs := []bundles.Reservation{res("a", "day", 1, limit(100)), res("b", "day", 1, nil)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				release, refusal := s.Reserve(rs, now)
				if refusal != nil {
					continue
				}
				if i%5 == 0 {
					release()
					continue
				}
				mu.Lock()
				granted++
				mu.Unlock()
				s.State(nil, rs, now)
			}
		}()
	}
	wg.Wait()
	if got := valueOf(s, "a", "day", now); got != int64(granted) || got > 100 {
		t.Fatalf("counter a = %d, committed %d; want them equal and at most 100", got, granted)
	}
}

// TestConcurrentReserveOverlapping: calls reserving the same counters in
// different orders, and one counter twice, neither deadlock nor pass a
// limit, and every counter ends at what was committed.
func TestConcurrentReserveOverlapping(t *testing.T) {
	s := New()
	now := time.Now()
	lists := [][]bundles.Reservation{
		{res("x", "day", 1, limit(150)), res("y", "day", 1, nil)},
		{res("y", "day", 1, nil), res("x", "day", 1, limit(150))},
		{res("y", "day", 2, limit(400)), res("y", "day", 1, limit(400)), res("z", "hour", 1, nil)},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[string]int64{}
	for g := range 9 {
		rs := lists[g%len(lists)]
		wg.Go(func() {
			for i := range 100 {
				release, refusal := s.Reserve(rs, now)
				if refusal != nil {
					continue
				}
				if i%7 == 0 {
					release()
					continue
				}
				mu.Lock()
				for _, r := range rs {
					want[r.Key] += r.Amount
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for key, window := range map[string]string{"x": "day", "y": "day", "z": "hour"} {
		if got := valueOf(s, key, window, now); got != want[key] {
			t.Errorf("counter %s = %d, committed %d", key, got, want[key])
		}
	}
	if x := want["x"]; x > 150 || x == 0 || want["y"] == 0 || want["z"] == 0 {
		t.Errorf("committed x %d (limit 150), y %d, z %d", x, want["y"], want["z"])
	}
}
