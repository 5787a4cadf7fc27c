package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// ChainError says where a log's chain breaks.
type ChainError struct {
	// File is the file holding the broken line, as named to [VerifyFiles];
	// "" from [Verify].
	File string
	// Line is the first broken line, counted from 1 in its file.
	Line int
	// Reason says what is wrong with it.
	Reason string
}

// Error reads "FILE:LINE: reason", or "line LINE: reason" without a file.
func (e *ChainError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Verify reads one log file and checks its chain from [Genesis]. It returns
// the number of lines read and, when the chain breaks, a *[ChainError]
// naming the first broken line: one that is not a JSON object with a 64-hex
// prev, or whose prev is not the hash of the line before (that line was
// edited, or lines were deleted or reordered there).
func Verify(r io.Reader) (lines int, err error) {
	var c chain
	err = c.read(r, "")
	return c.lines, err
}

// VerifyFiles checks one chain running through files, oldest first (as
// [Files] lists a rotated log): the first line of the first file starts
// from [Genesis], and the first line of each later file carries the hash of
// the last line before it. So a file deleted from the middle, files out of
// order, and a file cut short at a line boundary break the chain at the
// first line of the file after the change, as an edited line breaks it at
// the next line. It returns the lines read, the hash of the last line
// (Genesis when there are none: the head to keep elsewhere to anchor the
// end) and, when the chain breaks, a *[ChainError] naming the file and
// line. Other errors are errors reading the files.
func VerifyFiles(files []string) (lines int, head string, err error) {
	var c chain
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return c.lines, "", err
		}
		err = c.read(f, name)
		f.Close()
		if err != nil {
			return c.lines, "", err
		}
	}
	return c.lines, c.head(), nil
}

// chain is the state of a walk along a log's chain.
type chain struct {
	prev     string // hash of the last line read; "" before the first
	lines    int    // lines read, in all files
	prevFile string // the file the last line read was in
}

func (c *chain) head() string {
	if c.prev == "" {
		return Genesis
	}
	return c.prev
}

// read checks the lines of r, the file named file, against the chain so far.
func (c *chain) read(r io.Reader, file string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		l, err := br.ReadBytes('\n')
		if len(l) > 0 {
			n++
			c.lines++
			if reason := c.check(l, n, file); reason != "" {
				return &ChainError{File: file, Line: n, Reason: reason}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", file, err)
		}
	}
}

// check checks l, line n of file with its newline, and moves the chain on
// to it; it returns what is wrong with it, or "".
func (c *chain) check(l []byte, n int, file string) string {
	if l[len(l)-1] != '\n' {
		return "incomplete last line (no newline): the file was cut short, or a write was"
	}
	l = l[:len(l)-1]
	var rec struct {
		Prev *string `json:"prev"`
	}
	if err := json.Unmarshal(l, &rec); err != nil {
		return "not a JSON object: " + err.Error()
	}
	if rec.Prev == nil || len(*rec.Prev) != 64 {
		return "no 64-hex prev field"
	}
	switch want := c.head(); {
	case *rec.Prev == want:
	case c.prev == "":
		return "prev is not 64 zeros, so this is not the start of a log: the lines or files before it were removed"
	case n == 1:
		return "prev does not match the last line of " + c.prevFile + ": that line was edited, or that file was cut short, or a file between them is missing, or the files are out of order"
	default:
		return "prev does not match the previous line: that line was edited, or lines were deleted or moved here"
	}
	c.prev = hashHex(l)
	c.prevFile = file
	return ""
}
