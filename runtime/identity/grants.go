package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/toolgate/toolgate/bundles"
)

// Grants authenticates bearer tokens against a grants file ([ParseGrants])
// and keeps it current: [Grants.Watch] reloads the file when it changes,
// and [Grants.Reload] (wire it to SIGHUP) reloads it at once. A file that
// does not parse is refused and logged, and the grants last loaded stay in
// force; so does a file that disappears or is empty (to revoke every
// grant, write "grants: []"). A revoked grant stops working as soon as the file is reloaded; an
// expired one at the first call after its expiry, checked on every call
// with the clock of [WithClock].
//
// Grants is safe for concurrent use: each call reads one immutable snapshot
// of the file. There is nothing to close; Watch ends with its context.
type Grants struct {
	path string
	s    settings
	cur  atomic.Pointer[grantSet]

	load sync.Mutex // serialises loads; guards seen
	seen string     // fingerprint of the file the last load read
}

// grantSet is one loaded grants file.
type grantSet struct {
	list   []Grant
	byHash map[[sha256.Size]byte]*Grant
}

// OpenGrants loads the grants file at path. It fails when the file cannot
// be read or parsed: the proxy should not start on a mistyped grants file.
// Options: WithClock, WithLogger, WithPollInterval.
func OpenGrants(path string, opts ...Option) (*Grants, error) {
	g := &Grants{path: path, s: newSettings(opts)}
	if err := g.reload(); err != nil {
		return nil, err
	}
	return g, nil
}

// Path returns the grants file's path.
func (g *Grants) Path() string { return g.path }

// List returns the grants in force, in file order. The slice is shared:
// do not modify it.
func (g *Grants) List() []Grant { return g.cur.Load().list }

// Reload reads the grants file again now. On error — the file cannot be read
// or does not parse — the error is logged and returned, and the grants in
// force stay.
func (g *Grants) Reload() error {
	err := g.reload()
	if err != nil {
		g.s.log.Error("grants file refused; the grants in force stay", "grants_file", g.path, "err", err)
	}
	return err
}

func (g *Grants) reload() error {
	g.load.Lock()
	defer g.load.Unlock()
	raw, err := readLimited(g.path)
	g.seen = fingerprint(raw, err)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		// Most likely a file caught halfway through being rewritten in
		// place; a file meant to hold no grants says so.
		return fmt.Errorf("grants file %s is empty; to revoke every grant, write `grants: []`", g.path)
	}
	list, err := ParseGrants(g.path, raw)
	if err != nil {
		return err
	}
	set := &grantSet{list: list, byHash: make(map[[sha256.Size]byte]*Grant, len(list))}
	for i := range list {
		var h [sha256.Size]byte
		hex.Decode(h[:], []byte(list[i].TokenSHA256)) // checked by ParseGrants
		set.byHash[h] = &list[i]
	}
	old := g.cur.Swap(set)
	if old != nil {
		g.s.log.Info("grants file reloaded", "grants_file", g.path, "grants", len(list))
	}
	return nil
}

// GrantsSettle is how long [Grants.Watch] waits, after it first learns
// that the grants file changed, before reading it (so that a file written
// in place is read whole; later changes do not restart the wait).
const GrantsSettle = 50 * time.Millisecond

// Watch reloads the grants file whenever its contents differ from what the
// last load read, GrantsSettle after a file-system notification for it
// (its folder is watched, since git and sync tools replace files by
// rename) or a poll (a safety net) first saw it change. It returns ctx.Err() when ctx is
// done; load errors are logged, never returned.
func (g *Grants) Watch(ctx context.Context) error {
	tick := time.NewTicker(g.s.poll)
	defer tick.Stop()
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		g.s.log.Warn("not watching the grants file; polling it", "grants_file", g.path, "err", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(g.path)); err != nil {
			g.s.log.Warn("not watching the grants file; polling it", "grants_file", g.path, "err", err)
		} else {
			events, watchErrs = w.Events, w.Errors
		}
	}
	// A change starts the settle timer; the file is read when it fires,
	// so one written in place is read whole (a half-written file would
	// drop the grants not yet written).
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	settling := false // the settle timer runs
	// A change made before the watch began is seen now.
	if g.changed() {
		g.Reload()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			if filepath.Clean(ev.Name) == filepath.Clean(g.path) && !settling {
				settle.Reset(GrantsSettle)
				settling = true
			}
		case <-settle.C:
			settling = false
			if g.changed() {
				g.Reload()
			}
		case err := <-watchErrs:
			g.s.log.Warn("watching the grants file", "grants_file", g.path, "err", err)
		case <-tick.C:
			if !settling && g.changed() {
				// Seen by the poll: read it once it has settled too.
				settle.Reset(GrantsSettle)
				settling = true
			}
		}
	}
}

// changed reports whether the grants file differs from the one last loaded.
func (g *Grants) changed() bool {
	raw, err := readLimited(g.path)
	g.load.Lock()
	defer g.load.Unlock()
	return fingerprint(raw, err) != g.seen
}

// fingerprint identifies a file's contents, or the error reading it.
func fingerprint(raw []byte, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	s := sha256.Sum256(raw)
	return string(s[:])
}

// Lookup returns the grant of token: ErrInvalidToken when no grant has its
// hash, ErrExpired when the grant has expired. It does not check servers
// ([Grant.Allows]).
func (g *Grants) Lookup(token string) (*Grant, error) {
	// The token's hash is looked up in a map, not compared in constant
	// time: timing can at most reveal how the attacker's own guess's hash
	// relates to stored hashes, and finding a token from its SHA-256 is
	// infeasible, so it reveals nothing about any token.
	sum := sha256.Sum256([]byte(token))
	gr := g.cur.Load().byHash[sum]
	if gr == nil {
		return nil, unrecognised("unknown or revoked token")
	}
	if gr.Expired(g.s.now()) {
		return nil, fail(ErrExpired, "the token has expired")
	}
	return gr, nil
}

// Authenticate implements [Authenticator] with the grant of the request's
// bearer token: its identity, if it may reach server.
func (g *Grants) Authenticate(r *http.Request, server string) (bundles.Identity, error) {
	token, err := ParseBearer(r.Header)
	if err != nil {
		return bundles.Identity{}, err
	}
	gr, err := g.Lookup(token)
	if err != nil {
		return bundles.Identity{}, err
	}
	if !gr.Allows(server) {
		return bundles.Identity{}, &authError{kind: ErrNotGranted,
			desc: fmt.Sprintf("this token may not reach server %q", server)}
	}
	return gr.Identity(), nil
}
