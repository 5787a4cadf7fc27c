package counters_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/proxy"
	"github.com/toolgate/toolgate/test/redistest"
)

var _ proxy.Counters = (*counters.Redis)(nil)

// adminClient returns a plain client for looking at the server behind the
// store.
func adminClient(tb testing.TB, srv *redistest.Server, password string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: password, Protocol: 2, DisableIdentity: true})
	tb.Cleanup(func() { c.Close() })
	return c
}

func openRedis(tb testing.TB, opts counters.RedisOptions) *counters.Redis {
	tb.Helper()
	r, err := counters.OpenRedis(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// logBuffer collects a logger's lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// store is the shape shared by the memory and Redis stores.
type store interface {
	Reserve(rs []bundles.Reservation, now time.Time) (func(), *bundles.Reservation)
	State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue
}

func lim(n int64) *int64 { return &n }

func rsv(key, window string, amount int64, limit *int64) bundles.Reservation {
	return bundles.Reservation{Key: key, Amount: amount, Limit: limit, Window: window, Rule: "r#" + key, Message: "limit " + key}
}

func read(s store, key, window string, now time.Time) int64 {
	return s.State(nil, []bundles.Reservation{{Key: key, Window: window}}, now)[0].Value
}

func refusedKey(r *bundles.Reservation) string {
	if r == nil {
		return "none"
	}
	return r.Key
}

var r0 = time.Date(2026, 1, 2, 23, 59, 30, 0, time.UTC)

// semantics are scenarios each store must pass alike (policy.md §3
// "Counters").
var semantics = []struct {
	name string
	run  func(t *testing.T, s store)
}{
	{"limit per window", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("t._rate_minute", "minute", 1, lim(2))}
		for i := 0; i < 2; i++ {
			if _, refusal := s.Reserve(rs, r0); refusal != nil {
				t.Fatalf("call %d refused", i+1)
			}
		}
		if _, refusal := s.Reserve(rs, r0); refusal == nil || refusal.Rule != "r#t._rate_minute" || refusal.Message != "limit t._rate_minute" {
			t.Fatalf("third call: got refusal %+v, want the rate rule", refusal)
		}
		if _, refusal := s.Reserve(rs, r0.Add(30*time.Second)); refusal != nil {
			t.Fatal("refused in the next minute")
		}
	}},
	{"calendar-aligned UTC windows", func(t *testing.T, s store) {
		for i, c := range []struct {
			window string
			later  time.Duration
			want   int64
		}{
			{"minute", 29 * time.Second, 1}, {"minute", 30 * time.Second, 0},
			{"hour", -59 * time.Minute, 1}, {"hour", 30 * time.Second, 0},
			{"day", -23 * time.Hour, 1}, {"day", 30 * time.Second, 0},
		} {
			key := "w" + strconv.Itoa(i)
			s.Reserve([]bundles.Reservation{rsv(key, c.window, 1, nil)}, r0)
			if got := read(s, key, c.window, r0.Add(c.later)); got != c.want {
				t.Errorf("%s window, %v later: got %d, want %d", c.window, c.later, got, c.want)
			}
		}
		local := time.Date(2026, 1, 2, 20, 0, 0, 0, time.FixedZone("X", -5*3600)) // 01:00 UTC on the 3rd
		s.Reserve([]bundles.Reservation{rsv("z", "day", 1, nil)}, local)
		if got := read(s, "z", "day", time.Date(2026, 1, 3, 0, 0, 1, 0, time.UTC)); got != 1 {
			t.Errorf("day window in UTC: got %d, want 1", got)
		}
	}},
	{"refusal releases earlier", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("a", "hour", 1, nil), rsv("b", "hour", 5, lim(10)), rsv("c", "hour", 3, lim(2))}
		release, refusal := s.Reserve(rs, r0)
		if release != nil || refusedKey(refusal) != "c" {
			t.Fatalf("got release %t, refusal of %s; want a refusal of c", release != nil, refusedKey(refusal))
		}
		if refusal != &rs[2] {
			t.Error("the refusal is not the caller's reservation")
		}
		for _, k := range []string{"a", "b", "c"} {
			if got := read(s, k, "hour", r0); got != 0 {
				t.Errorf("%s: got %d, want 0 after the refusal", k, got)
			}
		}
	}},
	{"a counter named twice", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("d", "day", 1, lim(3)), rsv("d", "day", 1, lim(3))}
		if _, refusal := s.Reserve(rs, r0); refusal != nil {
			t.Fatal("first call refused")
		}
		if _, refusal := s.Reserve(rs, r0); refusal != &rs[1] {
			t.Fatalf("second call: got refusal %+v, want the second reservation", refusal)
		}
		if got := read(s, "d", "day", r0); got != 2 {
			t.Errorf("d = %d, want 2", got)
		}
	}},
	{"release rolls back once", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("e", "day", 2, lim(4)), rsv("f", "minute", 1, nil)}
		s.Reserve(rs, r0)
		release, _ := s.Reserve(rs, r0)
		release()
		release()
		if got := read(s, "e", "day", r0); got != 2 {
			t.Errorf("e = %d, want 2 (one committed, one rolled back once)", got)
		}
		if got := read(s, "f", "minute", r0); got != 1 {
			t.Errorf("f = %d, want 1", got)
		}
	}},
	{"release leaves a later window alone", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("g", "minute", 1, nil)}
		release, _ := s.Reserve(rs, r0)
		s.Reserve(rs, r0.Add(time.Minute))
		release()
		if got := read(s, "g", "minute", r0.Add(time.Minute)); got != 1 {
			t.Errorf("g = %d in the later minute, want 1", got)
		}
	}},
	{"no limit only counts", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("h", "hour", 1000, nil)}
		for i := 0; i < 3; i++ {
			if _, refusal := s.Reserve(rs, r0); refusal != nil {
				t.Fatal("a counter without a limit refused")
			}
		}
		if got := read(s, "h", "hour", r0); got != 3000 {
			t.Errorf("h = %d, want 3000", got)
		}
	}},
	{"a sum past the int64 range is refused, not wrapped", func(t *testing.T, s store) {
		// An increment_from amount may be as large as 2^63-1. Wrapped
		// around, 5+(2^63-1) would be negative, under any limit: the call
		// would pass and leave the counter far below zero.
		rs := []bundles.Reservation{rsv("k", "day", 5, lim(1000))}
		s.Reserve(rs, r0)
		huge := []bundles.Reservation{rsv("k", "day", math.MaxInt64, lim(1000))}
		if _, refusal := s.Reserve(huge, r0); refusal != &huge[0] {
			t.Fatalf("5 + (2^63-1) under a limit of 1000: got refusal of %s, want k", refusedKey(refusal))
		}
		if got := read(s, "k", "day", r0); got != 5 {
			t.Errorf("k = %d after the refusal, want 5", got)
		}
		if _, refusal := s.Reserve([]bundles.Reservation{rsv("k", "day", 995, lim(1000))}, r0); refusal != nil {
			t.Errorf("5 + 995 under a limit of 1000 refused")
		}
		// Without a limit too: the count cannot go past the range.
		half := []bundles.Reservation{rsv("l", "day", 1<<62, nil)}
		if _, refusal := s.Reserve(half, r0); refusal != nil {
			t.Fatal("2^62 on an empty counter without a limit refused")
		}
		if _, refusal := s.Reserve(half, r0); refusal != &half[0] {
			t.Fatalf("2^62 + 2^62 without a limit: got refusal of %s, want l", refusedKey(refusal))
		}
		if got := read(s, "l", "day", r0); got != 1<<62 {
			t.Errorf("l = %d, want 2^62", got)
		}
	}},
	{"a reservation without an amount is refused in its turn", func(t *testing.T, s store) {
		// An earlier refusal comes first; a later counter is not reached.
		full := []bundles.Reservation{rsv("m", "day", 1, lim(0))}
		bad := rsv("n", "day", 0, lim(100))
		bad.Invalid = true
		rs := []bundles.Reservation{full[0], bad}
		if _, refusal := s.Reserve(rs, r0); refusal != &rs[0] {
			t.Fatalf("got refusal of %s, want m (the earlier counter)", refusedKey(refusal))
		}
		rs = []bundles.Reservation{rsv("o", "day", 1, lim(5)), bad, rsv("p", "day", 1, nil)}
		if _, refusal := s.Reserve(rs, r0); refusal != &rs[1] {
			t.Fatalf("got refusal of %s, want n (no amount)", refusedKey(refusal))
		}
		if got := read(s, "o", "day", r0); got != 0 {
			t.Errorf("o = %d after the refusal, want 0 (released)", got)
		}
	}},
	{"unknown window refused", func(t *testing.T, s store) {
		rs := []bundles.Reservation{rsv("i", "hour", 1, nil), rsv("j", "week", 1, nil)}
		if _, refusal := s.Reserve(rs, r0); refusal != &rs[1] {
			t.Fatalf("got refusal of %s, want j (fail closed)", refusedKey(refusal))
		}
		if got := read(s, "i", "hour", r0); got != 0 {
			t.Errorf("i = %d, want 0", got)
		}
		// An earlier refusal comes first.
		rs = []bundles.Reservation{rsv("i", "hour", 1, lim(0)), rsv("j", "week", 1, nil)}
		if _, refusal := s.Reserve(rs, r0); refusal != &rs[0] {
			t.Fatalf("got refusal of %s, want i", refusedKey(refusal))
		}
		if got := s.State(nil, rs, r0); got[1].Key != "j" || got[1].Value != 0 {
			t.Errorf("state of a week counter = %+v, want j 0", got[1])
		}
	}},
	{"no reservations", func(t *testing.T, s store) {
		release, refusal := s.Reserve(nil, r0)
		if release == nil || refusal != nil {
			t.Fatal("an empty list was not granted")
		}
		release()
		if got := s.State([]bundles.CounterValue{{Key: "x"}}, nil, r0); len(got) != 1 {
			t.Errorf("State with no table = %v, want dst unchanged", got)
		}
	}},
}

