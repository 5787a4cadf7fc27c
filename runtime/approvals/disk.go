package approvals

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/toolgate/toolgate/internal/statedir"
)

// Files in a Disk store's folder. They do not clash with the counter store's,
// so both may share one state folder.
const (
	journalName = "approvals.journal"
	lockName    = "approvals.lock"
)

// DefaultCompactAt is the journal size in bytes past which a [Disk] store
// rewrites it with the requests it still keeps (see [WithCompactAt]).
const DefaultCompactAt = 1 << 20

// ErrLocked is returned by [OpenDisk] when another live process (or this
// one) holds the folder.
var ErrLocked = errors.New("approval state folder is in use by another toolgate process")

// WithCompactAt sets the journal size in bytes past which a [Disk] store
// rewrites it; default DefaultCompactAt. The Redis store ignores it.
func WithCompactAt(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.compactAt = n
		}
	}
}

// Disk is the embedded approval store: requests live in memory and in an
// append-only journal in a folder, so pending (and approved) requests
// survive a restart. It is safe for concurrent use; whoever opens it must
// Close it.
//
// Every transition (a request opened, approved, denied, used, expired) is
// appended to the journal as one JSON line holding the whole request, and
// the journal is fsynced, before the transition takes effect in memory and
// before the method returns. Approvals are rare and each one lets a call
// through, so nothing is batched: an approval reported to its decider is on
// disk, and a request that Consume reported as used stays used after a
// crash (the call it let through cannot run a second time). A write or
// fsync that fails leaves the request as it was, cuts the journal back to
// its last complete line, and returns the error (Consume then lets nothing
// through).
//
// On open the journal is replayed (the last line of each request wins; a
// torn last line, and any line that does not parse, is ignored), requests
// more than the retention past their deadline are dropped, and the journal
// is rewritten with the rest (temporary file, fsync, rename). It is
// rewritten the same way whenever it grows past the compaction size
// ([WithCompactAt]) and to twice what the last rewrite left.
//
// Only one process may open a folder: OpenDisk creates a lock file
// (approvals.lock) with O_EXCL holding its PID, and Close removes it. A lock
// left by a process that is no longer running is taken over; one held by a
// live process, this one included, makes OpenDisk fail with [ErrLocked].
// Proxy replicas that must share approvals use [Redis] instead.
//
// Events reach the [WithEvents] hook in the order of the transitions, and
// Wait is woken in-process by the transition it waits for.
type Disk struct {
	dir string
	o   options

	mu      sync.Mutex               // guards entries, byKey, file, size, kept, watches, closed
	emitMu  sync.Mutex               // held from a transition until its events are reported, to keep their order
	entries map[string]*entry        // by request id
	byKey   map[string]string        // binding key → id of its latest request
	file    *os.File                 // the journal, open for appending
	size    int64                    // bytes in the journal
	kept    int64                    // bytes in the journal after its last compaction
	watches map[string]chan struct{} // request id → closed at its next transition
	closed  bool

	stop      chan struct{}
	done      chan struct{} // closed when the sweeper has stopped
	closeOnce sync.Once
	closeErr  error
}

type entry struct {
	r   Request
	key string // r.Binding.key()
}

var _ Store = (*Disk)(nil)

