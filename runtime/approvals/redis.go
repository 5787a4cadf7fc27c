package approvals

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/internal/redisconn"
)

// Defaults for [RedisOptions] and the Redis store.
const (
	DefaultRedisKeyPrefix = "toolgate:approvals:"
	DefaultRedisTimeout   = 2 * time.Second
	// DefaultPollEvery is how often a Redis store's Wait reads the request
	// again, in case a notification was lost (a reconnection).
	DefaultPollEvery = time.Second
)

// WithPollEvery sets how often [Redis.Wait] reads the request again besides
// being notified; default DefaultPollEvery. The Disk store ignores it.
func WithPollEvery(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.pollEvery = d
		}
	}
}

// RedisOptions configures [OpenRedis]: plain data, as a user writes it in
// the proxy's configuration (the same fields as the counter store's). Only
// Addr is required.
type RedisOptions struct {
	// Addr is the server as host:port, or the path of a Unix socket
	// (starting with "/"). Required.
	Addr string
	// Username and Password authenticate to the server (an empty Username
	// with a Password is the "default" user); empty: no AUTH. Password is
	// never logged or put in an error; String and LogValue leave it out.
	Username string
	Password string
	// DB is the database number; zero is database 0.
	DB int
	// TLS, when not nil, connects with TLS using a clone of it. Nil: plain
	// TCP.
	TLS *tls.Config
	// KeyPrefix starts every key and the channel the store uses (default
	// DefaultRedisKeyPrefix). Replicas share a queue when they share the
	// server, DB and KeyPrefix.
	KeyPrefix string
	// Timeout bounds each operation, connecting included (default
	// DefaultRedisTimeout).
	Timeout time.Duration
}

// String describes the options without the password.
func (o RedisOptions) String() string {
	return fmt.Sprintf("%s key_prefix=%q", o.conn(), o.KeyPrefix)
}

// LogValue describes the options to slog without the password.
func (o RedisOptions) LogValue() slog.Value {
	return slog.GroupValue(append(o.conn().LogAttrs(), slog.String("key_prefix", o.KeyPrefix))...)
}

// conn is the connection part of o.
func (o RedisOptions) conn() redisconn.Options {
	return redisconn.Options{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLS, Timeout: o.Timeout}
}

// Redis is the approval store shared by proxy replicas through one Redis
// server: a request opened through one replica can be decided through any
// replica's admin API and consumed by any replica. It is safe for concurrent
// use; whoever opens it must Close it.
//
// Each request is a hash, KeyPrefix+"r:"+id, holding its immutable part as
// JSON ("doc") and its status, deadline (Unix ms), decider, decision time,
// reason and use time as fields; KeyPrefix+"b:"+binding key names the
// latest request of a binding; sorted sets KeyPrefix+"all" (by creation)
// and KeyPrefix+"open" (pending and approved, by deadline) index them. Every
// transition is one Lua script, so it is atomic across replicas: of two
// replicas consuming one approval, exactly one sees it approved. Keys expire
// the retention after the request's deadline. Each transition is published
// on KeyPrefix+"events" (the request id), which wakes Wait in every replica;
// Wait also reads the request again every poll interval and at the deadline.
//
// Deadlines are compared with the clock of the replica that asks, so keep
// the replicas' clocks in sync. Commands are never resent (a script that
// reached the server may have run); an operation that fails returns its
// error, and Consume then lets nothing through. Requests live as long as the
// server keeps them: with persistence off, a server restart loses them
// (pending calls must then be asked again). Redis Cluster is not supported.
type Redis struct {
	client  *redis.Client
	prefix  string
	channel string
	timeout time.Duration
	o       options

	subOnce sync.Once
	sub     *redis.PubSub
	subDone chan struct{}

	wmu     sync.Mutex         // guards waiters, closed
	waiters map[string]*waiter // request id → waiters in this process
	closed  bool

	stop      chan struct{}
	done      chan struct{} // closed when the sweeper has stopped
	closeOnce sync.Once
	closeErr  error
}

