package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/toolgate/toolgate/bundles"
)

// refMessage is the envelope as encoding/json reads it: the proxy's reading
// before the hand-written scanner, kept as the oracle the fuzz tests compare
// classify with.
type refMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// classifyReference is classify as it was written on encoding/json.
func classifyReference(line []byte) (m refMessage, k kind, code int) {
	m, k, code = classifyReferenceEnvelope(line)
	if k == kindInvalid && m.ID != nil && !validID(m.ID) {
		m.ID = nil
	}
	return m, k, code
}

func classifyReferenceEnvelope(line []byte) (m refMessage, k kind, code int) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		if json.Valid(line) {
			return m, kindInvalid, codeInvalidRequest
		}
		return m, kindInvalid, codeParseError
	}
	if err := json.Unmarshal(line, &m); err != nil {
		m = refMessage{}
		if json.Valid(line) {
			var idOnly struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(line, &idOnly) == nil && validID(idOnly.ID) {
				m.ID = idOnly.ID
			}
			return m, kindInvalid, codeInvalidRequest
		}
		return m, kindInvalid, codeParseError
	}
	if m.ID != nil && !validID(m.ID) {
		if string(m.ID) != "null" || m.Method != nil {
			m.ID = nil
			return m, kindInvalid, codeInvalidRequest
		}
	}
	if m.JSONRPC != "2.0" {
		return m, kindInvalid, codeInvalidRequest
	}
	switch {
	case m.Method != nil:
		if *m.Method == "" || m.Result != nil || m.Error != nil {
			return m, kindInvalid, codeInvalidRequest
		}
		if m.Params != nil && m.Params[0] != '{' && m.Params[0] != '[' {
			return m, kindInvalid, codeInvalidRequest
		}
		if m.ID == nil {
			if *m.Method == "tools/call" {
				return m, kindInvalid, codeInvalidRequest
			}
			return m, kindNotification, 0
		}
		return m, kindRequest, 0
	case m.ID != nil && (m.Result == nil) != (m.Error == nil):
		return m, kindResponse, 0
	}
	return m, kindInvalid, codeInvalidRequest
}

