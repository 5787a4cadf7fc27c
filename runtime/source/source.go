// Package source feeds the proxy's engine from where the deployed state
// lives: the runtime stage before [engine.Engine.Swap]. [PinFile] reads a pin
// file (bundles/pin), verifies the pinned digest's signature with the pin
// file's keys, pulls the bundle by digest through a local cache, and swaps
// it in; [PinFile.Watch] does so again whenever the pin file changes or a
// SIGHUP arrives. Whatever goes wrong — a bad pin file, a bad signature, a
// registry outage with nothing cached, a bad bundle — is logged and counted,
// and the bundle in force stays.
package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/cache"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/pin"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/runtime/engine"
)

// Swapper makes a bundle active; *engine.Engine is one.
type Swapper interface {
	Swap(ctx context.Context, digest string, b *bundles.Bundle) error
}

var _ Swapper = (*engine.Engine)(nil)

// Status is what a [PinFile] last did, for /status and /metrics.
type Status struct {
	// Digest is the manifest digest ("sha256:…") of the bundle this source
	// last swapped in; "" before the first successful load.
	Digest string
	// LastSwap is when the last load succeeded; zero before.
	LastSwap time.Time
	// LastError is the last load's error ("" when it succeeded), and
	// LastErrorAt when that load failed.
	LastError   string
	LastErrorAt time.Time
	// Swaps and Failures count loads that succeeded and that failed.
	Swaps, Failures uint64
}

// Option configures [NewPinFile].
type Option func(*PinFile)

// WithRegistry sets the options the registry is reached with (TLS, timeout,
// size limit, …); default none, oci's defaults.
func WithRegistry(opts ...oci.Option) Option {
	return func(p *PinFile) { p.reg = append(p.reg, opts...) }
}

// WithLogger sets where loads are logged; default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(p *PinFile) { p.log = l } }

// WithPollInterval sets how often [PinFile.Watch] looks at the pin file for a
// change; default 1s.
func WithPollInterval(d time.Duration) Option { return func(p *PinFile) { p.poll = d } }

// WithRetryInterval sets how long [PinFile.Watch] waits before retrying a
// failed load of an unchanged pin file (the registry may be back); default
// 30s; 0 or less turns retries off.
func WithRetryInterval(d time.Duration) Option { return func(p *PinFile) { p.retry = d } }

// PinFile loads the bundle a pin file names into an engine. It is safe for
// concurrent use; loads are serialised. There is nothing to close.
//
// Trust: a bundle is swapped in only after its digest's signature verified
// with the pin file's keys. A successful verification leaves a marker in the
// cache folder (verified/<digest>-<keys>), so that with the registry
// unreachable a bundle verified before, with the same keys, loads from the
// cache. The cache folder must be writable only by the proxy.
type PinFile struct {
	path  string
	swap  Swapper
	cache *cache.Cache
	reg   []oci.Option
	log   *slog.Logger
	poll  time.Duration
	retry time.Duration

	// fixed, when set, is the one digest this source loads (see
	// [NewDigest]); fixedKeys are the keys it must verify with.
	fixed     *name.Digest
	fixedKeys [][]byte

	load   sync.Mutex // serialises Load; guards seen, loaded
	seen   string     // fingerprint of the pin file the last Load read
	loaded bool       // a Load has run

	mu     sync.Mutex // guards status
	status Status
}

// NewPinFile returns a source for the pin file at path that swaps bundles
// into sw, caching pulled bundles in cacheDir (created if needed). It reads
// nothing yet: call [PinFile.Load] or [PinFile.Watch].
func NewPinFile(path, cacheDir string, sw Swapper, opts ...Option) (*PinFile, error) {
	c, err := cache.Open(cacheDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cacheDir, "verified"), 0o700); err != nil {
		return nil, fmt.Errorf("opening cache %s: %w", cacheDir, err)
	}
	p := &PinFile{path: path, swap: sw, cache: c, log: slog.Default(), poll: time.Second, retry: 30 * time.Second}
	for _, opt := range opts {
		opt(p)
	}
	return p, nil
}