// waiter is the channel closed at a request's next transition, and how many
// Waits hold it.
type waiter struct {
	ch chan struct{}
	n  int
}

var _ Store = (*Redis)(nil)

// OpenRedis returns a store on the server cfg names and starts its
// background sweep. It checks cfg (every problem is reported) and pings the
// server once: one that cannot be reached yet is logged, not an error;
// operations fail until it can. Call Close to release the connections.
func OpenRedis(cfg RedisOptions, opts ...Option) (*Redis, error) {
	if err := cfg.conn().Validate("redis approval store", DefaultRedisTimeout); err != nil {
		return nil, err
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultRedisKeyPrefix
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultRedisTimeout
	}
	r := &Redis{
		// The client never resends a command: a script that reached the
		// server may have run.
		client:  redisconn.NewClient(cfg.conn()),
		prefix:  cfg.KeyPrefix,
		channel: cfg.KeyPrefix + "events",
		timeout: cfg.Timeout,
		o:       buildOptions(opts),
		waiters: make(map[string]*waiter),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := r.Ping(context.Background()); err != nil {
		r.o.log.Warn("redis approval store not reachable yet", "addr", cfg.Addr, "err", err)
	}
	go runSweeper(&r.o, r.Sweep, r.stop, r.done)
	return r, nil
}

// Ping checks that the server answers within the timeout (and ctx).
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("pinging redis approval store: %w", err)
	}
	return nil
}

func (r *Redis) reqKey(id string) string { return r.prefix + "r:" + id }
func (r *Redis) bindKey(k string) string { return r.prefix + "b:" + k }
func (r *Redis) allKey() string          { return r.prefix + "all" }
func (r *Redis) openKey() string         { return r.prefix + "open" }
func (r *Redis) reqPrefix() string       { return r.prefix + "r:" }
func (r *Redis) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// The scripts. A request hash has the fields doc (immutable JSON), status,
// exp (deadline, Unix ms), bkey (binding key), and once set by (decider),
// at (decision time, Unix ms), reason and used (use time, Unix ms). An open
// request (pending or approved) past exp is moved to expired by whichever
// script meets it first, which removes it from the open set and publishes
// its id.

// requestScript joins the binding's open request or opens a new one.
// KEYS: binding key, new request key, all set, open set. ARGV: request key
// prefix, new id, now, doc, deadline, time to live (ms), binding key hex,
// channel. It returns {created, id, hash of the joined request or {}, hash
// of a request it expired or {}}.
var requestScript = redis.NewScript(`
local now = tonumber(ARGV[3])
local expired = {}
local cur = redis.call('GET', KEYS[1])
if cur then
	local rk = ARGV[1] .. cur
	local h = redis.call('HMGET', rk, 'status', 'exp')
	if h[1] == 'pending' or h[1] == 'approved' then
		if tonumber(h[2]) > now then
			return {0, cur, redis.call('HGETALL', rk), {}}
		end
		redis.call('HSET', rk, 'status', 'expired')
		redis.call('ZREM', KEYS[4], cur)
		redis.call('PUBLISH', ARGV[8], cur)
		expired = redis.call('HGETALL', rk)
	end
end
redis.call('HSET', KEYS[2], 'doc', ARGV[4], 'status', 'pending', 'exp', ARGV[5], 'bkey', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
return {1, ARGV[2], {}, expired}
`)

// consumeScript uses the binding's latest request if it is approved and
// before its deadline. KEYS: binding key, open set. ARGV: request key
// prefix, now, binding key hex, channel. It returns {code, hash}: code 1
// used, 2 expired by this call, 0 nothing changed (hash {} when the binding
// has no request).
var consumeScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
	return {0, {}}
end
local rk = ARGV[1] .. cur
local h = redis.call('HMGET', rk, 'status', 'exp', 'bkey')
if not h[1] or h[3] ~= ARGV[3] then
	return {0, {}}
