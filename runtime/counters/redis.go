package counters

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/internal/redisconn"
)

// Defaults for [RedisOptions].
const (
	DefaultRedisKeyPrefix = "toolgate:counters:"
	DefaultRedisTimeout   = 250 * time.Millisecond
)

// How long a Redis key outlives its window, so that replicas whose clocks
// disagree by less than this still read the same value; and how often a
// store that stays unavailable logs again.
const (
	redisExpirySlack = time.Minute
	redisLogEvery    = time.Minute
)

// redisUnavailable is the refusal message when the store cannot be reached
// and FailOpen is off. It names neither the address nor the credentials.
const redisUnavailable = "toolgate denied this call because its shared counter store is unavailable; tell the operator."

// RedisOptions configures [OpenRedis]: plain data, as a user writes it in
// the proxy's configuration. Only Addr is required.
type RedisOptions struct {
	// Addr is the server as host:port, or the path of a Unix socket
	// (starting with "/"). Required.
	Addr string
	// Username and Password authenticate to the server (Redis ACL; an empty
	// Username with a Password is the "default" user). Empty: no AUTH.
	// Password is never logged or put in an error; String and LogValue
	// leave it out.
	Username string
	Password string
	// DB is the database number to select; zero is database 0.
	DB int
	// TLS, when not nil, connects with TLS using this configuration (it is
	// cloned; an empty ServerName is taken from Addr's host). Nil: plain TCP.
	TLS *tls.Config
	// KeyPrefix starts every key the store writes (default
	// DefaultRedisKeyPrefix). Give each set of counters that must not be
	// shared its own prefix, e.g. one per upstream server.
	KeyPrefix string
	// Timeout bounds each operation — one Reserve, one release, one State —
	// including connecting and waiting for a pooled connection (default
	// DefaultRedisTimeout). An operation that runs out of time counts as the
	// store being unavailable.
	Timeout time.Duration
	// FailOpen allows calls, uncounted, while the store is unavailable. The
	// zero value fails closed: Reserve refuses every call it cannot count.
	FailOpen bool
	// Logger receives the store's errors, at most one line a minute while
	// the store stays unavailable, and a line when it is reachable again
	// (default slog.Default()).
	Logger *slog.Logger
}

// String describes the options without the password.
func (o RedisOptions) String() string {
	return fmt.Sprintf("%s key_prefix=%q fail_open=%t", o.conn(), o.KeyPrefix, o.FailOpen)
}

// LogValue describes the options to slog without the password.
func (o RedisOptions) LogValue() slog.Value {
	return slog.GroupValue(append(o.conn().LogAttrs(),
		slog.String("key_prefix", o.KeyPrefix),
		slog.Bool("fail_open", o.FailOpen),
	)...)
}

// conn is the connection part of o.
func (o RedisOptions) conn() redisconn.Options {
	return redisconn.Options{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLS, Timeout: o.Timeout}
}

// Redis is a counter store kept in a Redis server, so that several proxy
// replicas pointed at the same server and KeyPrefix share their limits. It
// has the same methods and semantics as [Store] (calendar-aligned UTC
// windows, reservations taken in order, a refusal releases the ones before
// it, a nil limit only counts, release rolls back at most once), is safe for
// concurrent use, and must be closed with Close by whoever opened it.
//
// Each counter in each window is one key, KeyPrefix + counter key + ":" +
// window start (Unix seconds, UTC), holding an integer; it expires a minute
// after its window ends. Reserve is one round trip: a Lua script checks
// every limit, then increments every counter, so concurrent reservations
// from any number of replicas never overshoot a limit. A release is one
// more round trip (a script that decrements the counters whose keys still
// exist), State one MGET.
//
// When the server cannot be reached, answers with an error, or takes longer
// than Timeout, the store is unavailable: Reserve refuses the call with a
// [bundles.Reservation] whose Rule is empty and whose Message asks the user
// to tell the operator (or, with FailOpen, allows it uncounted and returns a
// release that does nothing), State reads 0 for every counter, and a
// release that fails is lost (the quota stays spent). The error is logged
// once when the store becomes unavailable, then at most once a minute, and
// recovery is logged too. The store recovers by itself when the server comes
// back (after many failed connection attempts, go-redis probes about once a
// second, so the first calls may still be refused for that long). Commands are never retried, since a reservation
// that reached the server may have been applied: a Reserve that timed out
// may still have counted its call (the limit errs on the safe side).
//
// The counters live as long as the server keeps them: with persistence off
// (or after a failover to a replica that had not seen the latest writes)
// a server restart resets them. Redis Cluster is not supported: a
// reservation's keys must live on one server.
type Redis struct {
	client   *redis.Client
	prefix   string
	timeout  time.Duration
	failOpen bool
	log      *slog.Logger

	failing atomic.Bool // mirrors health.down, read without the lock
	health  struct {
		mu         sync.Mutex // guards down, lastLog, suppressed
		down       bool
		lastLog    time.Time
		suppressed int // failures not logged since lastLog
	}

	closeOnce sync.Once
	closeErr  error
}

