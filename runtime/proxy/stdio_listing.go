package proxy

import (
	"context"
	"encoding/json"
	"time"
)

// Over stdio the proxy lists the server's tools on the server's own pipe:
// requests with ids of its own (newListID, pending as own and
// held, so no sweep times them out), whose answers fromServer hands to
// listed and never to the client. The calls waiting on a listing are
// copies of their lines, pending as held; a client's cancellation of one
// drops it. A listing is bounded as a whole by a timer; the calls are
// released (decided, forwarded) off the relay's goroutines, in order, so
// that neither reading peer ever waits on a write to the server; a call
// that finds the catalog stale again when its turn comes starts a new
// listing, with the calls behind it. The client's end of input closes the
// server's input only once the calls waiting have been sent.

// stdioListing is the proxy's own listing of the server's tools.
type stdioListing struct {
	id       string               // the pending key of its request in flight; "" when none
	gen      uint64               // the catalog's generation it started from
	pages    int                  // pages read since it (re)started
	restarts int                  // times it started over: the tools changed meanwhile
	tools    map[string]toolEntry // what it has read
	waiting  []waitingCall        // tools/call requests waiting on it, in order
	timer    *time.Timer          // fails it at its deadline
	started  time.Time
	finished bool // it ended: its calls are being released
}

// waitingCall is a tools/call waiting on a listing: its pending key and a
// copy of its line.
type waitingCall struct {
	key  string
	line []byte
}

// errInputClosed answers a call released from a listing when the server's
// input is closed (the client's input ended meanwhile).
const errInputClosed = "the call could not be sent: the MCP server's input is closed"

// awaitListing holds the tools/call line (as pending call c) until the
// proxy has listed the server's tools. It joins the listing under way, or,
// when there is none, starts one if start is set and otherwise reports
// that it did not queue the call (the listing has just ended).
func (p *Stdio) awaitListing(b *batch, c pendingCall, line []byte, start bool) (queued bool, err error) {
	c.held, c.waits = true, true
	p.mu.Lock()
	l := p.listing
	switch {
	case l == nil && !start:
		p.mu.Unlock()
		return false, nil
	case p.ended:
		p.mu.Unlock()
		return true, b.toClientAppend(func(dst []byte) []byte {
			return appendError(dst, c.id, codeUpstreamGone, "the proxy no longer relays calls to the MCP server (it exited, or the proxy is shutting down)")
		})
	case l != nil && len(l.waiting) >= MaxListWaiting:
		p.mu.Unlock()
		return true, b.toClientAppend(func(dst []byte) []byte {
			return appendError(dst, c.id, codeUpstreamGone, "too many calls are waiting for the proxy's listing of the MCP server's tools")
		})
	case l == nil:
		l = p.newListing()
	default:
		start = false
	}
	key := string(idKey(c.id)) // c.id is the id as the client wrote it
	p.pending[key] = c         // the id is in use while the call waits
	l.waiting = append(l.waiting, waitingCall{key, append([]byte(nil), line...)})
	var req []byte
	if start {
		req = p.ownRequest(l, nil)
	}
	p.mu.Unlock()
	if start {
		return true, b.toServer(req)
	}
	return true, nil
}

// newListing starts a listing, in force, with its deadline. p.mu is held.
func (p *Stdio) newListing() *stdioListing {
	l := &stdioListing{gen: p.catalog.generation(), tools: map[string]toolEntry{}, started: time.Now()}
	timeout := listTimeout(p.CallTimeout)
	l.timer = time.AfterFunc(timeout, func() { p.listingTimedOut(l, timeout) })
	p.listing = l
	return l
}

