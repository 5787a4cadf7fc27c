package redisconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

const secret = "pw-5a4b3c2d"

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw  string
		want Options // TLS compared as nil or not
	}{
		{"redis://127.0.0.1:6379", Options{Addr: "127.0.0.1:6379"}},
		{"redis://redis.internal", Options{Addr: "redis.internal:6379"}},
		{"redis://[::1]", Options{Addr: "[::1]:6379"}},
		{"redis://[::1]:7000/2", Options{Addr: "[::1]:7000", DB: 2}},
		{"rediss://toolgate@redis.internal/3", Options{Addr: "redis.internal:6379", Username: "toolgate", DB: 3, TLS: &tls.Config{}}},
		{"redis://x:1/", Options{Addr: "x:1"}},
		{"redis://x:1/0", Options{Addr: "x:1"}},
		{"redis://x:1/15/", Options{Addr: "x:1", DB: 15}},
	}
	for _, tt := range tests {
		got, err := ParseURL(tt.raw)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tt.raw, err)
			continue
		}
		if got.Addr != tt.want.Addr || got.Username != tt.want.Username || got.DB != tt.want.DB ||
			got.Password != "" || got.Timeout != 0 || (got.TLS == nil) != (tt.want.TLS == nil) {
			t.Errorf("ParseURL(%q) = %v, want %v", tt.raw, got, tt.want)
		}
		if got.TLS != nil && got.TLS.MinVersion != tls.VersionTLS12 {
			t.Errorf("ParseURL(%q): TLS MinVersion %x, want TLS 1.2", tt.raw, got.TLS.MinVersion)
		}
	}
}

func TestParseURLRefuses(t *testing.T) {
	tests := []struct {
		raw  string
		want string // in the error
	}{
		{"http://x:1", `scheme "http"`},
		{"x:1", `scheme "x"`},
		{"127.0.0.1:6379", "not a URL"},
		{"unix:///tmp/redis.sock", `scheme "unix"`},
		{"redis://", "no host"},
		{"redis:///3", "no host"},
		{"redis://x:1/db", `database "db"`},
		{"redis://x:1/-1", `database "-1"`},
		{"redis://x:1/1/2", `database "1/2"`},
		{"::", "not a URL"},
		{"redis://u:" + secret + "@x:1", "password"},
		{"rediss://:" + secret + "@x:1/0", "password"},
		{"redis://u:" + secret + "%zz@x:1", "not a URL"},
		{"http://u:" + secret + "@x:1", `scheme "http"`},
	}
	for _, tt := range tests {
		o, err := ParseURL(tt.raw)
		if err == nil {
			t.Errorf("ParseURL(%q) = %v, want an error", tt.raw, o)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseURL(%q) = %q, want it to mention %q", tt.raw, err, tt.want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("ParseURL(%q): the error shows the password: %v", tt.raw, err)
		}
		if o != (Options{}) {
			t.Errorf("ParseURL(%q) failed but returned %v", tt.raw, o)
		}
	}
	if _, err := ParseURL("redis://u:" + secret + "@x:1"); !errors.Is(err, ErrPasswordInURL) {
		t.Errorf("password in the URL: %v, want ErrPasswordInURL", err)
	}
}

