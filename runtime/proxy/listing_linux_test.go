//go:build linux

package proxy

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// denyDestructive allows a call unless its tool's annotations say it is
// destructive.
func denyDestructive(in *bundles.Input) Verdict {
	if strings.Contains(string(in.Annotations), `"destructiveHint":true`) {
		return Verdict{Message: "destructive", DecisionID: "d", Rule: "p.yaml#*/no-destructive", Bundle: "sha256:ab"}
	}
	return Verdict{Allow: true}
}

// eachRelay runs test over the poll loop and over the portable relay.
func eachRelay(t *testing.T, test func(t *testing.T, portable bool)) {
	for _, portable := range []bool{false, true} {
		name := "poll"
		if portable {
			name = "portable"
		}
		t.Run(name, func(t *testing.T) { test(t, portable) })
	}
}

// A client that calls without listing tools still gets decisions on the
// annotations the server announces: the proxy lists the tools itself, page
// by page, holding the calls (in order) meanwhile; its own requests and
// their answers never reach the client.
func TestStdioListsToolsForAnnotations(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		var reads atomic.Bool
		reads.Store(true)
		h := newPollHarness(t, denyDestructive, func(p *Stdio) { p.ReadsAnnotations = reads.Load }, portable)

		wipe := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wipe","arguments":{}}}`
		echo := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"t":"x"}}}`
		h.fromClient(wipe)
		if got, want := h.serverGets(), `{"jsonrpc":"2.0","id":"toolgate/tools-list/1","method":"tools/list"}`; got != want {
			t.Fatalf("server got %s, want the proxy's own listing %s", got, want)
		}
		h.fromClient(echo) // waits behind the first
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate/tools-list/1","result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}}],"nextCursor":"p2"}}`)
		if got, want := h.serverGets(), `{"jsonrpc":"2.0","id":"toolgate/tools-list/2","method":"tools/list","params":{"cursor":"p2"}}`; got != want {
			t.Fatalf("second page: server got %s, want %s", got, want)
		}
		if len(h.decided()) != 0 {
			t.Fatal("a call was decided before the listing ended")
		}
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate/tools-list/2","result":{"tools":[{"name":"wipe","annotations":{"destructiveHint":true}}]}}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":1,`) || !strings.Contains(got, `"isError":true`) || !strings.Contains(got, "destructive") {
			t.Fatalf("the destructive call: client got %s, want it denied", got)
		}
		if got := h.serverGets(); got != echo {
			t.Fatalf("the read-only call: server got %s, want %s", got, echo)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":2,"result":{"content":[]}}`)
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":2,"result":{"content":[]}}` {
			t.Fatalf("client got %s", got)
		}

		// Listed in full: a tool the server did not list has no
		// annotations, and needs no new listing.
		other := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"gone"}}`
		h.fromClient(other)
		if got := h.serverGets(); got != other {
			t.Fatalf("server got %s, want the call %s", got, other)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":3,"result":{"content":[]}}`)
		h.clientGets()

		// The server's list changed: listed again; an error answer lists
		// nothing.
		changed := `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
		h.fromServer(changed)
		if got := h.clientGets(); got != changed {
			t.Fatalf("client got %s, want %s", got, changed)
		}
		fresh := `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"fresh"}}`
		h.fromClient(fresh)
		if got, want := h.serverGets(), `{"jsonrpc":"2.0","id":"toolgate/tools-list/3","method":"tools/list"}`; got != want {
			t.Fatalf("after list_changed: server got %s, want %s", got, want)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate/tools-list/3","error":{"code":-32601,"message":"no tools here"}}`)
		if got := h.serverGets(); got != fresh {
			t.Fatalf("server got %s, want %s", got, fresh)
		}

		// A policy that reads no annotations needs no listing.
		reads.Store(false)
		h.fromServer(changed)
		h.clientGets()
		plain := `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"plain"}}`
		h.fromClient(plain)
		if got := h.serverGets(); got != plain {
			t.Fatalf("policy without annotations: server got %s, want %s", got, plain)
		}

		var got []string
		for _, in := range h.decided() {
			got = append(got, in.Tool+"="+string(in.Annotations))
		}
		want := []string{`wipe={"destructiveHint":true}`, `echo={"readOnlyHint":true}`, "gone=", "fresh=", "plain="}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("decided %v, want %v", got, want)
		}
	})
}

// A listing that fails fails the calls waiting on it, closed: not
// answered in time, answered unreadably, or the server exits. The proxy
// never takes an id a client request is using.
func TestStdioListingFails(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, allowAll, func(p *Stdio) {
			p.ReadsAnnotations = func() bool { return true }
			p.CallTimeout = 100 * time.Millisecond
		}, portable)

		// A client request holding the id the proxy would take first.
		h.fromClient(`{"jsonrpc":"2.0","id":"toolgate/tools-list/1","method":"x/slow"}`)
		h.serverGets()
		h.fromClient(`{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"a"}}`)
		if got, want := h.serverGets(), `{"jsonrpc":"2.0","id":"toolgate/tools-list/2","method":"tools/list"}`; got != want {
			t.Fatalf("server got %s, want %s", got, want)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate/tools-list/1","result":{}}`) // the client's answer
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":"toolgate/tools-list/1","result":{}}` {
			t.Fatalf("client got %s, want its own answer", got)
		}
		// Not answered within CallTimeout.
		if got := h.clientGets(); !strings.Contains(got, `"id":10,`) || !strings.Contains(got, `-32000`) || !strings.Contains(got, "did not answer the proxy's tools/list") {
			t.Fatalf("client got %s, want call 10 failed for want of the listing", got)
		}
		if got := h.serverGets(); !strings.Contains(got, `"notifications/cancelled"`) || !strings.Contains(got, `"toolgate/tools-list/2"`) {
			t.Fatalf("server got %s, want the listing cancelled", got)
		}

		// The next call lists again; an unreadable page fails it.
		h.fromClient(`{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"a"}}`)
		if got, want := h.serverGets(), `{"jsonrpc":"2.0","id":"toolgate/tools-list/3","method":"tools/list"}`; got != want {
			t.Fatalf("server got %s, want %s", got, want)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate/tools-list/3","result":{"tools":"none"}}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":11,`) || !strings.Contains(got, "could not read the MCP server's list of tools") {
			t.Fatalf("client got %s, want call 11 failed", got)
		}

		// An error answer other than "method not found" fails it too.
		h.fromClient(`{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"a"}}`)
		if got, want := h.serverGets(), `{"jsonrpc":"2.0","id":"toolgate/tools-list/4","method":"tools/list"}`; got != want {
			t.Fatalf("server got %s, want %s", got, want)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate/tools-list/4","error":{"code":0,"message":"invalid during session initialization"}}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":12,`) || !strings.Contains(got, "refused the proxy's tools/list") {
			t.Fatalf("client got %s, want call 12 failed", got)
		}

		// The server exits while a listing is under way.
		h.fromClient(`{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"a"}}`)
		h.serverGets()
		h.server.Close()
		if got := h.clientGets(); !strings.Contains(got, `"id":13,`) || !strings.Contains(got, "exited") {
			t.Fatalf("client got %s, want call 13 failed", got)
		}
		if n := len(h.decided()); n != 0 {
			t.Fatalf("%d calls decided, want none (every listing failed)", n)
		}
	})
}