end
local code = 0
if (h[1] == 'pending' or h[1] == 'approved') and tonumber(h[2]) <= tonumber(ARGV[2]) then
	redis.call('HSET', rk, 'status', 'expired')
	redis.call('ZREM', KEYS[2], cur)
	redis.call('PUBLISH', ARGV[4], cur)
	code = 2
elseif h[1] == 'approved' then
	redis.call('HSET', rk, 'status', 'used', 'used', ARGV[2])
	redis.call('ZREM', KEYS[2], cur)
	redis.call('PUBLISH', ARGV[4], cur)
	code = 1
end
return {code, redis.call('HGETALL', rk)}
`)

// decideScript approves or denies a pending request. KEYS: request key,
// open set. ARGV: id, now, new status, decider, reason, channel. It returns
// {code, hash}: code 1 decided, 2 expired by this call, 0 not pending, -1
// no such request.
var decideScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'status', 'exp')
if not h[1] then
	return {-1, {}}
end
local now = tonumber(ARGV[2])
if (h[1] == 'pending' or h[1] == 'approved') and tonumber(h[2]) <= now then
	redis.call('HSET', KEYS[1], 'status', 'expired')
	redis.call('ZREM', KEYS[2], ARGV[1])
	redis.call('PUBLISH', ARGV[6], ARGV[1])
	return {2, redis.call('HGETALL', KEYS[1])}
end
if h[1] ~= 'pending' then
	return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'by', ARGV[4], 'at', ARGV[2], 'reason', ARGV[5])
if ARGV[3] ~= 'approved' then
	redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('PUBLISH', ARGV[6], ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
`)

// expireScript expires one open request past its deadline. KEYS: request
// key, open set. ARGV: id, now, channel. It returns {1, hash} when it
// expired it, else {0, {}} (and drops an id that is no longer open from
// the open set).
var expireScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'status', 'exp')
if not (h[1] == 'pending' or h[1] == 'approved') then
	redis.call('ZREM', KEYS[2], ARGV[1])
	return {0, {}}
end
if tonumber(h[2]) > tonumber(ARGV[2]) then
	return {0, {}}
