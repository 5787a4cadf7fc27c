package oci

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Defaults of the options.
const (
	// DefaultMaxSize is the largest bundle layer Pull downloads: 32 MiB.
	DefaultMaxSize = 32 << 20
	// DefaultTimeout bounds each request to a registry, body included.
	DefaultTimeout = 30 * time.Second
	// DefaultTitle is the org.opencontainers.image.title of the manifest.
	DefaultTitle = "policy bundle"
)

// maxManifestSize is the largest manifest read; the OCI distribution spec
// asks registries to accept manifests up to 4 MiB, and ours is under 1 KiB.
const maxManifestSize = 4 << 20

// retryBackoff is used for connection failures and 5xx answers: three tries,
// 250 ms then 500 ms apart. A request that timed out is not tried again.
var retryBackoff = remote.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}

// Option configures [Push], [Pull], [Resolve], [ParseDigest] and
// [RemoteOptions].
type Option func(*options)

type options struct {
	insecure bool
	caCert   string
	timeout  time.Duration
	maxSize  int64
	keychain authn.Keychain
	cache    Cache
	source   string
	created  time.Time
	title    string

	// seen records what the transports of this call ran into, so that an
	// error go-containerregistry returns without wrapping (its ping joins
	// the https and http attempts into one message) still wraps ErrTimeout
	// or ErrInsecure.
	seen *seen
}

type seen struct {
	timeout, insecure, certificate atomic.Bool
}

// mark wraps err with ErrTimeout and ErrInsecure when this call's
// transports saw them and err does not already wrap them.
func (o *options) mark(err error) error {
	var marks []error
	if o.seen.timeout.Load() && !errors.Is(err, ErrTimeout) {
		marks = append(marks, ErrTimeout)
	}
	if o.seen.insecure.Load() && !errors.Is(err, ErrInsecure) {
		marks = append(marks, ErrInsecure)
	}
	if o.seen.certificate.Load() && !errors.Is(err, ErrCertificate) {
		marks = append(marks, ErrCertificate)
	}
	if len(marks) == 0 {
		return err
	}
	return &markedError{err: err, marks: marks}
}

type markedError struct {
	err   error
	marks []error
}

func (e *markedError) Error() string   { return e.err.Error() }
func (e *markedError) Unwrap() []error { return append([]error{e.err}, e.marks...) }

func makeOptions(opts []Option) *options {
	o := &options{
		timeout: DefaultTimeout,
		maxSize: DefaultMaxSize,
		created: time.Unix(0, 0).UTC(),
		title:   DefaultTitle,
		seen:    &seen{},
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.timeout <= 0 {
		o.timeout = DefaultTimeout
	}
	if o.maxSize <= 0 {
		o.maxSize = DefaultMaxSize
	}
	if o.keychain == nil {
		o.keychain = authn.NewMultiKeychain(envKeychain{}, authn.DefaultKeychain)
	}
	return o
}

// WithInsecure allows plain HTTP to registries that are not loopback hosts
// (--insecure-registry). Off by default; loopback hosts may always use plain
// HTTP. It does not turn off certificate checks for HTTPS: use [WithCACert].
func WithInsecure(insecure bool) Option { return func(o *options) { o.insecure = insecure } }

// WithCACert trusts the PEM certificates in file, in addition to the
// system's, for registry TLS. An unreadable file or one with no certificate
// is an error of the call that uses the option.
func WithCACert(file string) Option { return func(o *options) { o.caCert = file } }

// WithTimeout bounds each request to a registry, from sending it to reading
// the last byte of its answer; default [DefaultTimeout]. A registry that
// hangs gives an error wrapping [ErrTimeout].
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithMaxSize sets the largest bundle layer Pull downloads and Push sends;
// default [DefaultMaxSize] (32 MiB). It is also the bundle's compressed-size
// limit when the bundle is read.
func WithMaxSize(n int64) Option { return func(o *options) { o.maxSize = n } }

// WithKeychain replaces the credentials lookup (by default the
// TOOLGATE_REGISTRY_* variables, then docker's config and helpers).
func WithKeychain(k authn.Keychain) Option { return func(o *options) { o.keychain = k } }

// WithCache makes Pull look in c first and put there what it pulled once
// every check has passed (a failed cache write does not fail the Pull). A
// cached bundle loads with no registry at all. See [Pull] for what is
// re-checked on a hit.
func WithCache(c Cache) Option { return func(o *options) { o.cache = c } }

// WithSource sets the org.opencontainers.image.source annotation Push writes
// (the policy repository's URL); empty by default, and then omitted.
func WithSource(url string) Option { return func(o *options) { o.source = url } }

// WithCreated sets the org.opencontainers.image.created annotation Push
// writes; default the Unix epoch, so that the digest depends on the bundle
// alone.
func WithCreated(t time.Time) Option { return func(o *options) { o.created = t.UTC() } }

// WithTitle sets the org.opencontainers.image.title annotation of the
// manifest; default [DefaultTitle].
func WithTitle(title string) Option { return func(o *options) { o.title = title } }

// RemoteOptions returns the go-containerregistry options this package uses
// for a registry: the transport (TLS roots of [WithCACert], the deadline of
// [WithTimeout], the plain-HTTP rule of [WithInsecure], retries of
// connection failures and 5xx answers) and the credentials keychain. Another
// package reaching the same registry — the signing package, through cosign's
// ociremote.WithRemoteOptions — passes these so that it talks to the registry
// exactly as Push and Pull do. Add remote.WithContext for cancellation.
//
// Parse the references given to those calls with [ParseDigest] (same
// options) so that their scheme follows the same plain-HTTP rule.
func RemoteOptions(opts ...Option) ([]remote.Option, error) {
	o := makeOptions(opts)
	rt, err := o.baseTransport()
	if err != nil {
		return nil, err
	}
	return []remote.Option{
		remote.WithTransport(rt),
		remote.WithAuthFromKeychain(o.keychain),
		remote.WithRetryBackoff(retryBackoff),
		remote.WithUserAgent("toolgate"),
	}, nil
}

func (o *options) remote(ctx context.Context) ([]remote.Option, error) {
	ro, err := RemoteOptions(func(dst *options) { *dst = *o })
	if err != nil {
		return nil, err
	}
	return append(ro, remote.WithContext(ctx)), nil
}

// roundTripper is the transport for requests this package makes itself:
// the base transport with go-containerregistry's retries and user agent,
// as remote.WithTransport would wrap it.
func (o *options) roundTripper() (http.RoundTripper, error) {
	rt, err := o.baseTransport()
	if err != nil {
		return nil, err
	}
	rt = transport.NewRetry(rt, transport.WithRetryBackoff(retryBackoff),
		transport.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusInternalServerError,
			http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout))
	return transport.NewUserAgent(rt, "toolgate"), nil
}

