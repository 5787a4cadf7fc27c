package audit

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// rotated is one rotated file of a log.
type rotated struct {
	path string
	seq  int
}

// siblingPath names the n-th rotated file of the log at path.
func siblingPath(path string, n int) string { return fmt.Sprintf("%s.%06d", path, n) }

// siblings returns the rotated files of the log at path, oldest (lowest
// number) first: files in its directory named after it, a dot and digits.
func siblings(path string) ([]rotated, error) {
	dir, base := filepath.Split(path)
	if base == "" {
		return nil, fmt.Errorf("%s names a directory, not a log file", path)
	}
	ents, err := os.ReadDir(cmp.Or(dir, "."))
	if err != nil {
		return nil, err
	}
	var out []rotated
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || suffix == "" || strings.Trim(suffix, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil {
			continue // more digits than an int holds: not one of ours
		}
		out = append(out, rotated{dir + e.Name(), n})
	}
	slices.SortFunc(out, func(a, b rotated) int { return cmp.Compare(a.seq, b.seq) })
	return out, nil
}

// Files returns the files of the log at path in chain order, oldest first:
// its rotated siblings by number, then path itself when it exists (after a
// rotation that was cut short, it may not). It returns no error and no files
// when there is no log at path.
func Files(path string) ([]string, error) {
	rs, err := siblings(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing audit log files of %s: %w", path, err)
	}
	files := make([]string, 0, len(rs)+1)
	for _, r := range rs {
		files = append(files, r.path)
	}
	if _, err := os.Stat(path); err == nil {
		files = append(files, path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing audit log files of %s: %w", path, err)
	}
	return files, nil
}

// ChainOrder returns files in chain order when they are files of one log —
// FILE and its rotated FILE.NNNNNN, in any order, as a shell glob such as
// FILE* lists them (FILE first) —: by number, then FILE. The live file is
// the shortest name of which every other is a rotated file (so a log
// named audit.1 is one too); without it, files that are all rotated files
// of one name are ordered by number. Files of several names are returned
// in the order given.
func ChainOrder(files []string) []string {
	if len(files) < 2 {
		return files
	}
	clean := make([]string, len(files))
	for i, f := range files {
		clean[i] = filepath.Clean(f)
	}
	live := slices.MinFunc(clean, func(a, b string) int { return cmp.Compare(len(a), len(b)) })
	if order, ok := rotatedOf(live, files, clean, true); ok {
		return order
	}
	if dot := strings.LastIndexByte(live, '.'); dot > 0 {
		if order, ok := rotatedOf(live[:dot], files, clean, false); ok {
			return order
		}
	}
	return files
}

// rotatedOf orders files (cleaned: clean) as the log at base, when each is
// base's rotated file base.NNN, or base itself where withLive says it may
// be; ok is false otherwise.
func rotatedOf(base string, files, clean []string, withLive bool) ([]string, bool) {
	type part struct {
		path string
		seq  int // -1 for the live file, which comes last
	}
	parts := make([]part, len(files))
	for i, c := range clean {
		if withLive && c == base {
			parts[i] = part{files[i], -1}
			continue
		}
		suffix, ok := strings.CutPrefix(c, base+".")
		n, err := strconv.Atoi(suffix)
		if !ok || err != nil || suffix == "" || strings.Trim(suffix, "0123456789") != "" {
			return nil, false
		}
		parts[i] = part{files[i], n}
	}
	slices.SortStableFunc(parts, func(a, b part) int {
		if (a.seq < 0) != (b.seq < 0) {
			return cmp.Compare(b.seq, a.seq) // the live file after every numbered one
		}
		return cmp.Compare(a.seq, b.seq)
	})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.path
	}
	return out, true
}

// syncDir fsyncs the directory holding path, so a rename in it survives a
// crash.
func syncDir(path string) error {
	d, err := os.Open(cmp.Or(filepath.Dir(path), "."))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// errIncomplete says a log file ends inside a line.
var errIncomplete = errors.New("the last line is incomplete (a write was cut short); move the file aside and start a new log")

// lastLine returns the last line of f, whose size is size, without its
// newline; nil when f is empty. It reads backwards from the end, so a long
// log costs no more than a short one.
func lastLine(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	for chunk := int64(4 << 10); ; chunk *= 2 {
		start := max(size-chunk, 0)
		buf := make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil {
			return nil, err
		}
		if buf[len(buf)-1] != '\n' {
			return nil, errIncomplete
		}
		body := buf[:len(buf)-1]
		if i := bytes.LastIndexByte(body, '\n'); i >= 0 {
			return body[i+1:], nil
		}
		if start == 0 {
			return body, nil
		}
	}
}

// lastLineOf is lastLine for the file at path.
func lastLineOf(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return lastLine(f, fi.Size())
}
