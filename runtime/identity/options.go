package identity

import (
	"log/slog"
	"net/http"
	"time"
)

// Option configures [OpenGrants] and [NewJWT]. An option that does not
// concern a constructor is ignored by it.
type Option func(*settings)

type settings struct {
	now    func() time.Time
	log    *slog.Logger
	poll   time.Duration
	client *http.Client
}

func newSettings(opts []Option) settings {
	s := settings{now: time.Now, log: slog.Default(), poll: time.Second}
	for _, opt := range opts {
		opt(&s)
	}
	return s
}

// WithClock sets the clock that grant expiry, JWT exp/nbf/iat and JWKS
// refresh intervals are measured with; default time.Now.
func WithClock(now func() time.Time) Option { return func(s *settings) { s.now = now } }

// WithLogger sets where reloads, refused files and JWKS fetches are logged;
// default slog.Default(). Tokens and secrets are never logged.
func WithLogger(l *slog.Logger) Option { return func(s *settings) { s.log = l } }

// WithPollInterval sets how often [Grants.Watch] looks at the grants file
// for a change, besides file-system notifications; default 1s.
func WithPollInterval(d time.Duration) Option { return func(s *settings) { s.poll = d } }

// WithHTTPClient sets the client a [JWT] fetches its JWKS URL with; default
// a client with a 10s timeout that follows at most 5 redirects, none from
// https to plain http (but on loopback).
func WithHTTPClient(c *http.Client) Option { return func(s *settings) { s.client = c } }
