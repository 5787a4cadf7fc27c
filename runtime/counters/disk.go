package counters

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/internal/statedir"
)

// Files in a Disk store's folder.
const (
	journalName = "counters.journal"
	lockName    = "lock"
)

// Defaults for [DiskOptions].
const (
	DefaultFlushEvery = 100 * time.Millisecond
	DefaultCompactAt  = 4 << 20 // bytes of journal
)

// ErrLocked is returned by [OpenDisk] when another live process (or this one)
// holds the folder.
var ErrLocked = errors.New("counter state folder is in use by another toolgate process")

// DiskOptions tunes [OpenDisk]; the zero value takes the defaults.
type DiskOptions struct {
	// FlushEvery is how often the background writer appends changed
	// counters to the journal (default DefaultFlushEvery).
	FlushEvery time.Duration
	// CompactAt is the journal size in bytes past which it is rewritten
	// with the current values only (default DefaultCompactAt).
	CompactAt int64
	// Now is the clock used to drop windows that have passed, on open and
	// on compaction (default time.Now). Reserve and State take their own.
	Now func() time.Time
}

// Disk is a durable counter store: counters keep their values across a
// process restart. It has the same methods as [Store] and is safe for
// concurrent use.
//
// The in-memory [Store] stays the source of truth for reads and
// reservations, so Reserve costs about what it does in memory: it only marks
// the counters it touched as changed. A background goroutine, every
// FlushEvery (100 ms by default), appends one line per changed counter (its
// window, window start and new value) to an append-only journal and fsyncs
// it; nothing is fsynced per call. Durability window: a crash (of the
// process or the machine) loses at most the counts of the last FlushEvery
// plus the time of one write+fsync. (A shorter FlushEvery costs more than
// its fsyncs: each wake-up of the writer keeps the Go runtime's monitor
// thread polling fast; with 8 proxies on 2 cores a 10 ms writer doubled
// the time of a call, a 100 ms one adds 1–7 µs to it.)
//
// A reservation is committed by dropping its release, which the store cannot
// observe, so the journal records each counter's value including the
// reservations still in flight. A reservation rolled back before the next
// flush writes nothing; one rolled back later writes a second line with the
// restored value. A crash while a call is in flight therefore keeps its
// reservation (the call's outcome is unknown; this errs on the side of the
// limit).
//
// On open the journal is replayed (a torn last line is ignored, and so is
// any line that does not parse), counters whose window has passed are
// dropped, and the journal is rewritten with the current values. It is
// rewritten the same way (temporary file, fsync, rename) whenever it grows
// past CompactAt.
//
// Only one process may open a folder: OpenDisk creates a lock file with
// O_EXCL holding its PID and Close removes it. A lock left by a process
// that is no longer running (a crash) is taken over; one held by a live
// process, this one included, makes OpenDisk fail with [ErrLocked]. (Two
// processes taking over the same stale lock at the same instant can race;
// PIDs can also be reused, in which case remove the lock file by hand.)
type Disk struct {
	mem  *Store
	dir  string
	opts DiskOptions

	// dirty holds the counters changed since the last flush: key → its
	// window name. A reservation marks its keys; the flusher takes each
	// mark off before it reads the counter, so a change after that read
	// marks it again for the next flush.
	dirty sync.Map

	// Owned by the flusher (and by Close once the flusher has stopped).
	file    *os.File
	w       *bufio.Writer
	size    int64            // bytes in the journal
	saved   map[string]saved // what the journal says, by key
	lastErr error

	reqs      chan chan error // Flush → flusher
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// saved is a counter as the journal last recorded it.
type saved struct {
	window string
	start  int64
	n      int64
}

// OpenDisk opens (creating it if needed) the counter state in dir and starts
// its background writer. Call Close to flush and release the folder.
func OpenDisk(dir string, opts DiskOptions) (*Disk, error) {
	if opts.FlushEvery <= 0 {
		opts.FlushEvery = DefaultFlushEvery
	}
	if opts.CompactAt <= 0 {
		opts.CompactAt = DefaultCompactAt
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := statedir.Lock(dir, lockName, ErrLocked); err != nil {
		return nil, err
	}
	d := &Disk{
		mem:   New(),
		dir:   dir,
		opts:  opts,
		saved: make(map[string]saved),
		reqs:  make(chan chan error),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if err := d.replay(); err != nil {
		statedir.Unlock(dir, lockName)
		return nil, err
	}
	if err := d.compact(); err != nil {
		statedir.Unlock(dir, lockName)
		return nil, err
	}
	go d.run()
	return d, nil
}

// Reserve is [Store.Reserve]; the counters it changes are journaled by the
// next flush.
func (d *Disk) Reserve(rs []bundles.Reservation, now time.Time) (func(), *bundles.Reservation) {
	undo, refusal := d.mem.Reserve(rs, now)
	if refusal != nil || len(rs) == 0 {
		return undo, refusal
	}
	d.markDirty(rs)
	return func() {
		undo()
		d.markDirty(rs)
	}, nil
}

func (d *Disk) markDirty(rs []bundles.Reservation) {
	for i := range rs {
		if _, ok := d.dirty.Load(rs[i].Key); !ok {
			d.dirty.Store(rs[i].Key, rs[i].Window)
		}
	}
}

// State is [Store.State].
func (d *Disk) State(dst []bundles.CounterValue, table []bundles.Reservation, now time.Time) []bundles.CounterValue {
	return d.mem.State(dst, table, now)
}

// Flush writes the changed counters to the journal and fsyncs it now,
// instead of waiting for the background writer. It returns the write error,
// if any; after Close it does nothing.
func (d *Disk) Flush() error {
	req := make(chan error, 1)
	select {
	case d.reqs <- req:
		return <-req
	case <-d.done:
		return nil
	}
}

// Close stops the background writer, flushes and fsyncs the journal, closes
// it and removes the lock. The store still answers Reserve and State in
// memory afterwards, but nothing more is saved. Close is safe to call more
// than once.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		<-d.done
		err := d.flush()
		if d.file != nil {
			if cerr := d.file.Close(); err == nil {
				err = cerr
			}
		}
		if uerr := statedir.Unlock(d.dir, lockName); err == nil {
			err = uerr
		}
		d.closeErr = err
	})
	return d.closeErr
}

