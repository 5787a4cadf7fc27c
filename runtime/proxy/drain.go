package proxy

import (
	"context"
	"time"
)

// drainPoll is how often Drain looks at the pending requests.
const drainPoll = 5 * time.Millisecond

// Pending returns how many client requests wait for the server's answer
// (held calls included).
func (p *Stdio) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Drain waits until no client request waits for the server, or ctx ends,
// and returns how many still wait: the first step of a graceful shutdown
// (then close the server's input; Run answers whatever is left with an
// error).
func (p *Stdio) Drain(ctx context.Context) int {
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		n := p.Pending()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}

// Abort answers every request still waiting for the server with a JSON-RPC
// error carrying msg, and rolls back their counters: the end of a shutdown
// whose calls outlasted its timeout. Answers the server sends later for
// them are dropped.
func (p *Stdio) Abort(msg string) { p.failPending(msg) }

// CloseServerInput flushes what the proxy has queued for the server and
// closes the server's input, so that it can exit, in order with every other
// write to it (a line being written is finished first; a spill is written
// out before the close). It reports false before Run has started: the
// caller then closes the input itself.
func (p *Stdio) CloseServerInput() bool { return p.toServer.close() }
