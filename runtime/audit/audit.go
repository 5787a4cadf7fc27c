// Package audit writes and verifies the proxy's decision log: the runtime
// stage that records every decision before the call it decides is forwarded
// (architecture.md, "Proxy", Audit).
//
// The log is JSON lines, one [Record] a line, each carrying in "prev" the
// sha256 (hex) of the previous line's bytes without its newline; the first
// line's prev is 64 zeros ([Genesis]). [Verify] walks the chain, so an
// edited, deleted or reordered line breaks it at the line after the change.
//
// # Rotation
//
// With [WithMaxBytes], a log is a sequence of files: the active file at the
// path given to [Open], and the files it was rotated to, named after it with
// a six-digit sequence number: audit.log.000001 is the oldest,
// audit.log.000002 the next, and so on (numbers past 999999 get more digits;
// [Files] orders them by number, not by name). One chain runs through the
// whole sequence: the first line of each file carries the hash of the last
// line of the file before it, so deleting, truncating or reordering whole
// files breaks the chain as surely as doing so to lines. [VerifyFiles]
// checks a sequence and [Files] lists the one [Open] writes. Rotated files
// are kept: audit logs are evidence, and removing or archiving them is left
// to the operator (verify before removing; a log whose oldest files are gone
// no longer starts at Genesis, and Verify says so).
//
// What the chain cannot show: an edit of the very last line, or lines cut
// from the end of the newest file, leave no later line to notice them. The
// hash of the last line, which [VerifyFiles] returns, anchors that end when
// it is kept somewhere else.
package audit

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// Genesis is the prev of a log's first line.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// ErrClosed is returned by [Log.Write] after [Log.Close].
var ErrClosed = errors.New("writing audit log: the log is closed")

// Record is one decision. The call's arguments are logged only as their
// digest ([ArgsSHA256]) unless the caller also sets Arguments.
type Record struct {
	Time       time.Time
	DecisionID string
	// Bundle is the digest of the bundle that decided; "" when none did.
	Bundle  string
	Subject string
	// Groups are the caller's groups, written as the line's "groups" field
	// after "subject"; empty leaves it out.
	Groups []string
	Server string
	Tool   string
	// Decision is "allow", "deny" or "require_approval".
	Decision   string
	Rule       string
	Message    string
	ArgsSHA256 string
	// Arguments, when not nil, is written as the line's "arguments" field:
	// JSON is compacted onto the line (values and key order as sent), bytes
	// that are not JSON are written as a JSON string, and empty bytes as
	// null. Nil (the default) leaves the field out.
	Arguments json.RawMessage
	// Shadow lists what shadow rules would have done (policy.md §5: logged,
	// not enforced), written as the line's "shadow" field, each outcome
	// "would_deny" or "would_require_approval"; empty leaves it out.
	Shadow    []Shadow
	LatencyUS int64
}

// Shadow is one shadow rule's outcome in a [Record].
type Shadow struct {
	Outcome string // "would_deny" or "would_require_approval"
	Rule    string
	Message string
}

// line is a record as written; the field order is the line's byte order.
// "arguments" appears only when the record carried them; "prev" is last.
type line struct {
	Time       string          `json:"time"`
	DecisionID string          `json:"decision_id"`
	Bundle     string          `json:"bundle"`
	Subject    string          `json:"subject"`
	Groups     []string        `json:"groups,omitempty"`
	Server     string          `json:"server"`
	Tool       string          `json:"tool"`
	Decision   string          `json:"decision"`
	Rule       string          `json:"rule"`
	Message    string          `json:"message"`
	ArgsSHA256 string          `json:"args_sha256"`
	Arguments  json.RawMessage `json:"arguments,omitempty"`
	Shadow     []shadowLine    `json:"shadow,omitempty"`
	LatencyUS  int64           `json:"latency_us"`
	Prev       string          `json:"prev"`
}