// run is the background writer.
func (d *Disk) run() {
	defer close(d.done)
	t := time.NewTicker(d.opts.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case req := <-d.reqs:
			req <- d.flush()
		case <-t.C:
			d.lastErr = d.flush()
		}
	}
}

// flush appends a line for each changed counter whose value differs from
// the journal's, then compacts the journal if it has grown past CompactAt.
func (d *Disk) flush() error {
	wrote, changed := false, false
	var line []byte
	for k := range d.dirty.Range {
		w, ok := d.dirty.LoadAndDelete(k)
		if !ok {
			continue
		}
		changed = true
		key, window := k.(string), w.(string)
		var cur saved
		if start, n, ok := d.mem.read(key); ok {
			cur = saved{window: window, start: start, n: n}
		}
		if old, ok := d.saved[key]; ok && old.start == cur.start && old.n == cur.n {
			continue
		}
		d.saved[key] = cur
		line = appendLine(line[:0], key, cur)
		n, _ := d.w.Write(line)
		d.size += int64(n)
		wrote = true
	}
	if !changed {
		return d.lastErr
	}
	if !wrote {
		return nil
	}
	if err := d.w.Flush(); err != nil {
		return err
	}
	if err := d.file.Sync(); err != nil {
		return err
	}
	if d.size > d.opts.CompactAt {
		return d.compact()
	}
	return nil
}

// appendLine appends the journal line for key: window, window start (Unix
// seconds), value and the quoted key, separated by spaces.
func appendLine(b []byte, key string, s saved) []byte {
	b = append(b, s.window...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, s.start, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, s.n, 10)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, key)
	return append(b, '\n')
}

func parseLine(line string) (key string, s saved, ok bool) {
	f := strings.SplitN(line, " ", 4)
	if len(f) != 4 {
		return "", saved{}, false
	}
	start, err1 := strconv.ParseInt(f[1], 10, 64)
	n, err2 := strconv.ParseInt(f[2], 10, 64)
	key, err3 := strconv.Unquote(f[3])
	if err1 != nil || err2 != nil || err3 != nil {
		return "", saved{}, false
	}
	return key, saved{window: f[0], start: start, n: n}, true
}

// replay loads the journal into memory, keeping only counters whose window
// is still current. Only complete lines (ending in a newline) count.
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
	now := d.opts.Now()
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		line := string(raw[:i])
		raw = raw[i+1:]
		key, s, ok := parseLine(line)
		if !ok {
			continue
		}
		if start, ok := windowStart(s.window, now); !ok || start != s.start {
			d.mem.vals.Delete(key)
			continue
		}
		d.mem.set(key, s.start, s.n)
		d.saved[key] = s
	}
	for key := range d.saved {
		if d.mem.get(key) == nil {
			delete(d.saved, key)
		}
	}
	return nil
}

// compact rewrites the journal with one line per counter whose window is
// still current and whose value is not zero (temporary file, fsync, rename)
// and reopens it for appending. The caller is the flusher, or OpenDisk
// before it starts.
func (d *Disk) compact() error {
	now := d.opts.Now()
	var buf []byte
	for key, s := range d.saved {
		if start, ok := windowStart(s.window, now); !ok || start != s.start || s.n == 0 {
			delete(d.saved, key)
			continue
		}
		buf = appendLine(buf, key, s)
	}
	path := filepath.Join(d.dir, journalName)
	if err := statedir.WriteFile(path, buf, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if d.file != nil {
		d.file.Close()
	}
	d.file, d.size = f, int64(len(buf))
	if d.w == nil {
		d.w = bufio.NewWriterSize(f, 64<<10)
	} else {
		d.w.Reset(f)
	}
	return nil
}

var _ io.Closer = (*Disk)(nil)