// baseTransport is the plain-HTTP guard over the per-request deadline over
// a shared *http.Transport with the right TLS roots.
func (o *options) baseTransport() (http.RoundTripper, error) {
	ht, err := sharedTransport(o.caCert)
	if err != nil {
		return nil, err
	}
	return &schemeGuard{insecure: o.insecure, seen: o.seen, inner: &deadlineTransport{inner: ht, timeout: o.timeout, seen: o.seen}}, nil
}

// transports holds one *http.Transport per set of TLS roots, so that
// connections are reused across calls. Keyed by the CA file's sha256 ("" for
// the system roots alone).
var transports sync.Map // string → *http.Transport

func sharedTransport(caFile string) (*http.Transport, error) {
	var pemBytes []byte
	key := ""
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the registry CA certificate: %w", err)
		}
		pemBytes = b
		key = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	if t, ok := transports.Load(key); ok {
		return t.(*http.Transport), nil
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if pemBytes != nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("reading the registry CA certificate %s: no PEM certificate in it", caFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	actual, _ := transports.LoadOrStore(key, t)
	return actual.(*http.Transport), nil
}

// schemeGuard refuses plain HTTP to hosts that are not loopback unless
// insecure. go-containerregistry falls back to HTTP for private addresses;
// this keeps the rule of architecture.md instead.
type schemeGuard struct {
	insecure bool
	seen     *seen
	inner    http.RoundTripper
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.insecure && !isLoopback(req.URL.Hostname()) {
		g.seen.insecure.Store(true)
		return nil, fmt.Errorf("%w to %s: it is not a loopback host; allow it with --insecure-registry (oci.WithInsecure)", ErrInsecure, req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// deadlineTransport gives each request timeout to be sent and answered, body
// included.
type deadlineTransport struct {
	inner   http.RoundTripper
	timeout time.Duration
	seen    *seen
}

func (t *deadlineTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, t.translate(req, ctx, err)
	}
	resp.Body = &deadlineBody{ReadCloser: resp.Body, t: t, req: req, ctx: ctx, cancel: cancel}
	return resp, nil
}

// translate turns the expiry of this transport's own deadline into
// ErrTimeout. It also wraps context.DeadlineExceeded, which tells
// go-containerregistry not to retry.
func (t *deadlineTransport) translate(req *http.Request, ctx context.Context, err error) error {
	var cert *tls.CertificateVerificationError
	if errors.As(err, &cert) {
		t.seen.certificate.Store(true)
		return fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && req.Context().Err() == nil {
		t.seen.timeout.Store(true)
		return fmt.Errorf("%w: %s %s got no complete answer within %s (%w)", ErrTimeout, req.Method, req.URL.Redacted(), t.timeout, context.DeadlineExceeded)
	}
	return err
}

type deadlineBody struct {
	io.ReadCloser
	t      *deadlineTransport
	req    *http.Request
	ctx    context.Context
	cancel context.CancelFunc
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = b.t.translate(b.req, b.ctx, err)
	}
	return n, err
}

func (b *deadlineBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// envKeychain gives the TOOLGATE_REGISTRY_* credentials, when set, for every
// registry.
type envKeychain struct{}

func (envKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	user, pass := os.Getenv(EnvUsername), os.Getenv(EnvPassword)
	if user == "" && pass == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}), nil
}

var _ authn.Keychain = envKeychain{}
