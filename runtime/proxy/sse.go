package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// errEventTooLarge is returned by [sseReader.next] for an event longer than
// its limit.
var errEventTooLarge = errors.New("server-sent event larger than the message limit")

// sseReader reads a text/event-stream body (the SSE framing of the
// Streamable HTTP transport) one event at a time. It keeps each event's
// lines exactly as they came, so that a relay can pass an event on
// unchanged, and parses its fields only when asked.
//
// Lines end in "\n" or "\r\n"; a lone "\r" is not a line end here (no MCP
// server emits one). An event is the lines before a blank line; an event
// the stream ends in the middle of is dropped, as SSE clients drop it.
type sseReader struct {
	br  *bufio.Reader
	max int // longest event accepted, in bytes

	// raw holds the last event's lines, each with its line end, without the
	// blank line that ended it. It is valid until the next call to next.
	raw  []byte
	data []byte // scratch for parse
}

// sseBufSize is the read buffer of one stream. Idle GET streams keep theirs
// for as long as they are open, so it is small; longer lines are gathered
// in raw.
const sseBufSize = 512

var sseReaders = sync.Pool{New: func() any { return &sseReader{br: bufio.NewReaderSize(nil, sseBufSize)} }}

// newSSEReader returns a pooled reader of body that accepts events of up to
// max bytes. Give it back with free.
func newSSEReader(body io.Reader, max int) *sseReader {
	s := sseReaders.Get().(*sseReader)
	s.br.Reset(body)
	s.max = max
	return s
}

// free returns s to the pool, dropping buffers grown by a large event.
func (s *sseReader) free() {
	s.br.Reset(nil)
	if cap(s.raw) > 64<<10 {
		s.raw = nil
	}
	if cap(s.data) > 64<<10 {
		s.data = nil
	}
	s.raw, s.data = s.raw[:0], s.data[:0]
	sseReaders.Put(s)
}

// next reads the next event into raw. It returns io.EOF when the stream
// ends, errEventTooLarge for an event over the limit, or the read error.
func (s *sseReader) next() error {
	s.raw = s.raw[:0]
	lineStart := 0
	for {
		frag, err := s.br.ReadSlice('\n')
		if len(s.raw)+len(frag) > s.max+2 { // +2: the line end of the last line
			return errEventTooLarge
		}
		s.raw = append(s.raw, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				return io.EOF // an unterminated event is not dispatched
			}
			return err
		}
		line := s.raw[lineStart:]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			// A blank line ends the event; blank lines with no event before
			// them are skipped.
			s.raw = s.raw[:lineStart]
			if lineStart > 0 {
				return nil
			}
			continue
		}
		lineStart = len(s.raw)
	}
}

// sseEvent is the parsed form of an event.
type sseEvent struct {
	name    []byte // the event field; empty means "message"
	id      []byte // the id field
	data    []byte // the data lines joined with "\n"
	hasData bool
	hasID   bool // the event has an id field (the stream can be resumed)
}

// isMessage reports whether the event carries a JSON-RPC message: it has
// data, and its type is "message" (the default).
func (e *sseEvent) isMessage() bool {
	return e.hasData && len(e.data) > 0 && (len(e.name) == 0 || string(e.name) == "message")
}

// parse reads the fields of the event in raw. The slices in the result
// point into s and are valid until the next call to next or parse.
func (s *sseReader) parse() sseEvent {
	var ev sseEvent
	s.data = s.data[:0]
	for rest := s.raw; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		field, value := sseField(line)
		switch string(field) {
		case "data":
			if ev.hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			ev.hasData = true
		case "event":
			ev.name = value
		case "id":
			ev.id, ev.hasID = value, true
		}
	}
	ev.data = s.data
	return ev
}

// sseField splits a line into its field name and value: "name: value",
// "name:value" or "name" alone. A comment (":…") has an empty name.
func sseField(line []byte) (field, value []byte) {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return line, nil
	}
	value = line[i+1:]
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	return line[:i], value
}

// appendEvent appends an event made of raw's fields other than data (id,
// event, retry, comments, in their order) followed by data as data lines,
// and the blank line that ends it.
func appendEvent(dst, raw, data []byte) []byte {
	for rest := raw; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if field, _ := sseField(bytes.TrimRight(line, "\r\n")); string(field) == "data" {
			continue
		}
		dst = append(dst, line...)
		if line[len(line)-1] != '\n' {
			dst = append(dst, '\n')
		}
	}
	for {
		line, rest, more := bytes.Cut(data, []byte{'\n'})
		dst = appendDataLine(dst, bytes.TrimSuffix(line, []byte{'\r'}))
		if !more {
			return append(dst, '\n')
		}
		data = rest
	}
}

// appendDataLine appends a data line; a carriage return in it (JSON
// whitespace, in the data the proxy writes) becomes a space, since readers
// may take it for a line end.
func appendDataLine(dst, line []byte) []byte {
	dst = append(dst, "data: "...)
	for {
		i := bytes.IndexByte(line, '\r')
		if i < 0 {
			break
		}
		dst = append(append(dst, line[:i]...), ' ')
		line = line[i+1:]
	}
	dst = append(dst, line...)
	return append(dst, '\n')
}

// appendMessageEvent appends an event of type message carrying msg.
func appendMessageEvent(dst, msg []byte) []byte {
	dst = append(dst, "event: message\n"...)
	return appendEvent(dst, nil, msg)
}