func TestRedisSameAsMemory(t *testing.T) {
	srv := redistest.Start(t)
	for i, sc := range semantics {
		t.Run("memory/"+sc.name, func(t *testing.T) { sc.run(t, counters.New()) })
		t.Run("redis/"+sc.name, func(t *testing.T) {
			sc.run(t, openRedis(t, counters.RedisOptions{Addr: srv.Addr(), KeyPrefix: fmt.Sprintf("t%d:", i)}))
		})
	}
}

func TestRedisKeysAndExpiry(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv, "")
	ctx := context.Background()
	s := openRedis(t, counters.RedisOptions{Addr: srv.Addr()})
	now := time.Date(2026, 1, 2, 3, 4, 30, 0, time.UTC)
	s.Reserve([]bundles.Reservation{rsv("create_issue._rate_minute", "minute", 2, lim(5)), rsv("_global.calls", "day", 1, nil)}, now)

	for _, c := range []struct {
		key     string
		want    string
		ttlLow  time.Duration // the rest of the window, plus the slack
		ttlHigh time.Duration
	}{
		{"toolgate:counters:create_issue._rate_minute:" + strconv.FormatInt(now.Truncate(time.Minute).Unix(), 10), "2", 85 * time.Second, 90 * time.Second},
		{"toolgate:counters:_global.calls:1767312000", "1", 75385 * time.Second, 75390 * time.Second},
	} {
		got, err := admin.Get(ctx, c.key).Result()
		if err != nil || got != c.want {
			t.Errorf("GET %s = %q, %v; want %q", c.key, got, err, c.want)
		}
		ttl, err := admin.TTL(ctx, c.key).Result()
		if err != nil || ttl < c.ttlLow || ttl > c.ttlHigh {
			t.Errorf("TTL %s = %v, %v; want %v..%v", c.key, ttl, err, c.ttlLow, c.ttlHigh)
		}
	}
	// A release must not recreate a key that has expired.
	release, _ := s.Reserve([]bundles.Reservation{rsv("gone", "hour", 1, nil)}, now)
	key := "toolgate:counters:gone:" + strconv.FormatInt(now.Truncate(time.Hour).Unix(), 10)
	admin.Del(ctx, key)
	release()
	if n, _ := admin.Exists(ctx, key).Result(); n != 0 {
		t.Errorf("release recreated the expired key %s", key)
	}
	// The scripts are loaded again after the server forgets them.
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, refusal := s.Reserve([]bundles.Reservation{rsv("after_flush", "hour", 1, lim(1))}, now); refusal != nil {
		t.Fatalf("refused after SCRIPT FLUSH: %+v", refusal)
	}
}