// OpenRedis returns a store using the server opts names. It checks the
// options (every problem is reported) and pings the server once: a server
// that cannot be reached yet is logged, not an error, since it may come up
// later; call [Redis.Ping] to insist on it. Call Close to release the
// connections.
//
// go-redis keeps one log for the whole process, which writes a line to
// stderr for every failed connection attempt; the first OpenRedis sends it
// to slog.Default() at Debug level instead, so that an outage is logged by
// the store's own rate-limited lines.
func OpenRedis(opts RedisOptions) (*Redis, error) {
	if err := opts.conn().Validate("redis counter store", DefaultRedisTimeout); err != nil {
		return nil, err
	}
	redisconn.QuietLibraryLog()
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultRedisKeyPrefix
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultRedisTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Redis{
		// The client never resends a command: a script that reached the
		// server may have run, and running it again would count a call twice.
		client:   redisconn.NewClient(opts.conn()),
		prefix:   opts.KeyPrefix,
		timeout:  opts.Timeout,
		failOpen: opts.FailOpen,
		log:      opts.Logger,
	}
	if err := r.Ping(context.Background()); err != nil {
		r.log.Warn("redis counter store not reachable yet", "addr", opts.Addr, "fail_open", opts.FailOpen, "err", err)
	}
	return r, nil
}

// Ping checks that the server answers within Timeout (and ctx).
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("pinging redis counter store: %w", err)
	}
	return nil
}

// Close closes the store's connections. Afterwards every operation finds
// the store unavailable. Close is safe to call more than once.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.client.Close() })
	return r.closeErr
}

// reserveScript checks, then takes, a call's reservations. KEYS[i] is
// reservation i's counter in its window; ARGV holds three values per
// reservation: the amount, the limit ("" for none, "refuse" for an
// invalid reservation (no amount) or a window
// the store does not know) and the key's time to live in seconds. It
// returns the 0-based index of the first reservation refused, having
// written nothing, or -1 having incremented every counter. A sum that
// reaches ±2^63 is refused, as in the memory store (Lua's numbers are
// doubles: a sum within about 2^10 of the int64 bounds is refused here
// where the memory store, exact, would take it), so that INCRBY never
// fails half-way through. A counter named
// twice sees its own earlier amount, as in the memory store.
var reserveScript = redis.NewScript(`
local seen = {}
for i, key in ipairs(KEYS) do
	local limit = ARGV[3*i-1]
	if limit == 'refuse' then
		return i - 1
	end
	local cur = seen[key]
	if cur == nil then
		cur = tonumber(redis.call('GET', key) or '0')
		if cur == nil then
			return redis.error_reply('toolgate counter ' .. key .. ' does not hold a number')
		end
	end
	cur = cur + tonumber(ARGV[3*i-2])
	if cur >= 9223372036854775808 or cur <= -9223372036854775808 then
		return i - 1
	end
	if limit ~= '' and cur > tonumber(limit) then
		return i - 1
	end
	seen[key] = cur
end
for i, key in ipairs(KEYS) do
	redis.call('INCRBY', key, ARGV[3*i-2])
	redis.call('EXPIRE', key, ARGV[3*i])
end
return -1
`)

// releaseScript takes back reservations: ARGV[i] is the amount to subtract
// from KEYS[i]. A key that has expired is left alone, not recreated.
var releaseScript = redis.NewScript(`
for i, key in ipairs(KEYS) do
	if redis.call('EXISTS', key) == 1 then
		redis.call('DECRBY', key, ARGV[i])
	end
end
return 0
`)

// windowSeconds returns the length of a window [windowStart] knows. A UTC
// day is always 86400 Unix seconds.
func windowSeconds(window string) int64 {
	switch window {
	case "minute":
		return 60
	case "hour":
		return 3600
	}
	return 86400
}

func (r *Redis) key(counter string, start int64) string {
	return r.prefix + counter + ":" + strconv.FormatInt(start, 10)
}

