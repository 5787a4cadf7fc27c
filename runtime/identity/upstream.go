package identity

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
)

// UpstreamCredentials are headers the proxy adds to the requests it
// forwards to the server — its own credentials there, such as a GitHub
// token — read from environment variables or files, never from a policy or
// the command line itself. The proxy applies them only to calls the policy
// allowed, after [StripAuthorization] removed the client's.
//
// The values are secrets: String, GoString and LogValue show the header
// names and where each value comes from, never the value. A nil
// *UpstreamCredentials adds nothing. Safe for concurrent use.
type UpstreamCredentials struct {
	headers atomic.Pointer[[]upstreamHeader]
	specs   []upstreamSpec
}

// upstreamSpec is one parsed --upstream-header: where the value comes from.
type upstreamSpec struct {
	name   string // canonical header name
	prefix string // literal text before the secret, e.g. "Bearer "
	kind   string // "env" or "file"
	ref    string // the variable's name, or the file's path
}

func (s upstreamSpec) String() string {
	return s.name + "=" + s.prefix + s.kind + ":" + s.ref
}

type upstreamHeader struct {
	name, value string
}

// reservedHeaders may not be set as upstream credentials: they belong to
// HTTP or to MCP's transport.
var reservedHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Content-Type": true, "Transfer-Encoding": true,
	"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true, "Upgrade": true,
	"Proxy-Connection": true, "Accept": true, "Last-Event-Id": true,
	"Mcp-Session-Id": true, "Mcp-Protocol-Version": true,
}

// ParseUpstreamHeaders parses --upstream-header values and reads their
// secrets. Each spec is NAME=SOURCE or NAME=PREFIX SOURCE, where SOURCE is
// env:VARIABLE or file:PATH and PREFIX one literal word put before the
// secret with a space:
//
//	Authorization=Bearer env:GITHUB_TOKEN    # "Bearer " + $GITHUB_TOKEN
//	X-Api-Key=file:/run/secrets/jira_key     # the file's contents, trimmed
//
// A value cannot be given literally (it would show in the process list).
// A variable that is unset or empty, a file that cannot be read or is
// empty, a value with control characters, a malformed or reserved header
// name (Host, Content-Length, Mcp-Session-Id, …) and a header named twice
// are errors; every problem is returned, joined. Files are read now and
// again on [UpstreamCredentials.Reload], not on every call.
func ParseUpstreamHeaders(specs []string) (*UpstreamCredentials, error) {
	c := &UpstreamCredentials{}
	var errs []error
	seen := map[string]bool{}
	for _, spec := range specs {
		s, err := parseUpstreamSpec(spec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[s.name] {
			errs = append(errs, fmt.Errorf("--upstream-header %s: header %s is set twice", s, s.name))
			continue
		}
		seen[s.name] = true
		c.specs = append(c.specs, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func parseUpstreamSpec(spec string) (upstreamSpec, error) {
	name, src, ok := strings.Cut(spec, "=")
	name = strings.TrimSpace(name)
	if !ok || !validHeaderName(name) {
		return upstreamSpec{}, fmt.Errorf("--upstream-header %q: want NAME=env:VARIABLE or NAME=file:PATH (optionally NAME=PREFIX env:…)", redactSpec(spec))
	}
	s := upstreamSpec{name: http.CanonicalHeaderKey(name)}
	if reservedHeaders[s.name] {
		return upstreamSpec{}, fmt.Errorf("--upstream-header %s: the proxy does not set %s", s.name, s.name)
	}
	if !strings.HasPrefix(src, "env:") && !strings.HasPrefix(src, "file:") {
		prefix, rest, ok := strings.Cut(src, " ")
		if !ok || prefix == "" || !(strings.HasPrefix(rest, "env:") || strings.HasPrefix(rest, "file:")) {
			return upstreamSpec{}, fmt.Errorf("--upstream-header %s: the value must come from env:VARIABLE or file:PATH, not be written out", s.name)
		}
		s.prefix, src = prefix+" ", rest
	}
	s.kind, s.ref, _ = strings.Cut(src, ":")
	if s.ref == "" {
		return upstreamSpec{}, fmt.Errorf("--upstream-header %s: %s: names nothing", s.name, s.kind)
	}
	return s, nil
}

// redactSpec shows a malformed spec's header name only: what follows "="
// might be a secret typed by mistake.
func redactSpec(spec string) string {
	if name, _, ok := strings.Cut(spec, "="); ok {
		return name + "=…"
	}
	return "…"
}

// Reload reads every value again (from the environment and the files).
// On error nothing changes. The proxy may call it on SIGHUP, when a secret
// file was rotated.
func (c *UpstreamCredentials) Reload() error {
	var errs []error
	headers := make([]upstreamHeader, 0, len(c.specs))
	for _, s := range c.specs {
		var secret string
		switch s.kind {
		case "env":
			secret = os.Getenv(s.ref)
			if secret == "" {
				errs = append(errs, fmt.Errorf("--upstream-header %s: environment variable %s is unset or empty", s.name, s.ref))
				continue
			}
		case "file":
			b, err := os.ReadFile(s.ref)
			if err != nil {
				errs = append(errs, fmt.Errorf("--upstream-header %s: %w", s.name, err))
				continue
			}
			secret = strings.TrimSpace(string(b))
			if secret == "" {
				errs = append(errs, fmt.Errorf("--upstream-header %s: %s is empty", s.name, s.ref))
				continue
			}
		}
		value := s.prefix + secret
		if !validHeaderValue(value) {
			errs = append(errs, fmt.Errorf("--upstream-header %s: the value from %s:%s has control characters (a header value is one line)", s.name, s.kind, s.ref))
			continue
		}
		headers = append(headers, upstreamHeader{name: s.name, value: value})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.headers.Store(&headers)
	return nil
}

// Apply sets the credentials on h (replacing any value h has for those
// names). Call it only for a request the policy allowed.
func (c *UpstreamCredentials) Apply(h http.Header) {
	if c == nil {
		return
	}
	hs := c.headers.Load()
	if hs == nil {
		return
	}
	for _, u := range *hs {
		h[u.name] = []string{u.value}
	}
}

// Names returns the header names set, in the order given.
func (c *UpstreamCredentials) Names() []string {
	if c == nil {
		return nil
	}
	out := make([]string, len(c.specs))
	for i, s := range c.specs {
		out[i] = s.name
	}
	return out
}

// String lists the headers and their sources, e.g.
// "Authorization=Bearer env:GITHUB_TOKEN"; never a value.
func (c *UpstreamCredentials) String() string {
	if c == nil {
		return ""
	}
	parts := make([]string, len(c.specs))
	for i, s := range c.specs {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

// GoString is String, so that %#v redacts too.
func (c *UpstreamCredentials) GoString() string {
	return "identity.UpstreamCredentials{" + c.String() + "}"
}

// LogValue implements slog.LogValuer: a group of header name → source,
// values redacted.
func (c *UpstreamCredentials) LogValue() slog.Value {
	if c == nil {
		return slog.GroupValue()
	}
	attrs := make([]slog.Attr, len(c.specs))
	for i, s := range c.specs {
		attrs[i] = slog.String(s.name, s.prefix+s.kind+":"+s.ref+" (value redacted)")
	}
	return slog.GroupValue(attrs...)
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 §5.1).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// validHeaderValue reports whether s may be sent as one header line: no
// control characters but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