// TestRedisReplicasShareLimit has two stores on one server, as two proxy
// replicas would be, race for one limit: exactly the limit is granted.
func TestRedisReplicasShareLimit(t *testing.T) {
	srv := redistest.Start(t)
	const limit, goroutines, attempts = 40, 8, 20
	replicas := []*counters.Redis{
		openRedis(t, counters.RedisOptions{Addr: srv.Addr(), KeyPrefix: "shared:"}),
		openRedis(t, counters.RedisOptions{Addr: srv.Addr(), KeyPrefix: "shared:"}),
	}
	now := time.Now()
	rs := []bundles.Reservation{rsv("calls", "day", 1, nil), rsv("capped", "hour", 1, lim(limit))}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards granted, refused
	granted, refused := 0, 0
	for _, s := range replicas {
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < attempts; i++ {
					_, refusal := s.Reserve(rs, now)
					mu.Lock()
					if refusal == nil {
						granted++
					} else if refusal == &rs[1] {
						refused++
					} else {
						t.Errorf("refused by %+v", refusal)
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if granted != limit || refused != 2*goroutines*attempts-limit {
		t.Errorf("granted %d, refused %d; want %d and %d", granted, refused, limit, 2*goroutines*attempts-limit)
	}
	for _, s := range replicas {
		if got := s.State(nil, rs, now); got[0].Value != limit || got[1].Value != limit {
			t.Errorf("state = %v, want both counters at %d", got, limit)
		}
	}
}

// TestRedisReplicasRollback mixes rollbacks into the race: what is left
// counted is exactly what was committed, and rolling that back returns the
// counters to zero.
func TestRedisReplicasRollback(t *testing.T) {
	srv := redistest.Start(t)
	const limit, goroutines, attempts = 40, 8, 30
	replicas := []*counters.Redis{
		openRedis(t, counters.RedisOptions{Addr: srv.Addr()}),
		openRedis(t, counters.RedisOptions{Addr: srv.Addr()}),
	}
	now := time.Now()
	rs := []bundles.Reservation{rsv("capped", "minute", 1, lim(limit)), rsv("weighted", "day", 3, lim(3*limit))}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards kept
	var kept []func()
	for _, s := range replicas {
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < attempts; i++ {
					release, refusal := s.Reserve(rs, now)
					if refusal != nil {
						continue
					}
					if i%3 == 0 { // the upstream call failed
						release()
						release()
						continue
					}
					mu.Lock()
					kept = append(kept, release)
					mu.Unlock()
					s.State(nil, rs, now)
				}
			}()
		}
	}
	wg.Wait()
	got := replicas[0].State(nil, rs, now)
	if got[0].Value != int64(len(kept)) || got[1].Value != 3*int64(len(kept)) || len(kept) != limit {
		t.Fatalf("state = %v with %d committed; want %d and %d, at the limit of %d", got, len(kept), len(kept), 3*len(kept), limit)
	}
	for i, release := range kept {
		if i%2 == 0 {
			release()
		} else {
			wg.Add(1)
			go func() { defer wg.Done(); release() }()
		}
	}
	wg.Wait()
	if got := replicas[1].State(nil, rs, now); got[0].Value != 0 || got[1].Value != 0 {
		t.Fatalf("state after rolling everything back = %v, want zeros", got)
	}
}

const unavailable = "toolgate denied this call because its shared counter store is unavailable; tell the operator."

func TestRedisUnavailableFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	var logs logBuffer
	s := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), Logger: logs.logger()})
	now := time.Now()
	rs := []bundles.Reservation{rsv("a", "minute", 1, lim(100))}
	if _, refusal := s.Reserve(rs, now); refusal != nil {
		t.Fatal(refusal)
	}

	srv.Stop()
	for i := 0; i < 20; i++ {
		release, refusal := s.Reserve(rs, now)
		if release != nil || refusal == nil || refusal.Rule != "" || refusal.Message != unavailable {
			t.Fatalf("reserve with the server down: got release %t, refusal %+v; want the unavailable refusal", release != nil, refusal)
		}
		if got := s.State(nil, rs, now); got[0] != (bundles.CounterValue{Key: "a"}) {
			t.Fatalf("state with the server down = %v, want a 0", got)
		}
	}
	if n := strings.Count(logs.String(), "unavailable"); n != 1 {
		t.Errorf("logged %d lines about the outage for one burst, want 1:\n%s", n, logs.String())
	}

	srv.Start() // same port, empty
	waitGranted(t, s, rs, now)
	if got := s.State(nil, rs, now); got[0].Value != 1 {
		t.Errorf("state after recovery = %v, want a 1", got)
	}
	if n := strings.Count(logs.String(), "reachable again"); n != 1 {
		t.Errorf("logged %d recoveries, want 1:\n%s", n, logs.String())
	}
}