// OpenDisk opens (creating it if needed) the approval store in dir and
// starts its background sweep. Call Close to release the folder.
func OpenDisk(dir string, opts ...Option) (*Disk, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening approval store %s: %w", dir, err)
	}
	if err := statedir.Lock(dir, lockName, ErrLocked); err != nil {
		return nil, fmt.Errorf("opening approval store %s: %w", dir, err)
	}
	d := &Disk{
		dir:     dir,
		o:       buildOptions(opts),
		entries: make(map[string]*entry),
		byKey:   make(map[string]string),
		watches: make(map[string]chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := d.replay(); err != nil {
		statedir.Unlock(dir, lockName)
		return nil, fmt.Errorf("opening approval store %s: %w", dir, err)
	}
	if err := d.compactLocked(); err != nil {
		statedir.Unlock(dir, lockName)
		return nil, fmt.Errorf("opening approval store %s: %w", dir, err)
	}
	go runSweeper(&d.o, d.Sweep, d.stop, d.done)
	return d, nil
}

// Request is [Store.Request].
func (d *Disk) Request(ctx context.Context, b Binding, rule string, approvers Approvers, timeout time.Duration) (Request, bool, error) {
	b, err := b.normalize()
	if err != nil {
		return Request{}, false, err
	}
	key := b.key()
	now := d.o.clock()
	var evs []Event
	d.mu.Lock()
	defer d.unlockAndEmit(&evs)
	defer d.maybeCompactLocked()
	if d.closed {
		return Request{}, false, ErrClosed
	}
	if id, ok := d.byKey[key]; ok {
		e := d.entries[id]
		if e.r.Status.open() {
			if now.Before(e.r.ExpiresAt) {
				return e.r, false, nil
			}
			ev, err := d.transitionLocked(e, Expired, now, nil)
			if err != nil {
				return Request{}, false, err
			}
			evs = append(evs, ev)
		}
	}
	r := Request{
		ID:        newID(),
		Binding:   b,
		Rule:      rule,
		Approvers: Approvers{Subjects: sortedSet(approvers.Subjects), Groups: sortedSet(approvers.Groups)},
		Status:    Pending,
		CreatedAt: now,
		ExpiresAt: now.Add(timeoutOrDefault(timeout)),
	}
	if err := d.appendLocked(&r); err != nil {
		return Request{}, false, err
	}
	d.entries[r.ID] = &entry{r: r, key: key}
	d.byKey[key] = r.ID
	evs = append(evs, eventFor(EventRequested, r, now))
	return r, true, nil
}

// Consume is [Store.Consume]. The used mark is on disk before it returns
// true.
func (d *Disk) Consume(ctx context.Context, b Binding) (Request, bool, error) {
	b, err := b.normalize()
	if err != nil {
		return Request{}, false, err
	}
	key := b.key()
	now := d.o.clock()
	var evs []Event
	d.mu.Lock()
	defer d.unlockAndEmit(&evs)
	defer d.maybeCompactLocked()
	if d.closed {
		return Request{}, false, ErrClosed
	}
	id, ok := d.byKey[key]
	if !ok {
		return Request{}, false, nil
	}
	e := d.entries[id]
	switch {
	case e.r.Status.open() && !now.Before(e.r.ExpiresAt):
		ev, err := d.transitionLocked(e, Expired, now, nil)
		if err != nil {
			return Request{}, false, err
		}
		evs = append(evs, ev)
		return e.r, false, nil
	case e.r.Status == Approved:
		ev, err := d.transitionLocked(e, Used, now, func(r *Request) { r.UsedAt = now })
		if err != nil {
			return Request{}, false, err
		}
		evs = append(evs, ev)
		return e.r, true, nil
	}
	return e.r, false, nil
}

// Decide is [Store.Decide].
func (d *Disk) Decide(ctx context.Context, id string, approve bool, by Identity, reason string) (Request, error) {
	if !validID(id) {
		return Request{}, fmt.Errorf("deciding %q: %w", id, ErrNotFound)
	}
	now := d.o.clock()
	var evs []Event
	d.mu.Lock()
	defer d.unlockAndEmit(&evs)
	defer d.maybeCompactLocked()
	if d.closed {
		return Request{}, ErrClosed
	}
	e, ok := d.entries[id]
	if !ok {
		return Request{}, fmt.Errorf("deciding %s: %w", id, ErrNotFound)
	}
	if e.r.Status.open() && !now.Before(e.r.ExpiresAt) {
		ev, err := d.transitionLocked(e, Expired, now, nil)
		if err != nil {
			return Request{}, err
		}
		evs = append(evs, ev)
	}
	if e.r.Status != Pending {
		return e.r, statusError(&e.r)
	}
	if err := mayDecide(&e.r, by); err != nil {
		return e.r, err
	}
	to := Denied
	if approve {
		to = Approved
	}
	ev, err := d.transitionLocked(e, to, now, func(r *Request) {
		r.DecidedBy, r.DecidedAt, r.Reason = by.Subject, now, reason
	})
	if err != nil {
		return Request{}, err
	}
	evs = append(evs, ev)
	return e.r, nil
}

// Get is [Store.Get].
func (d *Disk) Get(ctx context.Context, id string) (Request, error) {
	now := d.o.clock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return Request{}, ErrClosed
	}
	e, ok := d.entries[id]
	if !ok {
		return Request{}, fmt.Errorf("approval request %q: %w", id, ErrNotFound)
	}
	return e.r.effective(now), nil
}

