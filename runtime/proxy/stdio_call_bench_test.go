package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/toolgate/toolgate/runtime/admin"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
)

// BenchmarkStdioCall is the stdio proxy's whole work for one tools/call and
// its answer, as `toolgate proxy --state memory` does it (the client has not
// listed tools; the policy reads no annotations): reading both
// messages, the decision (the engine with its memo, behind the metrics),
// the counter reservation, the pending-call bookkeeping and writing both
// out (to writers that only count), without the system calls. Its
// allocations, but for the two of fmt building the messages, are what every
// call leaves for the garbage collector.
func BenchmarkStdioCall(b *testing.B) {
	eng := engine.New()
	b.Cleanup(eng.Close)
	// test/proxybench's policy: an allowed call matches a regex and
	// reserves an hourly counter; another tool is always denied.
	src, err := os.ReadFile("../../test/proxybench/testdata/policies/bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	swapInPolicy(b, eng, "bench.yaml", src)
	pol := NewPolicy(eng, WithCounters(counters.New()), WithLogger(quiet), WithDecided(admin.NewMetrics().Decided))
	for _, tool := range []string{"echo", "delete_everything"} {
		b.Run("tool="+tool, func(b *testing.B) {
			p := &Stdio{Server: "bench", Decide: pol.Decide, Logger: quiet, ReadsAnnotations: pol.ReadsAnnotations}
			p.pending = map[string]pendingCall{}
			p.enforcer = &Enforcer{Server: p.Server, Decide: p.Decide, ReadsAnnotations: p.ReadsAnnotations}
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
