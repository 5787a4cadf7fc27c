// Command anyserver is a raw MCP stdio server for the proxy's end-to-end
// tests: newline-delimited JSON-RPC written by hand, no SDK, so that it
// answers any tool name and can misbehave on request.
//
//   - initialize: answers with the protocol version the client asked for and
//     the tools capability.
//   - tools/list: the tools of -tools FILE (a JSON array of tool objects,
//     sent as they are) followed by one plain tool per -tool NAME.
//   - tools/call of any name: a result whose text is
//     "called NAME sha256=HEX bytes=N", HEX and N being the sha256 and length
//     of the call's raw "arguments" bytes exactly as they arrived (absent
//     arguments hash as the empty string); or, when the params contain the
//     marker __anyserver_fail__ anywhere, the JSON-RPC error -32001.
//   - ping: an empty result; any other request: -32601; notifications and
//     responses: ignored.
//
// With -faults, a tools/call whose name starts with "fault_" misbehaves:
//
//   - fault_garbage: writes lines that are not JSON-RPC (not JSON, a cut-off
//     object, an array, an object id, a response to an id nobody sent, an
//     empty object, raw control bytes), then the normal answer;
//   - fault_badutf8: writes a notification and a line holding invalid UTF-8,
//     then the normal answer;
//   - fault_deep: answers with a result nested 1,000 objects deep
//     (structuredContent.d.d.….d);
//   - fault_badresponse: answers with the call's id but both result and
//     error set (not a valid response);
//   - fault_crash: exits with status 3 without answering;
//   - fault_hang: never answers (the server keeps serving other requests).
//
// Every line it cannot read is reported on stderr and skipped.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
)

// FailMarker in a tools/call's params makes anyserver answer it with a
// JSON-RPC error.
const FailMarker = "__anyserver_fail__"

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
}

type server struct {
	out    *bufio.Writer
	tools  []json.RawMessage
	faults bool
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("anyserver: ")
	toolsFile := flag.String("tools", "", "JSON file holding the array of tools tools/list announces")
	var names stringList
	flag.Var(&names, "tool", "a tool tools/list announces, with an empty input schema (repeatable)")
	faults := flag.Bool("faults", false, `make tools named "fault_*" misbehave (see the package doc)`)
	flag.Parse()

	s := &server{out: bufio.NewWriterSize(os.Stdout, 1<<20), faults: *faults}
	if *toolsFile != "" {
		data, err := os.ReadFile(*toolsFile)
		if err != nil {
			log.Fatal(err)
		}
		if err := json.Unmarshal(data, &s.tools); err != nil {
			log.Fatalf("reading %s: %v", *toolsFile, err)
		}
	}
	for _, n := range names {
		t, _ := json.Marshal(map[string]any{"name": n, "inputSchema": map[string]any{"type": "object"}})
		s.tools = append(s.tools, t)
	}

	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			s.handle(line)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			log.Fatal(err)
		}
	}
}

func (s *server) handle(line []byte) {
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		log.Printf("skipping a line that is not a JSON-RPC message (%d bytes): %v", len(line), err)
		return
	}
	if m.Method == nil || m.ID == nil {
		return // a notification, or a response to nothing we asked
	}
	switch *m.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		json.Unmarshal(m.Params, &p)
		if p.ProtocolVersion == "" {
			p.ProtocolVersion = "2025-06-18"
		}
		s.result(m.ID, map[string]any{
			"protocolVersion": p.ProtocolVersion,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "anyserver", "version": "1.0.0"},
		})
	case "ping":
		s.result(m.ID, map[string]any{})
	case "tools/list":
		tools := s.tools
		if tools == nil {
			tools = []json.RawMessage{}
		}
		s.result(m.ID, map[string]any{"tools": tools})
	case "tools/call":
		s.call(&m)
	default:
		s.error(m.ID, -32601, "method not found: "+*m.Method)
	}
}

func (s *server) call(m *message) {
	var p struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal(m.Params, &p); err != nil {
		s.error(m.ID, -32602, "tools/call params: "+err.Error())
		return
	}
	if bytes.Contains(m.Params, []byte(FailMarker)) {
		s.error(m.ID, -32001, "anyserver: failure requested by "+FailMarker)
		return
	}
	if s.faults && strings.HasPrefix(p.Name, "fault_") {
		if !s.fault(p.Name, m) {
			return
		}
	}
	sum := sha256.Sum256(p.Arguments)
	text := fmt.Sprintf("called %s sha256=%s bytes=%d", p.Name, hex.EncodeToString(sum[:]), len(p.Arguments))
	s.result(m.ID, map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}})
}

// fault misbehaves as the tool name asks; it returns whether the normal
// answer should follow.
func (s *server) fault(name string, m *message) bool {
	switch name {
	case "fault_garbage":
		for _, l := range []string{
			"this is not json",
			`{"jsonrpc":"2.0","method":`,
			`[1,2,3]`,
			`{"jsonrpc":"2.0","id":{"x":1},"result":{}}`,
			`{"jsonrpc":"2.0","id":987654321,"result":{}}`,
			`{}`,
			"\x00\x01\x02\x7f",
			`{"jsonrpc":"1.0","id":1,"result":{}}`,
		} {
			s.line([]byte(l))
		}
	case "fault_badutf8":
		s.line([]byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"bad ` + "\xff\xfe" + ` utf-8"}}`))
		s.line([]byte("\xff\xfe\xfd"))
	case "fault_deep":
		const depth = 1000
		var b bytes.Buffer
		b.WriteString(`{"jsonrpc":"2.0","id":`)
		b.Write(m.ID)
		b.WriteString(`,"result":{"content":[{"type":"text","text":"deep"}],"structuredContent":`)
		b.WriteString(strings.Repeat(`{"d":`, depth))
		b.WriteString(`"bottom"`)
		b.WriteString(strings.Repeat(`}`, depth))
		b.WriteString(`}}`)
		s.line(b.Bytes())
		return false
	case "fault_badresponse":
		s.line(append(append([]byte(`{"jsonrpc":"2.0","id":`), m.ID...), `,"result":{},"error":{"code":1,"message":"both"}}`...))
		return false
	case "fault_crash":
		log.Print("crashing in the middle of a call, as fault_crash asks")
		os.Exit(3)
	case "fault_hang":
		return false
	}
	return true
}

func (s *server) result(id json.RawMessage, result any) {
	r, err := json.Marshal(result)
	if err != nil {
		log.Fatal(err)
	}
	s.line(append(append(append(append([]byte(`{"jsonrpc":"2.0","id":`), id...), `,"result":`...), r...), '}'))
}

func (s *server) error(id json.RawMessage, code int, msg string) {
	e, _ := json.Marshal(map[string]any{"code": code, "message": msg})
	s.line(append(append(append(append([]byte(`{"jsonrpc":"2.0","id":`), id...), `,"error":`...), e...), '}'))
}

func (s *server) line(b []byte) {
	s.out.Write(b)
	s.out.WriteByte('\n')
	if err := s.out.Flush(); err != nil {
		log.Fatal(err)
	}
}
