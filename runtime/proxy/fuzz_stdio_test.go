package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// lineSink records what the proxy sends the server; closing it ends the
// server's output.
type lineSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	close func()
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *lineSink) Close() error { s.close(); return nil }

// FuzzStdioToolsCall sends arbitrary client input through a Stdio whose
// policy allows only the tool "ok", and checks what reached the server:
// every line the server could read as a tools/call request names "ok", and
// was decided. Nothing may panic, and the relay must end cleanly.
func FuzzStdioToolsCall(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok"}}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rm"}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","Method":"ping","params":{"name":"rm"}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"ok","Name":"rm"}}`,
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"r\u006d"}}`,
		`{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"ok","name":"rm"}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"o\xffk\"}}",
		`[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"rm"}}]`,
		`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"rm"}}`,
		`{"jsonrpc":"2.0","id":9,"method":"notifications/x"}` + "\n" + `{"jsonrpc":"2.0","id":9,"result":{}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var mu sync.Mutex
		decided := map[string]int{}
		pr, pw := io.Pipe()
		sink := &lineSink{close: func() { pw.Close() }}
		p := &Stdio{
			Server: "srv",
			Decide: func(_ context.Context, in *bundles.Input) Verdict {
				mu.Lock()
				decided[in.Tool]++
				mu.Unlock()
				return Verdict{Allow: in.Tool == "ok", Message: "no"}
			},
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxLine: 1 << 16,
		}
		var out bytes.Buffer
		if err := p.Run(context.Background(), strings.NewReader(input), &out, sink, pr); err != nil {
			t.Fatalf("Run: %v", err)
		}
		for _, line := range strings.Split(sink.buf.String(), "\n") {
			var m struct {
				Method string `json:"method"`
				Params struct {
					Name string `json:"name"`
				} `json:"params"`
			}
			// encoding/json is lenient (case, repeats); a server reading
			// either way must not find a tool call the policy did not allow.
			if json.Unmarshal([]byte(line), &m) != nil || m.Method != "tools/call" {
				continue
			}
			if m.Params.Name != "ok" {
				t.Fatalf("a tools/call of %q reached the server:\n%s", m.Params.Name, line)
			}
			if decided["ok"] == 0 {
				t.Fatalf("a tools/call reached the server undecided:\n%s", line)
			}
		}
	})
}

// FuzzStdioListing answers the proxy's own tools/list with arbitrary
// server lines (ID stands for the request's id) while a client's call waits
// on it, under a policy that allows only tools listed read-only. Nothing
// may panic, the relay must end, the call reaches the server only when its
// listed annotations allowed it, the client gets exactly one answer to it,
// and never a line of the proxy's own listing.
func FuzzStdioListing(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":ID,"result":{"tools":[{"name":"rm","annotations":{"readOnlyHint":true}}]}}`,
		`{"jsonrpc":"2.0","id":ID,"result":{"tools":[{"name":"rm","annotations":{"destructiveHint":true}}]}}`,
		`{"jsonrpc":"2.0","id":ID,"result":{"tools":[],"nextCursor":"again"}}`,
		`{"jsonrpc":"2.0","id":ID,"result":{"tools":[{"name":"rm","annotations":[1]}],"nextCursor":7}}`,
		`{"jsonrpc":"2.0","id":ID,"error":{"code":-32601,"message":"no"}}`,
		`{"jsonrpc":"2.0","id":ID,"error":{"code":1}}`,
		`{"jsonrpc":"2.0","id":ID,"result":{"tools":"x"}}`,
		`{"jsonrpc":"2.0","id":ID,"result":`,
		`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}` + "\n" + `{"jsonrpc":"2.0","id":ID,"result":{}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, answer string) {
		const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}`
		var allowed, forwarded atomic.Int32
		clientR, clientW := io.Pipe()
		clientOutR, clientOutW := io.Pipe()
		serverInR, serverInW := io.Pipe()
		serverOutR, serverOutW := io.Pipe()
		p := &Stdio{
			Server: "srv",
			Decide: func(_ context.Context, in *bundles.Input) Verdict {
				ok := bytes.Contains(in.Annotations, []byte(`"readOnlyHint":true`))
				if ok {
					allowed.Add(1)
				}
				return Verdict{Allow: ok, Message: "no"}
			},
			ReadsAnnotations: func() bool { return true },
			Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxLine:          1 << 16,
			CallTimeout:      10 * time.Millisecond, // a listing never answered ends
		}
		// The server answers each of the proxy's listings (up to 5) with
		// answer, and the call, until its input ends.
		go func() {
			defer serverOutW.Close()
			r := bufio.NewReader(serverInR)
			lists := 0
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					io.Copy(io.Discard, serverInR)
					return
				}
				var m struct {
					ID     json.RawMessage `json:"id"`
					Method string          `json:"method"`
				}
				if json.Unmarshal([]byte(line), &m) != nil {
					continue
				}
				switch {
				case m.Method == "tools/call":
					forwarded.Add(1)
					io.WriteString(serverOutW, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`+"\n")
				case m.Method == "tools/list" && lists < 5:
					lists++
					io.WriteString(serverOutW, strings.ReplaceAll(answer, "ID", string(m.ID))+"\n")
				}
			}
		}()
		// The client ends its input once it has an answer.
		var got bytes.Buffer
		read := make(chan struct{})
		go func() {
			defer close(read)
			r := bufio.NewReader(clientOutR)
			first := true
			for {
				line, err := r.ReadString('\n')
				got.WriteString(line)
				if err != nil {
					return
				}
				if first {
					first = false
					clientW.Close()
				}
			}
		}()
		go io.WriteString(clientW, call+"\n")
		if err := p.Run(context.Background(), clientR, clientOutW, serverInW, serverOutR); err != nil {
			t.Fatalf("Run: %v", err)
		}
		clientOutW.Close()
		<-read
		out := got.String()
		if strings.Contains(out, "toolgate-tools-list") {
			t.Fatalf("the client got the proxy's own listing:\n%s", out)
		}
		if forwarded.Load() > 0 && allowed.Load() == 0 {
			t.Fatalf("the call reached the server without listed read-only annotations")
		}
		answers := 0
		for _, line := range strings.Split(out, "\n") {
			var m struct {
				ID     json.RawMessage `json:"id"`
				Method *string         `json:"method"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Method == nil && string(m.ID) == "1" {
				answers++
			}
		}
		if answers != 1 {
			t.Fatalf("the client got %d answers to its call:\n%s", answers, out)
		}
	})
}
