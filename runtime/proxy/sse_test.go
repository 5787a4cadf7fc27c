package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSSEReader(t *testing.T) {
	stream := ": ok\n\n" +
		"event: message\nid: s_1\ndata: {\"a\":1}\n\n" +
		"\n\n" + // blank lines between events
		"data: {\"b\":\r\ndata: 2}\r\nretry: 10\r\n\r\n" +
		"event: prime\nid: s_2\ndata\n\n" +
		"data: " + strings.Repeat("x", 600) + "\n\n" + // longer than the read buffer
		"data: cut off"
	type ev struct {
		raw, name, id, data string
		message             bool
	}
	want := []ev{
		{raw: ": ok\n"},
		{raw: "event: message\nid: s_1\ndata: {\"a\":1}\n", name: "message", id: "s_1", data: `{"a":1}`, message: true},
		{raw: "data: {\"b\":\r\ndata: 2}\r\nretry: 10\r\n", data: "{\"b\":\n2}", message: true},
		{raw: "event: prime\nid: s_2\ndata\n", name: "prime", id: "s_2"},
		{raw: "data: " + strings.Repeat("x", 600) + "\n", data: strings.Repeat("x", 600), message: true},
	}
	sr := newSSEReader(iotest.OneByteReader(strings.NewReader(stream)), 1000)
	defer sr.free()
	for i, w := range want {
		if err := sr.next(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		e := sr.parse()
		got := ev{raw: string(sr.raw), name: string(e.name), id: string(e.id), data: string(e.data), message: e.isMessage()}
		if got != w {
			t.Errorf("event %d: got %+v, want %+v", i, got, w)
		}
	}
	if err := sr.next(); err != io.EOF {
		t.Errorf("after the last event: got %v, want io.EOF (the cut-off event is dropped)", err)
	}
}

func TestSSEReaderLimit(t *testing.T) {
	sr := newSSEReader(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n"), 50)
	defer sr.free()
	if err := sr.next(); !errors.Is(err, errEventTooLarge) {
		t.Errorf("got %v, want errEventTooLarge", err)
	}
}

func TestAppendEvent(t *testing.T) {
	for _, tt := range []struct{ raw, data, want string }{
		{"event: message\nid: 7\ndata: {\"old\":1}\n", `{"new":2}`, "event: message\nid: 7\ndata: {\"new\":2}\n\n"},
		{"id: 7\r\ndata: a\r\ndata: b\r\n: note\r\n", "x\ny", "id: 7\r\n: note\r\ndata: x\ndata: y\n\n"},
		{"data: a\n", "{\r\n\"a\":1\r}", "data: {\ndata: \"a\":1 }\n\n"},
		{"", `{}`, "data: {}\n\n"},
	} {
		if got := string(appendEvent(nil, []byte(tt.raw), []byte(tt.data))); got != tt.want {
			t.Errorf("appendEvent(%q, %q): got %q, want %q", tt.raw, tt.data, got, tt.want)
		}
	}
}

// FuzzSSEReader reads arbitrary streams: never a panic, every event within
// the limit, and an event written back with appendEvent reads the same.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("event: message\nid: 1\ndata: {}\n\n: c\n\ndata: a\r\ndata: b\r\n\r\n"))
	f.Add([]byte("data\n\n\n\ndata:x"))
	f.Add([]byte("data:00\r\r\n\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		sr := newSSEReader(bytes.NewReader(stream), 64)
		defer sr.free()
		for {
			if err := sr.next(); err != nil {
				return
			}
			if len(sr.raw) > 64+2 {
				t.Fatalf("event of %d bytes over the limit", len(sr.raw))
			}
			e := sr.parse()
			if !e.hasData {
				continue
			}
			data := bytes.Clone(e.data)
			again := newSSEReader(bytes.NewReader(appendEvent(nil, sr.raw, data)), 1<<20)
			if err := again.next(); err != nil {
				t.Fatalf("rewritten event of %q: %v", sr.raw, err)
			}
			// A carriage return ending a line goes, others come back as
			// spaces.
			lines := bytes.Split(data, []byte{'\n'})
			for i, l := range lines {
				lines[i] = bytes.ReplaceAll(bytes.TrimSuffix(l, []byte{'\r'}), []byte{'\r'}, []byte{' '})
			}
			want := bytes.Join(lines, []byte{'\n'})
			if e2 := again.parse(); !bytes.Equal(e2.data, want) {
				t.Fatalf("rewritten event of %q: data %q, want %q", sr.raw, e2.data, want)
			}
			again.free()
		}
	})
}