// trimJSONSpace trims the white space JSON allows around a value.
func trimJSONSpace(b []byte) []byte { return bytes.Trim(b, " \t\r\n") }

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress"}`,
		`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":"a","result":{}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`,
		`{"jsonrpc":"2\u002e0","id":-1.5e3,"method":"a\ud83d\ude00\ud800b","params":[1,true,null,"\u00e9"]}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}`,
		`{"jsonrpc":"2.0","id":1,"method":7,"method":"x","jsonrpc":null}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`,
		`{"jsonrpc":"2.0","id":1,"\u006dethod":"tools/call"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","Name":"y"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"x","id":2}`,
		`{"jsonrpc":"2.0","id":1,"method":"x","extra":1,"EXTRA":2}`,
		` {"jsonrpc":"2.0","id":[1],"method":"x"} `,
		`{"jsonrpc":2,"id":3,"method":"x"}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
		`[1,2]`, `{`, ``, `null`, `{"id":1e400}`, "\xff", `{"a":[[[[{}]]]]}`, `"x"`, `-0.0e+1`, `01`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, k, code := classify(line)
		switch k {
		case kindInvalid:
			if code != codeParseError && code != codeInvalidRequest {
				t.Fatalf("invalid with code %d", code)
			}
			if m.ID != nil && !validID(m.ID) {
				t.Fatalf("invalid message keeps unusable id %s", m.ID)
			}
		case kindRequest, kindNotification:
			if m.Method == nil || (k == kindRequest) != (m.ID != nil) {
				t.Fatalf("kind %d with method %v id %s", k, m.Method, m.ID)
			}
		case kindResponse:
			if m.ID == nil || (m.Result == nil) == (m.Error == nil) {
				t.Fatalf("response without id or with result and error both set or both absent")
			}
		}
		// Every answer the proxy could build for it is valid JSON.
		if !json.Valid(appendError(nil, m.ID, code, "x")) {
			t.Fatalf("error for %q is not JSON", line)
		}
		if k == kindRequest && !json.Valid(appendDenial(nil, m.ID, &Verdict{Message: string(line)})) {
			t.Fatalf("denial for %q is not JSON", line)
		}

		// The names check that trusts classify's plain envelope answers as
		// the one that reads every name again.
		if k != kindInvalid {
			for _, call := range []bool{false, true} {
				if got, want := m.exactNames(line, call), exactNames(line, call); got != want {
					t.Fatalf("%q (call %v): exactNames after classify %v, want %v", line, call, got, want)
				}
			}
		}

		// The scanner's verdict on validity is encoding/json's.
		if valid := json.Valid(line); valid != (code != codeParseError) {
			t.Fatalf("%q: json.Valid %v, classify code %d", line, valid, code)
		}
		// And so is everything else: the scanner reads what encoding/json
		// read into the message struct.
		if !bytes.Equal(bytes.TrimSpace(line), trimJSONSpace(line)) || code == codeParseError {
			return // white space that is not JSON's (refused now), or not JSON
		}
		rm, rk, rcode := classifyReference(line)
		if k != rk || code != rcode {
			t.Fatalf("%q: kind %d code %d, want kind %d code %d", line, k, code, rk, rcode)
		}
		if !bytes.Equal(m.ID, rm.ID) || !bytes.Equal(m.Params, rm.Params) || !bytes.Equal(m.Result, rm.Result) || !bytes.Equal(m.Error, rm.Error) {
			t.Fatalf("%q: got id %s params %s result %s error %s, want %s %s %s %s", line, m.ID, m.Params, m.Result, m.Error, rm.ID, rm.Params, rm.Result, rm.Error)
		}
		if (m.Method == nil) != (rm.Method == nil) || (m.Method != nil && *m.Method != *rm.Method) {
			t.Fatalf("%q: method %v, want %v", line, m.Method, rm.Method)
		}
		if k != kindInvalid && m.JSONRPC != rm.JSONRPC {
			t.Fatalf("%q: jsonrpc %q, want %q", line, m.JSONRPC, rm.JSONRPC)
		}
		if k == kindInvalid && code == codeInvalidRequest && m.ID == nil {
			var probe struct {
				ID     json.RawMessage `json:"id"`
				Method json.RawMessage `json:"method"`
			}
			want := json.Unmarshal(line, &probe) == nil && probe.ID == nil && probe.Method != nil
			if got := looksLikeNotification(line); got != want {
				t.Fatalf("%q: looksLikeNotification %v, want %v", line, got, want)
			}
		}
	})
}

// chunkReader returns its data in reads of the sizes sizes cycles through.
type chunkReader struct {
	data  []byte
	sizes []byte
	n     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	size := 1 + int(r.sizes[r.n%len(r.sizes)])
	r.n++
	size = min(size, len(p), len(r.data))
	copy(p, r.data[:size])
	r.data = r.data[size:]
	return size, nil
}

// strictCall reads a tools/call the way a strict server would: member
// names exact, the first of a repeated member counting. ok is false when
// it is not a tools/call request to it.
func strictCall(line []byte, last bool) (name string, args json.RawMessage, ok bool) {
	members := func(b []byte) map[string]json.RawMessage {
		d := json.NewDecoder(bytes.NewReader(b))
		if t, err := d.Token(); err != nil || t != json.Delim('{') {
			return nil
		}
		out := map[string]json.RawMessage{}
		for d.More() {
			t, err := d.Token()
			if err != nil {
				return nil
			}
			var v json.RawMessage
			if d.Decode(&v) != nil {
				return nil
			}
			if _, seen := out[t.(string)]; !seen || last {
				out[t.(string)] = v
			}
		}
		return out
	}
	env := members(line)
	var method string
	if env == nil || json.Unmarshal(env["method"], &method) != nil || method != "tools/call" || env["id"] == nil {
		return "", nil, false
	}
	params := members(env["params"])
	if params == nil || json.Unmarshal(params["name"], &name) != nil {
		return "", nil, false
	}
	return name, params["arguments"], true
}

// FuzzStdioClient feeds random client input, in random read sizes, through
// the stdio proxy's framing and client path, and checks that it never
// panics, that framing finds the lines a plain split finds, that a request
// with a usable id gets exactly one answer or is forwarded, and that no
// tools/call reaches the server without Decide deciding that same call.
func FuzzStdioClient(f *testing.F) {
	for _, s := range []string{
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"a\":1}}}\n",
		"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"deny\"}}\r\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n\n",
		"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"Name\":\"deny\"}}\n",
		"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\",\"Method\":\"tools/call\",\"params\":{\"name\":\"deny\"}}\n",
		"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"ec\xffho\"}}\n",
		"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"x\":\"" + strings.Repeat("y", 300) + "\"}}}\n",
		"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"\\u0065cho\"}}\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}",
		"[{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":\"deny\"}}]\nnot json\n",
		"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"x\":\r{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"deny\"}}\r}}\n",
	} {
		f.Add([]byte(s), []byte{7, 0, 200, 63})
	}
	f.Fuzz(func(t *testing.T, input, sizes []byte) {
		if len(sizes) == 0 {
			sizes = []byte{255}
		}
		const max = 256
		var toClient, toServer bytes.Buffer
		decided := map[string]bundles.Input{} // by the line decided
		var line []byte                       // the line being handled
		p := &Stdio{
			Server:  "srv",
			MaxLine: max,
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
			Decide: func(_ context.Context, in *bundles.Input) Verdict {
				in2 := *in
				in2.Arguments = bytes.Clone(in.Arguments)
				decided[string(line)] = in2
				return Verdict{Allow: !strings.Contains(in.Tool, "deny"), Message: "no"}
			},
		}
		p.pending = map[string]pendingCall{}
		p.enforcer = &Enforcer{Server: p.Server, Decide: p.Decide, Notify: p.toClient.write}
		p.toClient.w = bufio.NewWriterSize(&toClient, 64<<10)
		p.toServer.w = bufio.NewWriterSize(&toServer, 64<<10)
		b := &batch{p: p}

		var handled []string
		err := readLines(&chunkReader{data: input, sizes: sizes}, max, func(l []byte, tooLong bool) error {
			if tooLong {
				handled = append(handled, "<too long>")
			} else {
				handled = append(handled, string(l))
			}
			line = l
			toClient.Reset()
			toServer.Reset()
			if err := p.fromClient(context.Background(), b, l, tooLong); err != nil {
				return err
			}
			if err := b.flush(); err != nil {
				return err
			}
			checkOneLine(t, l, tooLong, toClient.Bytes(), toServer.Bytes(), decided)
			return nil
		}, b.flush)
		if err != io.EOF {
			t.Fatalf("readLines: %v", err)
		}

		// Framing: the lines of a plain split.
		var want []string
		for _, l := range bytes.Split(input, []byte("\n")) {
			switch {
			case len(l) > max:
				want = append(want, "<too long>")
			case len(trimJSONSpace(l)) > 0:
				want = append(want, string(bytes.TrimSuffix(l, []byte("\r"))))
			}
		}
		if fmt.Sprint(handled) != fmt.Sprint(want) {
			t.Fatalf("lines: got %q, want %q", handled, want)
		}
	})
}

// checkOneLine checks what the proxy sent for one client line.
func checkOneLine(t *testing.T, l []byte, tooLong bool, toClient, toServer []byte, decided map[string]bundles.Input) {
	t.Helper()
	answers := bytes.Count(toClient, []byte("\n"))
	forwards := bytes.Count(toServer, []byte("\n"))
	if bytes.IndexByte(toServer, '\r') >= 0 {
		t.Fatalf("a CR reached the server (a line end to a text-mode reader): %q", toServer)
	}
	if answers+forwards > 1 {
		t.Fatalf("%q: %d answers and %d forwards", l, answers, forwards)
	}
	for _, out := range bytes.Split(toClient, []byte("\n")) {
		if len(out) > 0 && !json.Valid(out) {
			t.Fatalf("%q: answer %q is not JSON", l, out)
		}
	}
	if tooLong {
		if answers != 1 || forwards != 0 {
			t.Fatalf("too long line: %d answers, %d forwards", answers, forwards)
		}
		return
	}
	if rm, rk, _ := classifyReference(l); rk == kindRequest && validID(rm.ID) && answers+forwards != 1 {
		t.Fatalf("%q: request got %d answers and %d forwards", l, answers, forwards)
	}
	if forwards == 1 {
		if fwd := bytes.TrimSuffix(toServer, []byte("\n")); !bytes.Equal(fwd, l) {
			t.Fatalf("forwarded %q, received %q", fwd, l)
		}
		// However a server reads it, a tools/call it sees was decided,
		// on the same tool and arguments.
		in, wasDecided := decided[string(l)]
		for _, read := range []func() (string, json.RawMessage, bool){
			func() (string, json.RawMessage, bool) { return strictCall(l, false) },
			func() (string, json.RawMessage, bool) { return strictCall(l, true) },
			func() (string, json.RawMessage, bool) { // encoding/json: names in any case, the last one counting
				rm, rk, _ := classifyReference(l)
				var cp struct {
					Name      *string         `json:"name"`
					Arguments json.RawMessage `json:"arguments"`
				}
				if rk != kindRequest || *rm.Method != "tools/call" || json.Unmarshal(rm.Params, &cp) != nil || cp.Name == nil {
					return "", nil, false
				}
				return *cp.Name, cp.Arguments, true
			},
		} {
			name, args, isCall := read()
			if !isCall {
				continue
			}
			if !wasDecided {
				t.Fatalf("%q: a tools/call reached the server undecided", l)
			}
			if name != in.Tool || !utf8.ValidString(name) {
				t.Fatalf("%q: decided tool %q, a server reads %q", l, in.Tool, name)
			}
			if string(args) == "null" {
				args = nil
			}
			if !bytes.Equal(args, in.Arguments) {
				t.Fatalf("%q: decided arguments %s, a server reads %s", l, in.Arguments, args)
			}
		}
	}
}