// NewDigest returns a source for one fixed digest (`toolgate proxy --bundle
// REF@DIGEST --key PUB`): Load verifies ref's signature with keys, pulls it
// through the cache and swaps it in, exactly as for a pin file naming it, and
// with the same offline rule. [PinFile.Watch] on it only retries a failed
// load (and reloads on hup); there is no file to watch.
func NewDigest(ref name.Digest, keys [][]byte, cacheDir string, sw Swapper, opts ...Option) (*PinFile, error) {
	if len(keys) == 0 {
		return nil, errors.New("a registry bundle needs at least one public key to verify it with")
	}
	p, err := NewPinFile("", cacheDir, sw, opts...)
	if err != nil {
		return nil, err
	}
	p.fixed, p.fixedKeys = &ref, keys
	return p, nil
}

// Status returns what the source last did.
func (p *PinFile) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Load reads the pin file, verifies and pulls its bundle and swaps it in.
// On error the active bundle stays; the error is logged, counted and kept
// for [PinFile.Status].
func (p *PinFile) Load(ctx context.Context) error {
	p.load.Lock()
	defer p.load.Unlock()
	digest, err := p.loadOnce(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if err != nil {
		p.status.Failures++
		p.status.LastError, p.status.LastErrorAt = err.Error(), now
		p.log.Error("bundle not loaded; the active bundle stays", "source", p.name(), "err", err)
		return err
	}
	p.status.Swaps++
	p.status.Digest, p.status.LastSwap, p.status.LastError = digest, now, ""
	p.log.Info("bundle loaded", "source", p.name(), "bundle", digest)
	return nil
}

// name names the source in logs: the pin file, or the fixed reference.
func (p *PinFile) name() string {
	if p.fixed != nil {
		return p.fixed.String()
	}
	return p.path
}

// what returns the pin file's digest and keys (or the fixed ones).
func (p *PinFile) what() (name.Digest, [][]byte, error) {
	if p.fixed != nil {
		return *p.fixed, p.fixedKeys, nil
	}
	raw, err := os.ReadFile(p.path)
	p.seen = fingerprint(raw, err)
	if err != nil {
		return name.Digest{}, nil, fmt.Errorf("reading pin file: %w", err)
	}
	f, err := pin.Parse(raw)
	if err != nil {
		return name.Digest{}, nil, fmt.Errorf("pin file %s: %w", p.path, err)
	}
	nd, err := f.Digest()
	if err != nil {
		return name.Digest{}, nil, fmt.Errorf("pin file %s: %w", p.path, err)
	}
	var keys [][]byte
	for _, k := range f.KeyPaths() {
		if !filepath.IsAbs(k) {
			k = filepath.Join(filepath.Dir(p.path), k)
		}
		b, err := os.ReadFile(k)
		if err != nil {
			return name.Digest{}, nil, fmt.Errorf("pin file %s: reading public key: %w", p.path, err)
		}
		keys = append(keys, b)
	}
	return nd, keys, nil
}

func (p *PinFile) loadOnce(ctx context.Context) (string, error) {
	p.loaded = true
	nd, keys, err := p.what()
	if err != nil {
		return "", err
	}
	d, err := oci.ParseDigest(nd.String(), p.reg...)
	if err != nil {
		return "", fmt.Errorf("pin file %s: %w", p.path, err)
	}
	remote, err := oci.RemoteOptions(p.reg...)
	if err != nil {
		return "", err
	}
	marker := p.markerPath(nd.DigestStr(), keys)
	switch err := sign.Verify(ctx, nd, keys, remote...); {
	case err == nil:
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			p.log.Warn("could not record the verified digest; it will not load offline", "bundle", nd.String(), "err", err)
		}
	case errors.Is(err, sign.ErrNoSignature), errors.Is(err, sign.ErrUntrusted), errors.Is(err, sign.ErrWrongDigest):
		return "", fmt.Errorf("refusing %s: %w", nd, err)
	default:
		// Could not tell (registry unreachable): only a digest verified
		// before with these same keys may load, from the cache.
		if _, serr := os.Stat(marker); serr != nil {
			return "", fmt.Errorf("refusing %s: its signature could not be verified and it was never verified here: %w", nd, err)
		}
		p.log.Warn("signature not re-checked (registry unreachable); loading a digest verified before", "bundle", nd.String(), "err", err)
	}
	layer, err := oci.Pull(ctx, d, append(p.reg, oci.WithCache(p.cache))...)
	if err != nil {
		return "", err
	}
	b, err := bundles.ReadBytes(layer, bundles.Limits{})
	if err != nil {
		return "", fmt.Errorf("loading %s: %w", nd, err)
	}
	if err := p.swap.Swap(ctx, nd.DigestStr(), b); err != nil {
		return "", err
	}
	return nd.DigestStr(), nil
}

