package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

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