// waitGranted reserves rs until it is granted, for a store whose server has
// just come back.
func waitGranted(t *testing.T, s *counters.Redis, rs []bundles.Reservation, now time.Time) func() {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		release, refusal := s.Reserve(rs, now)
		if refusal == nil {
			return release
		}
		if refusal.Message != unavailable {
			t.Fatalf("refused by %+v", refusal)
		}
		if time.Now().After(deadline) {
			t.Fatal("the store did not recover within 10s of the server's restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisFailOpen(t *testing.T) {
	srv := redistest.Start(t)
	var logs logBuffer
	s := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), FailOpen: true, Logger: logs.logger()})
	now := time.Now()
	rs := []bundles.Reservation{rsv("a", "hour", 1, lim(1))}
	if _, refusal := s.Reserve(rs, now); refusal != nil {
		t.Fatal(refusal)
	}
	if _, refusal := s.Reserve(rs, now); refusal != &rs[0] {
		t.Fatalf("over the limit with the server up: got %+v, want the rule's refusal", refusal)
	}

	srv.Stop()
	for i := 0; i < 5; i++ {
		release, refusal := s.Reserve(rs, now)
		if release == nil || refusal != nil {
			t.Fatalf("fail open with the server down: got release %t, refusal %+v; want allowed", release != nil, refusal)
		}
		release()
	}
	// Failing open lets counted calls through uncounted, never a call no
	// count could let through: a reservation without an amount.
	bad := rsv("b", "hour", 0, lim(100))
	bad.Invalid = true
	withBad := []bundles.Reservation{rs[0], bad}
	if release, refusal := s.Reserve(withBad, now); release != nil || refusal != &withBad[1] {
		t.Fatalf("fail open with a reservation without an amount: got release %t, refusal %+v; want b refused", release != nil, refusal)
	}
	if n := strings.Count(logs.String(), "unavailable"); n != 1 || !strings.Contains(logs.String(), "fail open") {
		t.Errorf("want one line saying calls are allowed uncounted, got:\n%s", logs.String())
	}

	srv.Start()
	waitGranted(t, s, rs, now) // the restarted server is empty
	if _, refusal := s.Reserve(rs, now); refusal != &rs[0] {
		t.Fatalf("after recovery the limit no longer holds: got %+v", refusal)
	}
}

