// Package redisconn holds what the Redis-backed stores (counters,
// approvals) and the toolgate command share about reaching a Redis server:
// the connection options, their validation, reading them from a
// redis:// or rediss:// URL, and building the go-redis client.
//
// The password is a secret: no error this package returns, and neither
// [Options.String] nor [Options.LogValue], contains it.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultPort is the port a URL without one gets.
const DefaultPort = "6379"

// Options are the settings needed to connect to one Redis server.
type Options struct {
	// Addr is the server as host:port, or the path of a Unix socket
	// (starting with "/"). Required.
	Addr string
	// Username and Password authenticate to the server (Redis ACL; an empty
	// Username with a Password is the "default" user). Empty: no AUTH.
	// Password is never logged or put in an error.
	Username string
	Password string
	// DB is the database number to select; zero is database 0.
	DB int
	// TLS, when not nil, connects with TLS using a clone of this
	// configuration (an empty ServerName is taken from Addr's host). Nil:
	// plain TCP.
	TLS *tls.Config
	// Timeout bounds connecting, each read and write, and the wait for a
	// pooled connection. Zero: the caller's default (see [Options.Validate]
	// and [NewClient]); negative is invalid.
	Timeout time.Duration
}

// Validate returns every problem with o, joined, each starting with
// "store: " (e.g. "redis counter store: database -1 is negative").
// defaultTimeout is only named in the message for a negative Timeout. The
// errors quote Addr but never Password.
func (o Options) Validate(store string, defaultTimeout time.Duration) error {
	var errs []error
	switch {
	case o.Addr == "":
		errs = append(errs, fmt.Errorf("%s: no address; give the Redis server as host:port", store))
	case strings.HasPrefix(o.Addr, "/"):
		// A Unix socket.
	default:
		if _, port, err := net.SplitHostPort(o.Addr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s: address %q is not host:port (or a socket path starting with /)", store, o.Addr))
		}
	}
	if o.DB < 0 {
		errs = append(errs, fmt.Errorf("%s: database %d is negative", store, o.DB))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%s: timeout %s is negative; use 0 for the default of %s", store, o.Timeout, defaultTimeout))
	}
	return errors.Join(errs...)
}

// String describes o without the password: it says only whether one is
// set.
func (o Options) String() string {
	return fmt.Sprintf("redis addr=%s username=%q password=%s db=%d tls=%t timeout=%s",
		o.Addr, o.Username, redacted(o.Password), o.DB, o.TLS != nil, o.Timeout)
}

// LogAttrs describes o to slog without the password, for a caller that
// adds attributes of its own.
func (o Options) LogAttrs() []slog.Attr {
	return []slog.Attr{
		slog.String("addr", o.Addr),
		slog.String("username", o.Username),
		slog.String("password", redacted(o.Password)),
		slog.Int("db", o.DB),
		slog.Bool("tls", o.TLS != nil),
		slog.Duration("timeout", o.Timeout),
	}
}

// LogValue describes o to slog without the password.
func (o Options) LogValue() slog.Value { return slog.GroupValue(o.LogAttrs()...) }

func redacted(secret string) string {
	if secret == "" {
		return "none"
	}
	return "set"
}

// ErrPasswordInURL is the error [ParseURL] returns for a URL that holds a
// password, which would show in process listings and shell history.
var ErrPasswordInURL = errors.New("do not put the password in the URL")

// ParseURL reads redis://[USER@]HOST[:PORT][/DB] — rediss:// for TLS (at
// least TLS 1.2, the server name from HOST) — into Options: PORT defaults
// to DefaultPort and DB to 0. A URL with a password (USER:PASSWORD@) is
// refused with ErrPasswordInURL; the caller sets Password from elsewhere.
// Timeout is left zero. No error quotes the URL, so none can show a
// password.
func ParseURL(raw string) (Options, error) {
	var o Options
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the URL.
		return Options{}, errors.New("not a URL such as redis://127.0.0.1:6379/0")
	}
	switch u.Scheme {
	case "redis":
	case "rediss":
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	default:
		return Options{}, fmt.Errorf("scheme %q: want redis:// or rediss://", u.Scheme)
	}
	if u.Host == "" {
		return Options{}, errors.New("no host; want redis://HOST:PORT")
	}
	o.Addr = u.Host
	if u.Port() == "" {
		o.Addr = net.JoinHostPort(u.Hostname(), DefaultPort)
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return Options{}, ErrPasswordInURL
		}
		o.Username = u.User.Username()
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return Options{}, fmt.Errorf("database %q: want a number", db)
		}
		o.DB = n
	}
	return o, nil
}

// NewClient returns a client for the server o names; o should have passed
// Validate, and Timeout should be set (zero leaves go-redis's own
// timeouts). It does not connect: the first command does. The client:
//   - speaks RESP2 without CLIENT SETINFO or the maintenance-notification
//     handshake, which every server and managed service accepts;
//   - never resends a command (a script that reached the server may have
//     run, and running it again would apply it twice) and dials once per
//     attempt;
//   - bounds dialing, reads, writes and the pool wait by Timeout, and
//     honours context deadlines.
//
// o.TLS is cloned, so the caller may change its configuration afterwards.
func NewClient(o Options) *redis.Client {
	var tlsConfig *tls.Config
	if o.TLS != nil {
		tlsConfig = o.TLS.Clone()
	}
	return redis.NewClient(&redis.Options{
		Addr:                     o.Addr,
		Username:                 o.Username,
		Password:                 o.Password,
		DB:                       o.DB,
		TLSConfig:                tlsConfig,
		Protocol:                 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1,
		DialerRetries:            1,
		DialTimeout:              o.Timeout,
		ReadTimeout:              o.Timeout,
		WriteTimeout:             o.Timeout,
		PoolTimeout:              o.Timeout,
		ContextTimeoutEnabled:    true,
	})
}

var quietOnce sync.Once

// QuietLibraryLog sends go-redis's process-wide log, which writes a line to
// stderr for every failed connection attempt, to slog.Default() at Debug
// level instead. Only the first call does anything; it is for a store that
// logs outages itself, rate-limited.
func QuietLibraryLog() { quietOnce.Do(func() { redis.SetLogger(libraryLog{}) }) }

// libraryLog is go-redis's process-wide log, sent to slog.Default() at
// Debug level.
type libraryLog struct{}

func (libraryLog) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	if l := slog.Default(); l.Enabled(ctx, slog.LevelDebug) {
		l.Log(ctx, slog.LevelDebug, fmt.Sprintf(format, v...), "from", "go-redis")
	}
}