func TestValidate(t *testing.T) {
	const store = "redis test store"
	tests := []struct {
		opts Options
		want []string // in the error, every one; none: valid
	}{
		{Options{Addr: "127.0.0.1:6379"}, nil},
		{Options{Addr: "/run/redis.sock", DB: 3, Timeout: time.Second}, nil},
		{Options{Addr: "[::1]:6379", Password: secret}, nil},
		{Options{}, []string{store + ": no address"}},
		{Options{Addr: "localhost"}, []string{`address "localhost" is not host:port`}},
		{Options{Addr: "localhost:"}, []string{`address "localhost:" is not host:port`}},
		{Options{Addr: "localhost:6379", DB: -2, Timeout: -time.Second},
			[]string{store + ": database -2 is negative", store + ": timeout -1s is negative; use 0 for the default of 250ms"}},
		{Options{DB: -1, Password: secret}, []string{"no address", "database -1"}},
	}
	for _, tt := range tests {
		err := tt.opts.Validate(store, 250*time.Millisecond)
		if len(tt.want) == 0 {
			if err != nil {
				t.Errorf("Validate(%v) = %v, want nil", tt.opts, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("Validate(%v) = nil, want an error", tt.opts)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%v) = %q, want it to mention %q", tt.opts, err, w)
			}
		}
		if n := strings.Count(err.Error(), store+": "); n != len(tt.want) {
			t.Errorf("Validate(%v) = %q: %d problems, want %d", tt.opts, err, n, len(tt.want))
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Validate(%v): the error shows the password: %v", tt.opts, err)
		}
	}
}

func TestPasswordHidden(t *testing.T) {
	o := Options{Addr: "x:1", Username: "u", Password: secret, DB: 2, TLS: &tls.Config{}, Timeout: time.Second}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("options", "redis", o)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("options", "redis", o)
	for name, text := range map[string]string{
		"String": o.String(),
		"%v":     fmt.Sprintf("%v", o),
		"%+v":    fmt.Sprintf("%+v", o),
		"%s":     fmt.Sprintf("%s", o),
		"logs":   logs.String(),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("%s shows the password: %s", name, text)
		}
		if !strings.Contains(text, "set") {
			t.Errorf("%s does not say a password is set: %s", name, text)
		}
	}
	if want := `redis addr=x:1 username="u" password=set db=2 tls=true timeout=1s`; o.String() != want {
		t.Errorf("String() = %s, want %s", o.String(), want)
	}
	if s := (Options{Addr: "x:1"}).String(); !strings.Contains(s, "password=none") {
		t.Errorf("String() without a password = %s, want password=none", s)
	}
}

func TestNewClient(t *testing.T) {
	tc := &tls.Config{ServerName: "redis.internal"}
	o := Options{Addr: "127.0.0.1:1", Username: "u", Password: secret, DB: 4, TLS: tc, Timeout: 300 * time.Millisecond}
	c := NewClient(o)
	defer c.Close()
	got := c.Options()
	if got.Addr != o.Addr || got.Username != "u" || got.Password != secret || got.DB != 4 || got.Network != "tcp" {
		t.Errorf("client options: addr %s user %s db %d network %s", got.Addr, got.Username, got.DB, got.Network)
	}
	for name, d := range map[string]time.Duration{"dial": got.DialTimeout, "read": got.ReadTimeout, "write": got.WriteTimeout, "pool": got.PoolTimeout} {
		if d != o.Timeout {
			t.Errorf("%s timeout = %s, want %s", name, d, o.Timeout)
		}
	}
	// go-redis turns the -1 it is given (no retries) into 0, and a 0 into 3.
	if got.MaxRetries != 0 || got.DialerRetries != 1 || got.Protocol != 2 || !got.DisableIdentity || !got.ContextTimeoutEnabled {
		t.Errorf("client options: retries %d dialer retries %d protocol %d identity off %t context timeouts %t",
			got.MaxRetries, got.DialerRetries, got.Protocol, got.DisableIdentity, got.ContextTimeoutEnabled)
	}
	if got.TLSConfig == nil || got.TLSConfig == tc || got.TLSConfig.ServerName != "redis.internal" {
		t.Errorf("TLS config %p (given %p): want a clone", got.TLSConfig, tc)
	}

	plain := NewClient(Options{Addr: "/run/redis.sock"})
	defer plain.Close()
	if got := plain.Options(); got.TLSConfig != nil || got.Network != "unix" {
		t.Errorf("plain socket client: TLS %v network %s", got.TLSConfig, got.Network)
	}
}