// TestRedisTimeout has the server stop answering: each operation gives up
// after Timeout (explicit, then the default).
func TestRedisTimeout(t *testing.T) {
	srv := redistest.Start(t)
	now := time.Now()
	rs := []bundles.Reservation{rsv("a", "hour", 1, lim(100))}
	short := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), Timeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	byDefault := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), Logger: slog.New(slog.DiscardHandler)})
	for _, s := range []*counters.Redis{short, byDefault} {
		if _, refusal := s.Reserve(rs, now); refusal != nil {
			t.Fatal(refusal)
		}
	}

	const pause = 3 * time.Second
	pausedAt := time.Now()
	if err := adminClient(t, srv, "").Do(context.Background(), "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		s        *counters.Redis
		min, max time.Duration
	}{
		{"Timeout 100ms", short, 100 * time.Millisecond, 500 * time.Millisecond},
		{"default", byDefault, counters.DefaultRedisTimeout, counters.DefaultRedisTimeout + 400*time.Millisecond},
	} {
		start := time.Now()
		_, refusal := c.s.Reserve(rs, now)
		if took := time.Since(start); took < c.min || took > c.max {
			t.Errorf("%s: reserve against a hung server took %v, want %v..%v", c.name, took, c.min, c.max)
		}
		if refusal == nil || refusal.Message != unavailable {
			t.Errorf("%s: got refusal %+v, want the unavailable refusal", c.name, refusal)
		}
		start = time.Now()
		got := c.s.State(nil, rs, now)
		if took := time.Since(start); took < c.min || took > c.max {
			t.Errorf("%s: state against a hung server took %v, want %v..%v", c.name, took, c.min, c.max)
		}
		if got[0].Value != 0 {
			t.Errorf("%s: state = %v, want 0", c.name, got)
		}
	}
	if time.Since(pausedAt) >= pause {
		t.Fatal("the checks outlasted the pause; they measured nothing")
	}
	time.Sleep(time.Until(pausedAt.Add(pause)))
	// A timed-out reservation may still be counted once the server resumes
	// (the limit errs on the safe side), so only recovery is checked.
	waitGranted(t, short, rs, now)
}

