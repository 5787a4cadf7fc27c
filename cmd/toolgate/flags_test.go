package main

import (
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "100MiB": 100 << 20, "64 KiB": 64 << 10, "2GB": 2e9, "10B": 10, "1GiB": 1 << 30} {
		var s byteSize
		if err := s.Set(in); err != nil || int64(s) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "ten", "100XB", "9999999999GiB"} {
		var s byteSize
		if err := s.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, s)
		}
	}
}

func TestRedisOptions(t *testing.T) {
	t.Setenv("TOOLGATE_REDIS_PASSWORD", "s3cret")
	o, err := redisOptions("rediss://toolgate@redis.internal/3")
	if err != nil {
		t.Fatal(err)
	}
	if o.Addr != "redis.internal:6379" || o.Username != "toolgate" || o.DB != 3 || o.TLS == nil || o.Password != "s3cret" {
		t.Fatalf("got %+v", o)
	}
	for _, bad := range []string{"http://x:1", "redis://", "redis://u:pw@x:1", "redis://x:1/db", "::"} {
		if _, err := redisOptions(bad); err == nil {
			t.Errorf("redisOptions(%q): no error", bad)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("redisOptions(%q): the error shows the password: %v", bad, err)
		}
	}
}

// TestRedisCounterPrefix: no two servers' counter keys can meet; plain
// names keep the prefix they always had.
func TestRedisCounterPrefix(t *testing.T) {
	if got := redisCounterPrefix("github"); got != "toolgate:counters:github:" {
		t.Errorf("github: %q", got)
	}
	a, ab := redisCounterPrefix("a")+"b:x.c", redisCounterPrefix("a:b")+"x.c"
	if a == ab {
		t.Errorf("server a, tool b:x and server a:b, tool x share the key %q", a)
	}
	if got := redisCounterPrefix("a/b c"); got != "toolgate:counters:a%2Fb%20c:" {
		t.Errorf("a/b c: %q", got)
	}
}
