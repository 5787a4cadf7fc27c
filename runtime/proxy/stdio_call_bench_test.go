package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/runtime/admin"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
)

// benchPolicy is test/proxybench's policy: an allowed call matches a regex
// and reserves an hourly counter; another tool is always denied.
const benchPolicy = `version: "1"
default: allow
tools:
  echo:
    rules:
      - name: paths under /srv
        conditions: [{path: args.path, op: regex, value: "^/srv/"}]
      - name: hourly
        rate_limit: 1000000000/hour
  delete_everything:
    rules:
      - name: never
        action: deny
`

// BenchmarkStdioCall is the stdio proxy's whole work for one tools/call and
// its answer, as `toolgate proxy --state memory` does it: reading both
// messages, the decision (the engine with its memo, behind the metrics),
// the counter reservation, the pending-call bookkeeping and writing both
// out (to io.Discard), without the system calls. Its allocations are what
// every call leaves for the garbage collector.
func BenchmarkStdioCall(b *testing.B) {
	eng := engine.New()
	b.Cleanup(eng.Close)
	bd, _, err := build.Build(context.Background(), []policy.Source{{Path: "bench.yaml", Data: []byte(benchPolicy)}}, build.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, bd); err != nil {
		b.Fatal(err)
	}
	if err := eng.Swap(context.Background(), bundles.Digest(buf.Bytes()), bd); err != nil {
		b.Fatal(err)
	}
	pol := NewPolicy(admin.Instrument(eng, admin.NewMetrics()), WithCounters(counters.New()), WithLogger(quiet))
	for _, tool := range []string{"echo", "delete_everything"} {
		b.Run("tool="+tool, func(b *testing.B) {
			p := &Stdio{Server: "bench", Decide: pol.Decide, Logger: quiet}
			p.pending = map[string]pendingCall{}
			p.enforcer = &Enforcer{Server: p.Server, Decide: p.Decide}
			var toClient, toServer countingWriter
			p.toClient.w = bufio.NewWriterSize(&toClient, 64<<10)
			p.toServer.w = bufio.NewWriterSize(&toServer, 64<<10)
			fromClient, fromServer := &batch{p: p}, &batch{p: p}
			ctx := context.Background()
			var call, answer []byte
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				call = fmt.Appendf(call[:0], `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"path":"/srv/a","text":"hello"}}}`, i, tool)
				answer = fmt.Appendf(answer[:0], `{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}`, i)
				if err := p.fromClient(ctx, fromClient, call, false); err != nil {
					b.Fatal(err)
				}
				fromClient.flush()
				if toServer.n > 0 {
					toServer.n = 0
					if err := p.fromServer(ctx, fromServer, answer, false); err != nil {
						b.Fatal(err)
					}
					fromServer.flush()
				}
			}
			if len(p.pending) != 0 {
				b.Fatalf("%d calls still pending", len(p.pending))
			}
			if forwarded := tool == "echo"; (toClient.lines == 0) || (toServer.lines == 0) == forwarded {
				b.Fatalf("%s: %d lines to the client, %d to the server", tool, toClient.lines, toServer.lines)
			}
		})
	}
}

// countingWriter counts the bytes and lines written to it.
type countingWriter struct{ n, lines int }

func (w *countingWriter) Write(b []byte) (int, error) {
	w.n += len(b)
	w.lines += bytes.Count(b, []byte{'\n'})
	return len(b), nil
}

var _ io.Writer = (*countingWriter)(nil)