// TestRedisCredentialsStayHidden checks that neither the password nor the
// address reaches a user, and that the password reaches no log or error.
func TestRedisCredentialsStayHidden(t *testing.T) {
	const password = "pw-9f8e7d6c"
	srv := redistest.Start(t, "--requirepass", password)
	var logs logBuffer
	good := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), Username: "default", Password: password, Logger: logs.logger()})
	rs := []bundles.Reservation{rsv("a", "day", 1, nil)}
	if _, refusal := good.Reserve(rs, time.Now()); refusal != nil {
		t.Fatalf("with the right password: %+v", refusal)
	}

	wrong := counters.RedisOptions{Addr: srv.Addr(), Password: password + "-wrong", Logger: logs.logger()}
	bad := openRedis(t, wrong)
	_, refusal := bad.Reserve(rs, time.Now())
	if refusal == nil || refusal.Message != unavailable {
		t.Fatalf("with a wrong password: got %+v, want the unavailable refusal", refusal)
	}
	bad.State(nil, rs, time.Now())
	pingErr := bad.Ping(context.Background())
	if pingErr == nil {
		t.Fatal("ping with a wrong password succeeded")
	}
	slog.New(slog.NewTextHandler(&logs, nil)).Info("options", "redis", wrong)
	_, validateErr := counters.OpenRedis(counters.RedisOptions{Addr: "no-port", Password: password, DB: -1})

	for name, text := range map[string]string{
		"refusal":         refusal.Message,
		"logs":            logs.String(),
		"ping error":      pingErr.Error(),
		"options":         wrong.String(),
		"validation":      fmt.Sprint(validateErr),
		"options as %+v":  fmt.Sprintf("%+v", wrong),
		"options as %v":   fmt.Sprintf("%v", wrong),
		"good options %v": fmt.Sprint(counters.RedisOptions{Password: password}),
	} {
		if strings.Contains(text, password) {
			t.Errorf("%s shows the password: %s", name, text)
		}
	}
	if strings.Contains(refusal.Message, srv.Addr()) || strings.Contains(refusal.Message, strconv.Itoa(srv.Port)) {
		t.Errorf("refusal shows the address: %s", refusal.Message)
	}
	if !strings.Contains(logs.String(), "WRONGPASS") {
		t.Errorf("logs do not say why the store is unavailable:\n%s", logs.String())
	}
}