// cancelWaiting drops the call with id (a client's
// notifications/cancelled names it) when it waits on the listing: the
// server never got it, and MCP answers no cancelled request. A request
// already forwarded stops waiting for the server's answer (which, if the
// server sends it anyway, the client ignores).
func (p *Stdio) cancelWaiting(id json.RawMessage) {
	k := idKey(id)
	var done func(ok bool) // called once p.mu is released
	defer func() {
		if done != nil {
			done(outcomeUnknown(true))
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.pending[string(k)]; ok && c.waits {
		delete(p.pending, string(k)) // being released: skipped there
	} else if ok && !c.held && !c.own && !c.expired {
		// Forwarded: the server is told too and should not answer (MCP);
		// the request no longer waits (a shutdown need not wait for it),
		// and counts, as a call without an answer does.
		delete(p.pending, string(k))
		done = c.done
		return
	}
	l := p.listing
	if l == nil {
		return
	}
	for i, w := range l.waiting {
		if w.key == string(k) {
			l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
			delete(p.pending, w.key)
			return
		}
	}
}

// closeServerInput closes the server's input once no call waits on a
// listing (the client's input ended; the waiting calls are still to be
// sent).
func (p *Stdio) closeServerInput() {
	p.mu.Lock()
	if p.listing != nil {
		p.closeAfterListing = true
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.toServer.close()
}

// listingOver ends the stdio listing state once l's calls are all sent or
// answered, closing the server's input if the client's input has ended.
// p.mu is held, and released here.
func (p *Stdio) listingOver(l *stdioListing) {
	if p.listing == l {
		p.listing = nil
	}
	closeInput := p.listing == nil && p.closeAfterListing
	p.mu.Unlock()
	if closeInput {
		p.toServer.close()
	}
}

// ownRequest makes the next request of listing l, for the page after
// cursor (nil: the first), pending under a fresh id. p.mu is held.
func (p *Stdio) ownRequest(l *stdioListing, cursor json.RawMessage) []byte {
	id := newListID()
	raw := json.RawMessage(appendString(nil, id))
	l.id = string(raw)
	p.pending[l.id] = pendingCall{id: raw, method: "tools/list", own: true, held: true}
	return appendListRequest(nil, id, cursor)
}

// sendOwn writes listing l's next request off the relay's goroutines.
func (p *Stdio) sendOwn(l *stdioListing, req []byte) {
	go func() {
		if p.toServer.write(req) != nil {
			p.finishListing(l, errInputClosed)
		}
	}()
}

// listed takes the server's answer m to the proxy's own request key: it
// adds the page to the listing and asks for the next, starts over when the
// server said its tools changed meanwhile, or ends the listing. A
// method-not-found answer ends it well: the server lists nothing (more);
// any other error answer fails it.
func (p *Stdio) listed(key string, m *message) {
	p.mu.Lock()
	l := p.listing
	if l == nil || l.finished || l.id != key {
		p.mu.Unlock()
		return
	}
	l.id = ""
	if m.Error != nil && !listsNothing(m.Error) {
		p.mu.Unlock()
		p.Logger.Warn("the MCP server answered the proxy's tools/list with an error", "error", string(m.Error))
		p.upstreamError()
		p.finishListing(l, "the MCP server refused the proxy's tools/list, which the policy in force needs (tool.annotations)")
		return
	}
	if m.Error == nil {
		next, err := parsePage(m.Result, l.tools)
		if err != nil {
			p.mu.Unlock()
			p.Logger.Warn("the MCP server's tools/list answer to the proxy cannot be read", "err", err)
			p.upstreamError()
			p.finishListing(l, "the proxy could not read the MCP server's list of tools, which the policy in force needs (tool.annotations)")
			return
		}
		l.pages++
		if next != nil && l.pages < MaxToolPages {
			req := p.ownRequest(l, next)
			p.mu.Unlock()
			p.sendOwn(l, req)
			return
		}
		if next != nil {
			p.Logger.Warn("the MCP server's list of tools has more pages than the proxy reads", "pages", MaxToolPages)
		}
	}
	if !p.catalog.replace(l.tools, l.gen) {
		// The server said its tools changed while they were read.
		if l.restarts == MaxListRestarts {
			p.mu.Unlock()
			p.Logger.Warn(errListKeptChanging.Error())
			p.finishListing(l, "the MCP server's tools kept changing while the proxy listed them; the policy in force needs their annotations (tool.annotations)")
			return
		}
		l.restarts++
		l.pages, l.gen, l.tools = 0, p.catalog.generation(), map[string]toolEntry{}
		req := p.ownRequest(l, nil)
		p.mu.Unlock()
		p.sendOwn(l, req)
		return
	}
	tools, took := len(l.tools), time.Since(l.started)
	p.mu.Unlock()
	p.Logger.Info("listed the MCP server's tools", "tools", tools, "took", took)
	p.finishListing(l, "")
}

// failListing fails the listing whose request in flight is key.
func (p *Stdio) failListing(key, msg string) {
	p.mu.Lock()
	l := p.listing
	current := l != nil && !l.finished && l.id == key
	p.mu.Unlock()
	if current {
		p.finishListing(l, msg)
	}
}

// listingTimedOut fails listing l at its deadline, cancelling its request
// in flight.
func (p *Stdio) listingTimedOut(l *stdioListing, timeout time.Duration) {
	p.mu.Lock()
	current := p.listing == l && !l.finished
	id := l.id
	p.mu.Unlock()
	if !current {
		return
	}
	p.Logger.Warn("the MCP server did not answer the proxy's tools/list in time", "timeout", timeout)
	p.upstreamError()
	if id != "" { // written on its own: the server may not be reading
		go p.toServer.write(appendCancelled(nil, json.RawMessage(id), "toolgate: no answer within "+timeout.String()))
	}
	p.finishListing(l, listFailure(context.DeadlineExceeded, timeout))
}

// finishListing ends listing l, once. Failed (a message), its calls are
// answered with failed as a JSON-RPC error (-32000) and the next call
// lists again; else they are released in order, off the relay's
// goroutines, while later calls keep joining them.
func (p *Stdio) finishListing(l *stdioListing, failed string) {
	p.mu.Lock()
	if p.listing != l || l.finished {
		p.mu.Unlock()
		return
	}
	l.finished = true
	l.timer.Stop()
	if p.Listed != nil {
		defer p.Listed(failed == "")
	}
	if l.id != "" {
		delete(p.pending, l.id) // a late answer is dropped (ownListID)
		l.id = ""
	}
	if failed == "" {
		p.mu.Unlock()
		go p.release(l)
		return
	}
	waiting := l.waiting
	l.waiting = nil
	p.listingOver(l)
	for _, w := range waiting {
		if c, ok := p.take(json.RawMessage(w.key)); ok { // else answered meanwhile (the server exited)
			p.toClient.queue(appendError(nil, c.id, codeUpstreamGone, failed))
		}
	}
	p.toClient.flush()
}

// release decides the calls waiting on listing l, in order, forwarding
// those allowed, until none waits; then the listing is over. A call that
// finds the catalog stale again (the server said its tools changed) starts
// a new listing, which the calls behind it join.
func (p *Stdio) release(l *stdioListing) {
	b := &batch{p: p}
	for {
		p.mu.Lock()
		waiting := l.waiting
		l.waiting = nil
		if len(waiting) == 0 {
			p.listingOver(l)
			return
		}
		p.mu.Unlock()
		for i, w := range waiting {
			p.mu.Lock()
			c, ok := p.pending[w.key]
			p.mu.Unlock()
			if !ok {
				continue // answered meanwhile (the server exited), or cancelled
			}
			m, _, _ := classifyView(w.line) // classified when it came
			forward, listFirst, _ := p.decideCall(p.runCtx, b, w.key, c, &m, w.line)
			b.flush() // its answer, when the proxy gave one
			if listFirst {
				p.relist(l, waiting[i:])
				return
			}
			if forward && p.toServer.write(w.line) != nil {
				if c, ok := p.take(c.id); ok {
					if c.done != nil {
						c.done(false) // never reached the server
					}
					p.toClient.write(appendError(nil, c.id, codeUpstreamGone, errInputClosed))
				}
			}
		}
	}
}

// relist moves the calls of listing l still to be released (rest, then
// those that joined meanwhile) to a new listing, and starts it.
func (p *Stdio) relist(l *stdioListing, rest []waitingCall) {
	p.mu.Lock()
	if p.listing != l || p.ended {
		// Run is over (the server exited): its calls were answered.
		p.mu.Unlock()
		return
	}
	n := p.newListing()
	n.waiting = append(append(n.waiting, rest...), l.waiting...)
	l.waiting = nil
	req := p.ownRequest(n, nil)
	p.mu.Unlock()
	p.sendOwn(n, req)
}