// Reserve is [Store.Reserve] against the shared server, in one round trip.
// When the store is unavailable it refuses (see [Redis]) or, with FailOpen,
// allows with a release that does nothing. release, when the caller calls
// it, costs one more round trip, bounded by Timeout.
func (r *Redis) Reserve(rs []bundles.Reservation, now time.Time) (release func(), refusal *bundles.Reservation) {
	if len(rs) == 0 {
		return func() {}, nil
	}
	keys := make([]string, len(rs))
	args := make([]any, 0, 3*len(rs))
	for i := range rs {
		start, ok := windowStart(rs[i].Window, now)
		if !ok || rs[i].Invalid { // refused in its turn
			keys[i] = r.prefix + rs[i].Key
			args = append(args, int64(0), "refuse", int64(0))
			continue
		}
		keys[i] = r.key(rs[i].Key, start)
		var lim any = ""
		if rs[i].Limit != nil {
			lim = *rs[i].Limit
		}
		ttl := start + windowSeconds(rs[i].Window) - now.Unix() + int64(redisExpirySlack/time.Second)
		args = append(args, rs[i].Amount, lim, ttl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	refused, err := reserveScript.Run(ctx, r.client, keys, args...).Int64()
	cancel()
	switch {
	case err != nil:
		r.failed("reserve", err)
		if r.failOpen {
			return failOpen(rs)
		}
		return nil, &bundles.Reservation{Message: redisUnavailable}
	case refused >= 0 && refused < int64(len(rs)):
		r.ok()
		return nil, &rs[refused]
	case refused != -1:
		r.failed("reserve", fmt.Errorf("reservation script answered %d for %d reservations", refused, len(rs)))
		if r.failOpen {
			return failOpen(rs)
		}
		return nil, &bundles.Reservation{Message: redisUnavailable}
	}
	r.ok()
	amounts := make([]any, len(rs))
	for i := range rs {
		amounts[i] = rs[i].Amount
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			if err := releaseScript.Run(ctx, r.client, keys, amounts...).Err(); err != nil {
				r.failed("release", err)
				return
			}
			r.ok()
		})
	}, nil
}

// State is [Store.State] against the shared server, in one MGET. When the
// store is unavailable every counter reads 0; so does a key that does not
// hold an integer.
func (r *Redis) State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue {
	keys := make([]string, 0, len(table))
	for i := range table {
		if start, ok := windowStart(table[i].Window, now); ok {
			keys = append(keys, r.key(table[i].Key, start))
		}
	}
	var vals []any
	if len(keys) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		var err error
		vals, err = r.client.MGet(ctx, keys...).Result()
		cancel()
		if err != nil || len(vals) != len(keys) {
			if err == nil {
				err = fmt.Errorf("MGET answered %d values for %d keys", len(vals), len(keys))
			}
			r.failed("state", err)
			vals = nil
		} else {
			r.ok()
		}
	}
	j := 0
	for i := range table {
		var n int64
		if _, ok := windowStart(table[i].Window, now); ok {
			if vals != nil {
				if s, ok := vals[j].(string); ok {
					n, _ = strconv.ParseInt(s, 10, 64)
				}
			}
			j++
		}
		dst = append(dst, bundles.CounterValue{Key: table[i].Key, Value: n})
	}
	return dst
}

// failed records that op could not reach the store, logging it when the
// store has just become unavailable or has not logged for redisLogEvery.
func (r *Redis) failed(op string, err error) {
	h := &r.health
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	switch {
	case !h.down:
		h.down, h.lastLog, h.suppressed = true, now, 0
		r.failing.Store(true)
		r.log.Error("redis counter store unavailable; "+r.consequence(), "op", op, "err", err)
	case now.Sub(h.lastLog) >= redisLogEvery:
		r.log.Error("redis counter store still unavailable; "+r.consequence(), "op", op, "err", err,
			"failures_since_last_log", h.suppressed+1)
		h.lastLog, h.suppressed = now, 0
	default:
		h.suppressed++
	}
}

func (r *Redis) consequence() string {
	if r.failOpen {
		return "calls are allowed uncounted (fail open)"
	}
	return "calls with counters are denied (fail closed)"
}

// ok records a successful operation, logging the recovery of a store that
// was unavailable.
func (r *Redis) ok() {
	if !r.failing.Load() {
		return
	}
	h := &r.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		h.down = false
		r.failing.Store(false)
		r.log.Info("redis counter store reachable again", "failures_not_logged", h.suppressed)
	}
}

// The methods the proxy's Counters interface asks for, plus Close.
var _ interface {
	Reserve(rs []bundles.Reservation, now time.Time) (release func(), refusal *bundles.Reservation)
	State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue
	io.Closer
} = (*Redis)(nil)

// failOpen is Reserve's answer while Redis is unavailable and the store is
// configured to let counted calls through uncounted: it still refuses what
// no counter value could let through — a reservation without an amount, or
// in a window the store does not know.
func failOpen(rs []bundles.Reservation) (func(), *bundles.Reservation) {
	for i := range rs {
		if _, ok := windowStart(rs[i].Window, time.Now()); rs[i].Invalid || !ok {
			return nil, &rs[i]
		}
	}
	return func() {}, nil
}