// markerPath names the marker that digest verified with exactly this set of
// keys: a digest verified with a key since removed from the pin file does not
// load offline.
func (p *PinFile) markerPath(digest string, keys [][]byte) string {
	fps := make([]string, len(keys))
	for i, k := range keys {
		s := sha256.Sum256(bytes.TrimSpace(k))
		fps[i] = hex.EncodeToString(s[:])
	}
	sort.Strings(fps)
	set := sha256.Sum256([]byte(fmt.Sprint(fps)))
	hexDigest := digest[len("sha256:"):]
	return filepath.Join(p.cache.Dir(), "verified", hexDigest+"-"+hex.EncodeToString(set[:8]))
}

// PinSettle is how long [PinFile.Watch] waits before it reads again, and
// only then refuses, a changed pin file that does not parse (it may be
// being written in place); one that parses is loaded at once. Later
// changes do not restart the wait.
const PinSettle = 50 * time.Millisecond

// Watch loads the pin file again whenever its contents differ from what the
// last load read (the file is polled, so one replaced by rename, as git and
// Argo CD do, is seen; a change that does not parse yet is read again
// after PinSettle before it is refused), whenever hup delivers (wire it to SIGHUP with
// signal.Notify; nil means none), and, after a failed load, every retry
// interval. When no [PinFile.Load] has run, it loads first. It returns
// ctx.Err() when ctx is done; load errors are logged and counted, never
// returned.
func (p *PinFile) Watch(ctx context.Context, hup <-chan os.Signal) error {
	tick := time.NewTicker(p.poll)
	defer tick.Stop()
	// fsnotify tells at once when the pin file changes; the folder is
	// watched, since git and GitOps tools replace files by rename. The poll
	// stays as a safety net (and for file systems without notifications).
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if p.fixed != nil {
		// Nothing to watch: only retries and hup.
	} else if w, err := fsnotify.NewWatcher(); err != nil {
		p.log.Warn("not watching the pin file; polling it", "pin_file", p.path, "err", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(p.path)); err != nil {
			p.log.Warn("not watching the pin file; polling it", "pin_file", p.path, "err", err)
		} else {
			events, watchErrs = w.Events, w.Errors
		}
	}
	// A changed file that does not parse may be one being written in
	// place (truncated, then written in pieces, as some editors do): it is
	// read again once PinSettle has passed, and only then refused. A file
	// that parses is loaded at once.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	settling := false // the settle timer runs
	lastTry := time.Now()
	p.load.Lock()
	loaded := p.loaded
	p.load.Unlock()
	failed := !loaded || p.Status().LastError != ""
	if !loaded {
		failed = p.Load(ctx) != nil
	}
	// A change made before the watch began is seen now.
	if changed := p.changed(); changed {
		failed = p.Load(ctx) != nil
		lastTry = time.Now()
	}
	for {
		reload, changed := false, false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-hup:
			if !ok {
				hup = nil
				continue
			}
			p.log.Info("SIGHUP: loading the bundle again", "source", p.name())
			reload = true
		case ev := <-events:
			if filepath.Clean(ev.Name) != filepath.Clean(p.path) {
				continue
			}
			changed = p.changed()
		case <-settle.C:
			settling = false
			reload = p.changed()
		case err := <-watchErrs:
			p.log.Warn("watching the pin file", "pin_file", p.path, "err", err)
			continue
		case <-tick.C:
			reload = failed && p.retry > 0 && time.Since(lastTry) >= p.retry
			changed = !reload && p.changed()
		}
		if changed {
			if p.parses() {
				reload = true
			} else if !settling {
				settle.Reset(PinSettle)
				settling = true
			}
		}
		if reload {
			failed = p.Load(ctx) != nil
			lastTry = time.Now()
		}
	}
}

// parses reports whether the pin file reads as a valid pin file.
func (p *PinFile) parses() bool {
	raw, err := os.ReadFile(p.path)
	if err != nil {
		return false
	}
	_, err = pin.Parse(raw)
	return err == nil
}

// changed reports whether the pin file differs from the one last loaded.
func (p *PinFile) changed() bool {
	if p.fixed != nil {
		return false
	}
	p.load.Lock()
	seen := p.seen
	p.load.Unlock()
	raw, err := os.ReadFile(p.path)
	return fingerprint(raw, err) != seen
}

// fingerprint identifies a pin file's contents, or its absence.
func fingerprint(raw []byte, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	s := sha256.Sum256(raw)
	return string(s[:])
}