end
redis.call('HSET', KEYS[1], 'status', 'expired')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
`)

// Request is [Store.Request], one round trip.
func (r *Redis) Request(ctx context.Context, b Binding, rule string, approvers Approvers, timeout time.Duration) (Request, bool, error) {
	b, err := b.normalize()
	if err != nil {
		return Request{}, false, err
	}
	if r.isClosed() {
		return Request{}, false, ErrClosed
	}
	now := r.o.clock()
	req := Request{
		ID:        newID(),
		Binding:   b,
		Rule:      rule,
		Approvers: Approvers{Subjects: sortedSet(approvers.Subjects), Groups: sortedSet(approvers.Groups)},
		Status:    Pending,
		CreatedAt: now,
		ExpiresAt: now.Add(timeoutOrDefault(timeout)),
	}
	doc, err := json.Marshal(docOf(&req))
	if err != nil {
		return Request{}, false, fmt.Errorf("encoding approval request: %w", err)
	}
	key := b.key()
	ttl := req.ExpiresAt.Add(r.o.retention).Sub(now).Milliseconds()
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	res, err := requestScript.Run(ctx, r.client,
		[]string{r.bindKey(key), r.reqKey(req.ID), r.allKey(), r.openKey()},
		r.reqPrefix(), req.ID, now.UnixMilli(), doc, req.ExpiresAt.UnixMilli(), ttl, key, r.channel).Slice()
	if err != nil {
		return Request{}, false, fmt.Errorf("opening approval request in redis: %w", err)
	}
	if len(res) != 4 {
		return Request{}, false, fmt.Errorf("opening approval request in redis: script answered %d values", len(res))
	}
	var evs []Event
	defer func() { r.o.emit(evs) }()
	if h := hashOf(res[3]); len(h) > 0 {
		old, err := parseHash(h)
		if err != nil {
			return Request{}, false, err
		}
		evs = append(evs, eventFor(EventExpired, old, now))
	}
	if created, _ := res[0].(int64); created == 0 {
		joined, err := parseHash(hashOf(res[2]))
		if err != nil {
			return Request{}, false, err
		}
		return joined, false, nil
	}
	evs = append(evs, eventFor(EventRequested, req, now))
	return req, true, nil
}

// Consume is [Store.Consume], one round trip.
func (r *Redis) Consume(ctx context.Context, b Binding) (Request, bool, error) {
	b, err := b.normalize()
	if err != nil {
		return Request{}, false, err
	}
	if r.isClosed() {
		return Request{}, false, ErrClosed
	}
	now := r.o.clock()
	key := b.key()
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	res, err := consumeScript.Run(ctx, r.client, []string{r.bindKey(key), r.openKey()},
		r.reqPrefix(), now.UnixMilli(), key, r.channel).Slice()
	if err != nil {
		return Request{}, false, fmt.Errorf("using approval in redis: %w", err)
	}
	if len(res) != 2 {
		return Request{}, false, fmt.Errorf("using approval in redis: script answered %d values", len(res))
	}
	h := hashOf(res[1])
	if len(h) == 0 {
		return Request{}, false, nil
	}
	req, err := parseHash(h)
	if err != nil {
		return Request{}, false, err
	}
	switch code, _ := res[0].(int64); code {
	case 1:
		r.o.emit([]Event{eventFor(EventUsed, req, now)})
		return req, true, nil
	case 2:
		r.o.emit([]Event{eventFor(EventExpired, req, now)})
	}
	return req, false, nil
}

// Decide is [Store.Decide]: one read to check who decides (the requester
// and the approvers never change), then one script for the transition.
func (r *Redis) Decide(ctx context.Context, id string, approve bool, by Identity, reason string) (Request, error) {
	cur, err := r.Get(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Request{}, fmt.Errorf("deciding %q: %w", id, ErrNotFound)
		}
		return Request{}, err
	}
	if cur.Status == Pending {
		if err := mayDecide(&cur, by); err != nil {
			return cur, err
		}
	}
	to := Denied
	if approve {
		to = Approved
	}
	now := r.o.clock()
	sctx, cancel := r.ctx(ctx)
	defer cancel()
	res, err := decideScript.Run(sctx, r.client, []string{r.reqKey(id), r.openKey()},
		id, now.UnixMilli(), string(to), by.Subject, reason, r.channel).Slice()
	if err != nil {
		return Request{}, fmt.Errorf("deciding %s in redis: %w", id, err)
	}
	if len(res) != 2 {
		return Request{}, fmt.Errorf("deciding %s in redis: script answered %d values", id, len(res))
	}
	code, _ := res[0].(int64)
	if code == -1 {
		return Request{}, fmt.Errorf("deciding %s: %w", id, ErrNotFound)
	}
	req, err := parseHash(hashOf(res[1]))
	if err != nil {
		return Request{}, err
	}
	switch code {
	case 1:
		r.o.emit([]Event{eventFor(kindOf(to), req, now)})
		return req, nil
	case 2:
		r.o.emit([]Event{eventFor(EventExpired, req, now)})
	}
	req = req.effective(now)
	return req, statusError(&req)
}

// Get is [Store.Get], one HGETALL.
func (r *Redis) Get(ctx context.Context, id string) (Request, error) {
	if !validID(id) {
		return Request{}, fmt.Errorf("approval request %q: %w", id, ErrNotFound)
	}
	if r.isClosed() {
		return Request{}, ErrClosed
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	h, err := r.client.HGetAll(ctx, r.reqKey(id)).Result()
	if err != nil {
		return Request{}, fmt.Errorf("reading approval request %s from redis: %w", id, err)
	}
	if len(h) == 0 {
		return Request{}, fmt.Errorf("approval request %q: %w", id, ErrNotFound)
	}
	req, err := parseFields(h)
	if err != nil {
		return Request{}, err
	}
	return req.effective(r.o.clock()), nil
}

// List is [Store.List]: one ZREVRANGE and one pipeline of HGETALLs. Ids
// whose request has expired from the server are dropped from the index.
func (r *Redis) List(ctx context.Context, f Filter) ([]Request, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	ids, err := r.client.ZRevRange(ctx, r.allKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("listing approval requests in redis: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if len(ids) > 0 {
		pipe := r.client.Pipeline()
		for i, id := range ids {
			cmds[i] = pipe.HGetAll(ctx, r.reqKey(id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("listing approval requests in redis: %w", err)
		}
	}
	now := r.o.clock()
	var gone []any
	out := make([]Request, 0, len(ids))
	for i, cmd := range cmds {
		h := cmd.Val()
		if len(h) == 0 {
			gone = append(gone, ids[i])
			continue
		}
		req, err := parseFields(h)
		if err != nil {
			r.o.log.Warn("skipping an approval request redis holds in a form this version cannot read", "id", ids[i], "err", err)
			continue
		}
		req = req.effective(now)
		if f.Status == "" || req.Status == f.Status {
			out = append(out, req)
		}
	}
	if len(gone) > 0 {
		r.client.ZRem(ctx, r.allKey(), gone...)
	}
	sortNewestFirst(out)
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// Wait is [Store.Wait]. It is woken by the request's next transition made
// by any replica (published on the store's channel), reads the request
// again every poll interval in case a notification was lost, and returns at
// the deadline. A read that fails ends the wait with its error.
func (r *Redis) Wait(ctx context.Context, id string) (Request, error) {
	r.subOnce.Do(r.subscribe)
	for {
		w, err := r.watch(id)
		if err != nil {
			return Request{}, err
		}
		req, err := r.Get(ctx, id)
		if err != nil || req.Status != Pending {
			r.unwatch(id, w)
			if err != nil {
				return Request{}, fmt.Errorf("waiting for approval request %s: %w", id, err)
			}
			return req, nil
		}
		d := min(req.ExpiresAt.Sub(r.o.clock()), r.o.pollEvery)
		t := time.NewTimer(d)
		select {
		case <-w.ch:
		case <-t.C:
		case <-r.stop:
		case <-ctx.Done():
		}
		t.Stop()
		r.unwatch(id, w)
		if ctx.Err() != nil {
			return Request{}, ctx.Err()
		}
	}
}

// subscribe starts the goroutine that wakes waiters from the channel.
func (r *Redis) subscribe() {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.closed {
		return
	}
	r.sub = r.client.Subscribe(context.Background(), r.channel)
	r.subDone = make(chan struct{})
	ch := r.sub.Channel()
	go func() {
		defer close(r.subDone)
		for m := range ch {
			r.wake(m.Payload)
		}
	}()
}

func (r *Redis) watch(id string) (*waiter, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	w := r.waiters[id]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		r.waiters[id] = w
	}
	w.n++
	return w, nil
}

func (r *Redis) unwatch(id string, w *waiter) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	w.n--
	if w.n == 0 && r.waiters[id] == w {
		delete(r.waiters, id)
	}
}

func (r *Redis) wake(id string) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if w := r.waiters[id]; w != nil {
		close(w.ch)
		delete(r.waiters, id)
	}
}

func (r *Redis) isClosed() bool {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.closed
}

// Sweep is [Store.Sweep]: it expires the open requests past their deadline
// (each by one script, so two replicas sweeping at once expire, and report,
// each request once) and drops from the index the ids whose request the
// server no longer holds.
func (r *Redis) Sweep(ctx context.Context) (int, error) {
	if r.isClosed() {
		return 0, ErrClosed
	}
	now := r.o.clock()
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	ids, err := r.client.ZRangeByScore(ctx, r.openKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: 1000,
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("sweeping approval requests in redis: %w", err)
	}
	var evs []Event
	defer func() { r.o.emit(evs) }()
	var errs []error
	for _, id := range ids {
		res, err := expireScript.Run(ctx, r.client, []string{r.reqKey(id), r.openKey()}, id, now.UnixMilli(), r.channel).Slice()
		if err != nil {
			errs = append(errs, fmt.Errorf("expiring approval request %s in redis: %w", id, err))
			continue
		}
		if len(res) == 2 {
			if code, _ := res[0].(int64); code == 1 {
				req, err := parseHash(hashOf(res[1]))
				if err != nil {
					errs = append(errs, err)
					continue
				}
				evs = append(evs, eventFor(EventExpired, req, now))
			}
		}
	}
	old, err := r.client.ZRangeByScore(ctx, r.allKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.Add(-r.o.retention).UnixMilli(), 10), Count: 1000,
	}).Result()
	if err != nil {
		errs = append(errs, fmt.Errorf("sweeping approval index in redis: %w", err))
	} else if len(old) > 0 {
		pipe := r.client.Pipeline()
		exists := make([]*redis.IntCmd, len(old))
		for i, id := range old {
			exists[i] = pipe.Exists(ctx, r.reqKey(id))
		}
		if _, err := pipe.Exec(ctx); err == nil {
			var gone []any
			for i, c := range exists {
				if c.Val() == 0 {
					gone = append(gone, old[i])
				}
			}
			if len(gone) > 0 {
				r.client.ZRem(ctx, r.allKey(), gone...)
			}
		}
	}
	return len(evs), errors.Join(errs...)
}

// Close stops the sweep, wakes every Wait (with ErrClosed) and closes the
// connections. Close is safe to call more than once.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.wmu.Lock()
		r.closed = true
		sub := r.sub
		r.wmu.Unlock()
		close(r.stop)
		<-r.done
		var err error
		if sub != nil {
			err = sub.Close()
			<-r.subDone
		}
		if cerr := r.client.Close(); err == nil {
			err = cerr
		}
		r.closeErr = err
	})
	return r.closeErr
}

// doc is the immutable part of a request as the hash's doc field holds it.
type doc struct {
	ID string `json:"id"`
	Binding
	Rule      string    `json:"rule"`
	Approvers Approvers `json:"approvers"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func docOf(r *Request) doc {
	return doc{ID: r.ID, Binding: r.Binding, Rule: r.Rule, Approvers: r.Approvers, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
}

// hashOf turns a script's HGETALL reply (a flat list) into a map.
func hashOf(v any) map[string]string {
	list, _ := v.([]any)
	h := make(map[string]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		k, _ := list[i].(string)
		v, _ := list[i+1].(string)
		h[k] = v
	}
	return h
}

func parseHash(h map[string]string) (Request, error) {
	if len(h) == 0 {
		return Request{}, errors.New("reading approval request from redis: the script returned no request")
	}
	return parseFields(h)
}

func parseFields(h map[string]string) (Request, error) {
	var d doc
	if err := json.Unmarshal([]byte(h["doc"]), &d); err != nil {
		return Request{}, fmt.Errorf("reading approval request from redis: %w", err)
	}
	req := Request{
		ID: d.ID, Binding: d.Binding, Rule: d.Rule, Approvers: d.Approvers,
		CreatedAt: d.CreatedAt.UTC(), ExpiresAt: d.ExpiresAt.UTC(),
		Status: Status(h["status"]), DecidedBy: h["by"], Reason: h["reason"],
	}
	if !req.Status.Valid() {
		return Request{}, fmt.Errorf("reading approval request %s from redis: unknown status %q", d.ID, h["status"])
	}
	req.DecidedAt = msTime(h["at"])
	req.UsedAt = msTime(h["used"])
	return req, nil
}

func msTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