// List is [Store.List].
func (d *Disk) List(ctx context.Context, f Filter) ([]Request, error) {
	now := d.o.clock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrClosed
	}
	out := make([]Request, 0, len(d.entries))
	for _, e := range d.entries {
		r := e.r.effective(now)
		if f.Status == "" || r.Status == f.Status {
			out = append(out, r)
		}
	}
	d.mu.Unlock()
	sortNewestFirst(out)
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func sortNewestFirst(rs []Request) {
	slices.SortFunc(rs, func(a, b Request) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// Wait is [Store.Wait]: it is woken by the request's next transition in this
// process, or at its deadline.
func (d *Disk) Wait(ctx context.Context, id string) (Request, error) {
	for {
		now := d.o.clock()
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return Request{}, ErrClosed
		}
		e, ok := d.entries[id]
		if !ok {
			d.mu.Unlock()
			return Request{}, fmt.Errorf("waiting for approval request %q: %w", id, ErrNotFound)
		}
		r := e.r.effective(now)
		if r.Status != Pending {
			d.mu.Unlock()
			return r, nil
		}
		ch := d.watches[id]
		if ch == nil {
			ch = make(chan struct{})
			d.watches[id] = ch
		}
		d.mu.Unlock()
		t := time.NewTimer(r.ExpiresAt.Sub(now))
		select {
		case <-ch:
		case <-t.C:
		case <-d.stop:
			t.Stop()
			return Request{}, ErrClosed
		case <-ctx.Done():
			t.Stop()
			return Request{}, ctx.Err()
		}
		t.Stop()
	}
}

// Sweep is [Store.Sweep]. It also forgets requests past their retention.
func (d *Disk) Sweep(ctx context.Context) (int, error) {
	now := d.o.clock()
	var evs []Event
	d.mu.Lock()
	defer d.unlockAndEmit(&evs)
	defer d.maybeCompactLocked()
	if d.closed {
		return 0, ErrClosed
	}
	var errs []error
	for _, e := range d.entries {
		if e.r.Status.open() && !now.Before(e.r.ExpiresAt) {
			ev, err := d.transitionLocked(e, Expired, now, nil)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			evs = append(evs, ev)
		}
	}
	d.forgetLocked(now)
	return len(evs), errors.Join(errs...)
}

// forgetLocked drops requests past their retention from memory; the next
// compaction drops them from the journal.
func (d *Disk) forgetLocked(now time.Time) {
	for id, e := range d.entries {
		if d.pastRetention(&e.r, now) {
			delete(d.entries, id)
			if d.byKey[e.key] == id {
				delete(d.byKey, e.key)
			}
		}
	}
}

func (d *Disk) pastRetention(r *Request, now time.Time) bool {
	return !now.Before(r.ExpiresAt.Add(d.o.retention))
}

// Close stops the sweep, wakes every Wait (with ErrClosed), closes the
// journal and removes the lock. Close is safe to call more than once.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.done
		d.mu.Lock()
		defer d.mu.Unlock()
		d.closed = true
		var err error
		if d.file != nil {
			err = errors.Join(d.file.Sync(), d.file.Close())
			d.file = nil
		}
		if uerr := statedir.Unlock(d.dir, lockName); err == nil {
			err = uerr
		}
		if err != nil {
			err = fmt.Errorf("closing approval store %s: %w", d.dir, err)
		}
		d.closeErr = err
	})
	return d.closeErr
}

// unlockAndEmit releases the store and reports evs, in order: emitMu is
// taken before mu is released, so that events reach the hook in the order
// of their transitions without the hook running under mu.
func (d *Disk) unlockAndEmit(evs *[]Event) {
	if len(*evs) == 0 || d.o.onEvent == nil {
		d.mu.Unlock()
		return
	}
	d.emitMu.Lock()
	d.mu.Unlock()
	defer d.emitMu.Unlock()
	d.o.emit(*evs)
}