type shadowLine struct {
	Outcome string `json:"outcome"`
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// Option configures [Open].
type Option func(*Log)

// WithMaxBytes rotates the log by size: when a record would take the active
// file past n bytes, the file is fsynced and renamed to the next numbered
// sibling (see the package doc) and the record starts a new active file.
// No file grows past n bytes, except one holding a single record longer
// than n, which gets a file of its own. Default 0: never rotate.
func WithMaxBytes(n int64) Option { return func(l *Log) { l.maxBytes = n } }

// Log appends records to a file, rotating it when [WithMaxBytes] says so.
// It is safe for concurrent use; the owner must call Close. One process
// writes a log: two Logs on the same path would fork its chain.
type Log struct {
	path     string
	maxBytes int64

	mu     sync.Mutex // guards f, size, prev, seq, buf, closed
	f      *os.File   // the active file; nil after a failed rotation, until the next Write reopens it
	size   int64      // bytes in f
	prev   string     // hash of the last line written, in whichever file
	seq    int        // number the active file gets when it is rotated
	buf    []byte
	closed bool
}

// Open opens (creating it, and its folder, if needed) the log at path for appending and
// continues its chain: from the active file's last line or, when the active
// file is empty or missing, from the last line of its newest rotated
// sibling. It reads only those last lines and does not verify the chain;
// run [VerifyFiles] for that. The caller must Close the log.
func Open(path string, opts ...Option) (*Log, error) {
	l := &Log{path: path}
	for _, opt := range opts {
		opt(l)
	}
	if l.maxBytes < 0 {
		return nil, fmt.Errorf("opening audit log %s: the rotation size is %d bytes; give a positive size, or 0 to never rotate", path, l.maxBytes)
	}
	// The log's folder is made as a state folder is: for its owner only.
	if err := os.MkdirAll(cmp.Or(filepath.Dir(path), "."), 0o700); err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	rotated, err := siblings(path)
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	l.seq = 1
	if len(rotated) > 0 {
		l.seq = rotated[len(rotated)-1].seq + 1
	}
	if err := l.openActive(); err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	last, err := lastLine(l.f, l.size)
	if err == nil && last == nil && len(rotated) > 0 {
		from := rotated[len(rotated)-1].path
		last, err = lastLineOf(from)
		if err != nil {
			err = fmt.Errorf("continuing the chain from %s: %w", from, err)
		}
	}
	if err != nil {
		l.f.Close()
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	l.prev = Genesis
	if last != nil {
		l.prev = hashHex(last)
	}
	return l, nil
}

// openActive opens the active file for appending and reads its size.
func (l *Log) openActive() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, fi.Size()
	return nil
}

func hashHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Write appends r as one line, first rotating the active file if the line
// would take it past the rotation size, and returns once the line is written
// to the file (not fsynced). An error means the record is not in the log:
// the caller must not forward the call.
func (l *Log) Write(r *Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	b := appendLine(l.buf[:0], r, l.prev)
	next := hashHex(b)
	b = append(b, '\n')
	if cap(b) <= 64<<10 { // keep a small buffer for the next line, not a huge one
		l.buf = b
	}
	if l.f == nil {
		if err := l.openActive(); err != nil {
			return fmt.Errorf("writing audit log %s: %w", l.path, err)
		}
	}
	if l.maxBytes > 0 && l.size > 0 && l.size+int64(len(b)) > l.maxBytes {
		if err := l.rotate(); err != nil {
			return fmt.Errorf("writing audit log %s: rotating it: %w", l.path, err)
		}
		if err := l.openActive(); err != nil {
			return fmt.Errorf("writing audit log %s: %w", l.path, err)
		}
	}
	n, err := l.f.Write(b)
	if err != nil {
		if n > 0 {
			// Take the partial line back out, so the next line does not
			// follow a broken one; if that fails too, Verify will say where.
			l.f.Truncate(l.size)
		}
		return fmt.Errorf("writing audit log %s: %w", l.path, err)
	}
	l.size += int64(n)
	l.prev = next
	return nil
}

// rotate fsyncs and closes the active file and renames it to the next
// numbered sibling. It leaves l.f nil unless it fails before closing the
// file, so whatever happens, the next write starts from a file it opens.
func (l *Log) rotate() error {
	if err := l.f.Sync(); err != nil {
		return err
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return err
	}
	to := siblingPath(l.path, l.seq)
	for {
		// Never overwrite: a file with that name is someone else's.
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		}
		l.seq++
		to = siblingPath(l.path, l.seq)
	}
	if err := os.Rename(l.path, to); err != nil {
		return err
	}
	l.seq++
	return syncDir(l.path)
}

// appendLine appends r's line (without newline) to dst.
func appendLine(dst []byte, r *Record, prev string) []byte {
	dst = append(dst, `{"time":`...)
	dst = bundles.AppendString(dst, r.Time.UTC().Format(time.RFC3339Nano))
	for _, f := range [...]struct{ k, v string }{
		{"decision_id", r.DecisionID}, {"bundle", r.Bundle}, {"subject", r.Subject},
		{"server", r.Server}, {"tool", r.Tool}, {"decision", r.Decision},
		{"rule", r.Rule}, {"message", r.Message}, {"args_sha256", r.ArgsSHA256},
	} {
		dst = append(dst, ',', '"')
		dst = append(dst, f.k...)
		dst = append(dst, '"', ':')
		dst = bundles.AppendString(dst, f.v)
		if f.k == "subject" && len(r.Groups) > 0 {
			dst = append(dst, `,"groups":[`...)
			for i, g := range r.Groups {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = bundles.AppendString(dst, g)
			}
			dst = append(dst, ']')
		}
	}
	if r.Arguments != nil {
		dst = append(dst, `,"arguments":`...)
		dst = appendArguments(dst, r.Arguments)
	}
	if len(r.Shadow) > 0 {
		dst = append(dst, `,"shadow":[`...)
		for i, sh := range r.Shadow {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"outcome":`...)
			dst = bundles.AppendString(dst, sh.Outcome)
			dst = append(dst, `,"rule":`...)
			dst = bundles.AppendString(dst, sh.Rule)
			dst = append(dst, `,"message":`...)
			dst = bundles.AppendString(dst, sh.Message)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, r.LatencyUS, 10)
	dst = append(dst, `,"prev":"`...)
	dst = append(dst, prev...)
	return append(dst, '"', '}')
}

// appendArguments appends raw as one line of JSON: compacted when it is
// JSON (a valid JSON value holds no raw newline once its whitespace is
// gone), as a string when it is not, null when it is empty.
func appendArguments(dst []byte, raw json.RawMessage) []byte {
	if len(bytes.TrimSpace(raw)) == 0 {
		return append(dst, "null"...)
	}
	n := len(dst)
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, raw); err == nil {
		return buf.Bytes()
	}
	return bundles.AppendString(buf.Bytes()[:n], string(raw))
}

// Close fsyncs and closes the active file. Later writes fail with
// [ErrClosed]. Close is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := errors.Join(l.f.Sync(), l.f.Close())
	l.f = nil
	if err != nil {
		return fmt.Errorf("closing audit log %s: %w", l.path, err)
	}
	return nil
}
