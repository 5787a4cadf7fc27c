// Package engine holds the proxy's active policy bundle: the stage of the
// pipeline after a bundle is pulled and verified. [Engine.Swap] compiles and
// warms a bundle before it publishes it with one atomic store; every
// [Engine.Eval] reads the active snapshot once, so calls in flight finish on
// the bundle they started with, and no call waits for a swap.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// Errors returned by [Engine.Eval] and [Engine.Swap].
var (
	// ErrNoBundle: no bundle is active. The caller must deny (fail closed).
	ErrNoBundle = errors.New("no policy bundle is active")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine is closed")
)

// Engine evaluates decisions against the active bundle. The zero value is
// not usable; call [New]. Engine is safe for concurrent use. The owner must
// call Close once no Eval is in flight.
type Engine struct {
	opts []opawasm.Option
	now  func() time.Time

	cur atomic.Pointer[snapshot]

	mu     sync.Mutex // guards closed; serialises Swap and Close
	closed bool
}

// snapshot is an immutable active bundle. refs counts the engine's own
// reference (while published) and each Eval in flight; the one that drops it
// to zero closes the module.
type snapshot struct {
	digest   string
	manifest bundles.Manifest
	mod      *opawasm.Module
	since    time.Time
	refs     atomic.Int64
}

// Info says which bundle made a decision.
type Info struct {
	// Digest is the digest of the bundle that decided ("sha256:…").
	Digest string
	// Revision is that bundle's revision (the git commit it was built from).
	Revision string
}

// Option configures [New].
type Option func(*Engine)

// WithModuleOptions sets the options each bundle's module is compiled with
// (limits, timeouts, pool size); default none, i.e. opawasm's defaults.
func WithModuleOptions(opts ...opawasm.Option) Option {
	return func(e *Engine) { e.opts = append(e.opts, opts...) }
}

// WithClock sets the clock [Engine.Active] reports swap times from; default
// time.Now.
func WithClock(now func() time.Time) Option {
	return func(e *Engine) { e.now = now }
}

// New returns an engine with no active bundle: until the first successful
// Swap, Eval fails with [ErrNoBundle].
func New(opts ...Option) *Engine {
	e := &Engine{now: time.Now}
	for _, opt := range opts {
		opt(e)
	}
	return e
}

// Swap makes b, whose digest is digest, the active bundle. It compiles b's
// policy.wasm, creates an instance and evaluates a trivial input, and only
// then publishes it; on any error the active bundle stays in force. The
// previous bundle is closed after its last Eval in flight. Swapping in the
// digest already active does nothing. Swaps are serialised.
func (e *Engine) Swap(ctx context.Context, digest string, b *bundles.Bundle) error {
	if b == nil || len(b.Wasm) == 0 {
		return fmt.Errorf("swapping in %s: the bundle has no policy.wasm", digest)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if cur := e.cur.Load(); cur != nil && cur.digest == digest {
		return nil
	}
	mod, err := opawasm.Compile(ctx, b.Wasm, b.Data, append(opawasm.BundleOptions(&b.Manifest), e.opts...)...)
	if err != nil {
		return fmt.Errorf("compiling %s: %w", digest, err)
	}
	if _, err := mod.Eval(ctx, &bundles.Input{}); err != nil {
		mod.Close()
		return fmt.Errorf("warming %s: %w", digest, err)
	}
	s := &snapshot{digest: digest, manifest: b.Manifest, mod: mod, since: e.now()}
	s.refs.Store(1)
	if old := e.cur.Swap(s); old != nil {
		old.release()
	}
	return nil
}

// Eval decides one call with the active bundle and says which bundle
// decided. An error means no decision: the caller must deny. With no active
// bundle it returns [ErrNoBundle].
func (e *Engine) Eval(ctx context.Context, in *bundles.Input) (bundles.Decision, Info, error) {
	s := e.acquire()
	if s == nil {
		return bundles.Decision{}, Info{}, ErrNoBundle
	}
	defer s.release()
	info := Info{Digest: s.digest, Revision: s.manifest.Revision}
	d, err := s.mod.Eval(ctx, in)
	if err != nil {
		return d, info, fmt.Errorf("evaluating with %s: %w", s.digest, err)
	}
	return d, info, nil
}

// acquire takes a reference to the active snapshot, or returns nil when
// there is none. A snapshot whose count reached zero is retired and no
// longer published, so the loop reloads.
func (e *Engine) acquire() *snapshot {
	for {
		s := e.cur.Load()
		if s == nil {
			return nil
		}
		n := s.refs.Load()
		if n > 0 && s.refs.CompareAndSwap(n, n+1) {
			return s
		}
	}
}

func (s *snapshot) release() {
	if s.refs.Add(-1) == 0 {
		s.mod.Close()
	}
}

// Active returns the digest of the active bundle and when it became active;
// "" and the zero time when none is.
func (e *Engine) Active() (digest string, since time.Time) {
	if s := e.cur.Load(); s != nil {
		return s.digest, s.since
	}
	return "", time.Time{}
}

// Manifest returns the manifest of the active bundle, and false when none is
// active.
func (e *Engine) Manifest() (bundles.Manifest, bool) {
	if s := e.cur.Load(); s != nil {
		return s.manifest, true
	}
	return bundles.Manifest{}, false
}

// ActiveManifest returns the manifest of the active bundle with its digest,
// and false when none is active: the two always belong together, so that a
// caller can tell whether a later [Engine.Eval] decided with the same bundle
// (its Info.Digest). The manifest is the bundle's own, read on every call
// and not copied: the caller must not modify it.
func (e *Engine) ActiveManifest() (*bundles.Manifest, string, bool) {
	if s := e.cur.Load(); s != nil {
		return &s.manifest, s.digest, true
	}
	return nil, "", false
}

// Close retires the active bundle (closed after its last Eval in flight);
// Eval then returns [ErrNoBundle] and Swap [ErrClosed]. Close is idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	if old := e.cur.Swap(nil); old != nil {
		old.release()
	}
}