func TestRedisTLS(t *testing.T) {
	srv := redistest.New(t)
	certFile, keyFile, roots := selfSigned(t, srv.Dir)
	srv.TLS = &tls.Config{RootCAs: roots}
	srv.Args = []string{
		"--port", "0", "--tls-port", strconv.Itoa(srv.Port),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile,
		"--tls-auth-clients", "no",
	}
	srv.Start()
	now := time.Now()
	rs := []bundles.Reservation{rsv("a", "hour", 1, lim(1))}

	s := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), TLS: &tls.Config{RootCAs: roots}})
	if _, refusal := s.Reserve(rs, now); refusal != nil {
		t.Fatalf("over TLS: %+v", refusal)
	}
	if _, refusal := s.Reserve(rs, now); refusal != &rs[0] {
		t.Fatalf("over TLS, past the limit: got %+v, want the rule's refusal", refusal)
	}
	if got := s.State(nil, rs, now); got[0].Value != 1 {
		t.Errorf("state over TLS = %v, want a 1", got)
	}
	for name, opts := range map[string]counters.RedisOptions{
		"plain TCP":          {Addr: srv.Addr()},
		"an unknown root CA": {Addr: srv.Addr(), TLS: &tls.Config{}},
	} {
		opts.Logger = slog.New(slog.DiscardHandler)
		if _, refusal := openRedis(t, opts).Reserve(rs, now); refusal == nil || refusal.Message != unavailable {
			t.Errorf("with %s: got %+v, want the unavailable refusal", name, refusal)
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "toolgate test redis"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

func TestOpenRedisValidates(t *testing.T) {
	tests := []struct {
		opts counters.RedisOptions
		want []string // in the error, every one
	}{
		{counters.RedisOptions{}, []string{"no address"}},
		{counters.RedisOptions{Addr: "localhost"}, []string{`"localhost" is not host:port`}},
		{counters.RedisOptions{Addr: "localhost:6379", DB: -2, Timeout: -time.Second}, []string{"database -2", "timeout -1s"}},
		{counters.RedisOptions{Addr: "", DB: -1}, []string{"no address", "database -1"}},
	}
	for _, tt := range tests {
		_, err := counters.OpenRedis(tt.opts)
		if err == nil {
			t.Errorf("OpenRedis(%v) succeeded, want an error", tt.opts)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("OpenRedis(%v) = %q, want it to mention %q", tt.opts, err, w)
			}
		}
	}
	// A server that is not there yet is not an error (it may come up).
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	var logs logBuffer
	s, err := counters.OpenRedis(counters.RedisOptions{Addr: addr, Logger: logs.logger()})
	if err != nil {
		t.Fatalf("OpenRedis with no server yet: %v", err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "not reachable yet") {
		t.Errorf("no warning about the missing server:\n%s", logs.String())
	}
	if err := s.Ping(context.Background()); err == nil {
		t.Error("Ping succeeded with no server")
	}
}

func TestRedisClose(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, counters.RedisOptions{Addr: srv.Addr(), Logger: slog.New(slog.DiscardHandler)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, refusal := s.Reserve([]bundles.Reservation{rsv("a", "day", 1, nil)}, time.Now())
	if refusal == nil || refusal.Message != unavailable {
		t.Fatalf("reserve after Close: got %+v, want the unavailable refusal", refusal)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("ping after Close = %v, want redis.ErrClosed", err)
	}
}

// BenchmarkRedisReserve reserves and commits one counter against a local
// redis-server: one round trip per call.
func BenchmarkRedisReserve(b *testing.B) {
	srv := redistest.Start(b)
	s := openRedis(b, counters.RedisOptions{Addr: srv.Addr()})
	rs := []bundles.Reservation{rsv("bench._rate_minute", "minute", 1, lim(1<<62))}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, refusal := s.Reserve(rs, now); refusal != nil {
			b.Fatal(refusal)
		}
	}
}

// BenchmarkRedisReserveParallel is BenchmarkRedisReserve from many
// goroutines (connections are pooled).
func BenchmarkRedisReserveParallel(b *testing.B) {
	srv := redistest.Start(b)
	s := openRedis(b, counters.RedisOptions{Addr: srv.Addr()})
	rs := []bundles.Reservation{rsv("bench._rate_minute", "minute", 1, lim(1<<62))}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, refusal := s.Reserve(rs, now); refusal != nil {
				b.Error(refusal)
				return
			}
		}
	})
}

// BenchmarkRedisState reads a table of four counters: one MGET.
func BenchmarkRedisState(b *testing.B) {
	srv := redistest.Start(b)
	s := openRedis(b, counters.RedisOptions{Addr: srv.Addr()})
	table := []bundles.Reservation{
		rsv("a", "minute", 1, nil), rsv("b", "hour", 1, nil), rsv("c", "day", 1, nil), rsv("d", "day", 1, nil),
	}
	now := time.Now()
	s.Reserve(table, now)
	dst := make([]bundles.CounterValue, 0, len(table))
	b.ReportAllocs()
	for b.Loop() {
		dst = s.State(dst[:0], table, now)
	}
}

func ExampleOpenRedis() {
	var engine proxy.Evaluator // the policy engine, e.g. an *engine.Engine
	store, err := counters.OpenRedis(counters.RedisOptions{
		Addr:      "redis.internal:6379",
		Password:  os.Getenv("TOOLGATE_REDIS_PASSWORD"),
		KeyPrefix: "toolgate:counters:github:", // one set of counters per upstream server
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer store.Close()
	policy := proxy.NewPolicy(engine, proxy.WithCounters(store))
	_ = policy // the Decide hook of the proxy's transport

}
