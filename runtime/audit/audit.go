// Package audit writes and verifies the proxy's decision log: the runtime
// stage that records every decision before the call it decides is forwarded
// (architecture.md, "Proxy", Audit).
//
// The log is JSON lines, one [Record] a line, each carrying in "prev" the
// sha256 (hex) of the previous line's bytes without its newline; the first
// line's prev is 64 zeros. [Verify] walks the chain, so an edited, deleted or
// reordered line breaks it at the line after the change. (An edit of the last
// line, or a truncation at the end, leaves no later line to notice it; the
// rotation issue anchors the head.)
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// Genesis is the prev of a log's first line.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Record is one decision. Arguments are never logged, only their digest
// ([ArgsSHA256]).
type Record struct {
	Time       time.Time
	DecisionID string
	// Bundle is the digest of the bundle that decided; "" when none did.
	Bundle  string
	Subject string
	Server  string
	Tool    string
	// Decision is "allow", "deny" or "require_approval".
	Decision   string
	Rule       string
	Message    string
	ArgsSHA256 string
	LatencyUS  int64
}

// line is a record as written; the field order is the line's byte order.
type line struct {
	Time       string `json:"time"`
	DecisionID string `json:"decision_id"`
	Bundle     string `json:"bundle"`
	Subject    string `json:"subject"`
	Server     string `json:"server"`
	Tool       string `json:"tool"`
	Decision   string `json:"decision"`
	Rule       string `json:"rule"`
	Message    string `json:"message"`
	ArgsSHA256 string `json:"args_sha256"`
	LatencyUS  int64  `json:"latency_us"`
	Prev       string `json:"prev"`
}

// Log appends records to a file. It is safe for concurrent use; the owner
// must call Close.
type Log struct {
	mu   sync.Mutex // guards f, prev, buf
	f    *os.File
	prev string
	buf  []byte
}

// Open opens (creating it if needed) the log at path for appending and
// continues its chain from its last line. It does not verify the existing
// lines; run [Verify] for that.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	prev, err := lastHash(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	return &Log{f: f, prev: prev}, nil
}

// lastHash returns the hash of the file's last line, or Genesis for an
// empty file.
func lastHash(f *os.File) (string, error) {
	prev := Genesis
	r := bufio.NewReaderSize(f, 64<<10)
	var last []byte
	for {
		l, err := r.ReadBytes('\n')
		if len(l) > 0 {
			if l[len(l)-1] != '\n' {
				return "", errors.New("the last line is incomplete (a write was cut short); move the file aside and start a new log")
			}
			last = l[:len(l)-1]
			prev = ""
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	if prev == "" {
		prev = hashHex(last)
	}
	return prev, nil
}

func hashHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Write appends r as one line and returns once the line is written to the
// file (not fsynced). An error means the record is not in the log: the
// caller must not forward the call.
func (l *Log) Write(r *Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("writing audit log: the log is closed")
	}
	b := appendLine(l.buf[:0], r, l.prev)
	next := hashHex(b)
	b = append(b, '\n')
	l.buf = b
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("writing audit log %s: %w", l.f.Name(), err)
	}
	l.prev = next
	return nil
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
	}
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, r.LatencyUS, 10)
	dst = append(dst, `,"prev":"`...)
	dst = append(dst, prev...)
	return append(dst, '"', '}')
}

// Close closes the file. Later writes fail. Close is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// ArgsSHA256 returns the sha256 (hex) of the canonical form of a call's
// arguments: object keys sorted, no insignificant whitespace, numbers as
// written, HTML characters unescaped. Absent or null arguments hash as {}.
// Arguments that are not valid JSON hash as their raw bytes.
func ArgsSHA256(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return hashHex([]byte("{}"))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return hashHex(raw)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return hashHex(raw)
	}
	return hashHex(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// ChainError says where a log's chain breaks.
type ChainError struct {
	// Line is the first broken line, counted from 1.
	Line int
	// Reason says what is wrong with it.
	Reason string
}

func (e *ChainError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Verify reads a log and checks its chain. It returns the number of lines
// read and, when the chain breaks, a *[ChainError] naming the first broken
// line: one that is not a JSON object with a 64-hex prev, or whose prev is not
// the hash of the line before (that line was edited, or lines were deleted
// or reordered there).
func Verify(r io.Reader) (lines int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	prev := Genesis
	for {
		l, rerr := br.ReadBytes('\n')
		if len(l) > 0 {
			lines++
			if l[len(l)-1] != '\n' {
				return lines, &ChainError{lines, "incomplete last line (no newline)"}
			}
			l = l[:len(l)-1]
			var rec struct {
				Prev *string `json:"prev"`
			}
			if err := json.Unmarshal(l, &rec); err != nil {
				return lines, &ChainError{lines, "not a JSON object: " + err.Error()}
			}
			if rec.Prev == nil || len(*rec.Prev) != 64 {
				return lines, &ChainError{lines, "no 64-hex prev field"}
			}
			if *rec.Prev != prev {
				what := "the previous line"
				if lines == 1 {
					what = "the start of the log (64 zeros)"
				}
				return lines, &ChainError{lines, "prev does not match " + what + ": a line before it was edited, deleted or moved"}
			}
			prev = hashHex(l)
		}
		if rerr == io.EOF {
			return lines, nil
		}
		if rerr != nil {
			return lines, rerr
		}
	}
}
