package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate/internal/redisconn"
	"github.com/toolgate/toolgate/runtime/counters"
)

// byteSize is a flag holding a size in bytes, written as a whole number with
// an optional unit: B, KB/MB/GB (powers of 1000) or KiB/MiB/GiB (powers of
// 1024); "0" is zero.
type byteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

func (s *byteSize) Set(v string) error {
	t := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || (n > 0 && n > (1<<62)/mult) {
		return fmt.Errorf("%q is not a size such as 100MiB", v)
	}
	*s = byteSize(n * mult)
	return nil
}

func (s *byteSize) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *byteSize) Type() string { return "size" }

// oneOf is a string flag that takes one of a few words, so that a bad one
// is refused where it is set (on the command line, or at its line of the
// config file).
type oneOf struct {
	v     *string
	words []string
}

// newOneOf returns the flag value for *p, set to def, taking words.
func newOneOf(p *string, def string, words ...string) *oneOf {
	*p = def
	return &oneOf{p, words}
}

func (o *oneOf) Set(v string) error {
	if !slices.Contains(o.words, v) {
		return fmt.Errorf("must be %s or %s, not %q", strings.Join(o.words[:len(o.words)-1], ", "), o.words[len(o.words)-1], v)
	}
	*o.v = v
	return nil
}

func (o *oneOf) String() string { return *o.v }

func (o *oneOf) Type() string { return "string" }

// redisPasswordEnv names the variable --redis takes the password from.
const redisPasswordEnv = "TOOLGATE_REDIS_PASSWORD"

// redisOptions reads the --redis URL (see [redisconn.ParseURL]): redis://
// or rediss:// (TLS), an optional user name, host[:port] and an optional
// database number. A password in the URL is refused (it would show in
// process listings and shell history): it comes from
// TOOLGATE_REDIS_PASSWORD. The caller sets the timeout (--redis-timeout)
// and the rest.
func redisOptions(raw string) (counters.RedisOptions, error) {
	c, err := redisconn.ParseURL(raw)
	if errors.Is(err, redisconn.ErrPasswordInURL) {
		return counters.RedisOptions{}, fmt.Errorf("%w; set %s", err, redisPasswordEnv)
	}
	if err != nil {
		return counters.RedisOptions{}, err
	}
	return counters.RedisOptions{Addr: c.Addr, Username: c.Username, Password: os.Getenv(redisPasswordEnv), DB: c.DB, TLS: c.TLS}, nil
}