// transitionLocked moves e to status to (after edit, if any, changes more
// fields), writes it to the journal, wakes its waiters and returns its
// event. On a write error e is left as it was.
func (d *Disk) transitionLocked(e *entry, to Status, now time.Time, edit func(*Request)) (Event, error) {
	r := e.r
	r.Status = to
	if edit != nil {
		edit(&r)
	}
	if err := d.appendLocked(&r); err != nil {
		return Event{}, err
	}
	e.r = r
	if ch := d.watches[r.ID]; ch != nil {
		close(ch)
		delete(d.watches, r.ID)
	}
	return eventFor(kindOf(to), r, now), nil
}

func kindOf(s Status) EventKind {
	switch s {
	case Approved:
		return EventApproved
	case Denied:
		return EventDenied
	case Expired:
		return EventExpired
	case Used:
		return EventUsed
	}
	return EventRequested
}

// appendLocked appends r's line to the journal and fsyncs it. On failure
// it cuts the journal back to its last complete line.
func (d *Disk) appendLocked(r *Request) error {
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding approval request %s: %w", r.ID, err)
	}
	line = append(line, '\n')
	if d.file == nil {
		return fmt.Errorf("writing approval request %s: the journal in %s could not be reopened after its last compaction; restart the proxy", r.ID, d.dir)
	}
	n, err := d.file.Write(line)
	if err == nil {
		err = d.file.Sync()
	}
	if err != nil {
		if n > 0 {
			d.file.Truncate(d.size)
		}
		return fmt.Errorf("writing approval request %s to %s: %w", r.ID, filepath.Join(d.dir, journalName), err)
	}
	d.size += int64(n)
	return nil
}

// maybeCompactLocked compacts the journal when it has grown past the
// compaction size and to twice its size after the last compaction (so that
// many requests still kept do not make every write compact). Callers defer it after taking the lock, so that it runs
// once memory holds what the journal holds.
func (d *Disk) maybeCompactLocked() {
	if d.closed || d.size <= d.o.compactAt || d.size <= 2*d.kept {
		return
	}
	d.forgetLocked(d.o.clock())
	if err := d.compactLocked(); err != nil {
		// Every line is on disk; the journal just stays long.
		d.o.log.Error("compacting the approval journal failed; it keeps growing until a compaction succeeds", "dir", d.dir, "err", err)
	}
}

// replay loads the journal: the last complete line of each request wins.
func (d *Disk) replay() error {
	raw, err := os.ReadFile(filepath.Join(d.dir, journalName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if i := bytes.LastIndexByte(raw, '\n'); i >= 0 {
		raw = raw[:i+1]
	} else {
		raw = nil // a single torn line
	}
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		line := raw[:i]
		raw = raw[i+1:]
		var r Request
		if json.Unmarshal(line, &r) != nil || !validID(r.ID) || !r.Status.Valid() {
			continue
		}
		b, err := r.Binding.normalize()
		if err != nil {
			continue
		}
		r.Binding = b
		d.entries[r.ID] = &entry{r: r, key: b.key()}
	}
	now := d.o.clock()
	d.forgetLocked(now)
	// A binding's latest request is the one opened last.
	for id, e := range d.entries {
		cur, ok := d.byKey[e.key]
		if !ok {
			d.byKey[e.key] = id
			continue
		}
		c := d.entries[cur].r
		if e.r.CreatedAt.After(c.CreatedAt) || e.r.CreatedAt.Equal(c.CreatedAt) && id > cur {
			d.byKey[e.key] = id
		}
	}
	return nil
}

// compactLocked rewrites the journal with one line per request kept
// (temporary file, fsync, rename, fsync of the folder) and reopens it for
// appending.
func (d *Disk) compactLocked() error {
	rs := make([]Request, 0, len(d.entries))
	for _, e := range d.entries {
		rs = append(rs, e.r)
	}
	slices.SortFunc(rs, func(a, b Request) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	var buf []byte
	for i := range rs {
		line, err := json.Marshal(&rs[i])
		if err != nil {
			return err
		}
		buf = append(append(buf, line...), '\n')
	}
	path := filepath.Join(d.dir, journalName)
	if err := statedir.WriteFile(path, buf, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if d.file != nil {
		// After the rename, the old handle writes to a file no longer in
		// the folder: never use it again.
		d.file.Close()
		d.file = nil
	}
	if err != nil {
		return err
	}
	d.file, d.size, d.kept = f, int64(len(buf)), int64(len(buf))
	return nil
}
