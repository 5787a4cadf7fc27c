//go:build linux

package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
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

// readsAnnotations configures a harness's Stdio as under a bundle that
// reads tool.annotations.
func readsAnnotations(p *Stdio) { p.ReadsAnnotations = func() bool { return true } }

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

// listRequest reads the proxy's own tools/list request from the server's
// side and returns its id (raw JSON) and cursor.
func (h *pollHarness) listRequest() (id, cursor string) {
	h.t.Helper()
	line := h.serverGets()
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Cursor string `json:"cursor"`
		} `json:"params"`
	}
	if err := json.Unmarshal([]byte(line), &m); err != nil || m.Method != "tools/list" || !strings.HasPrefix(string(m.ID), `"toolgate-tools-list-`) {
		h.t.Fatalf("server got %s, want the proxy's own tools/list", line)
	}
	return string(m.ID), m.Params.Cursor
}

// answerList answers the proxy's request id with result.
func (h *pollHarness) answerList(id, result string) {
	h.t.Helper()
	h.fromServer(`{"jsonrpc":"2.0","id":` + id + `,"result":` + result + `}`)
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
		id, cursor := h.listRequest()
		if cursor != "" {
			t.Fatalf("first page asked with cursor %q", cursor)
		}
		h.fromClient(echo) // waits behind the first
		h.answerList(id, `{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}}],"nextCursor":"p2"}`)
		id2, cursor := h.listRequest()
		if cursor != "p2" || id2 == id {
			t.Fatalf("second page: id %s cursor %q, want a new id and cursor p2", id2, cursor)
		}
		if len(h.decided()) != 0 {
			t.Fatal("a call was decided before the listing ended")
		}
		h.answerList(id2, `{"tools":[{"name":"wipe","annotations":{"destructiveHint":true}}]}`)
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

		// The server's list changed: even a listed tool waits for a new
		// listing, which replaces the old one; "method not found" lists
		// nothing.
		changed := `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
		h.fromServer(changed)
		if got := h.clientGets(); got != changed {
			t.Fatalf("client got %s, want %s", got, changed)
		}
		again := `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"}}`
		h.fromClient(again)
		id3, _ := h.listRequest()
		h.fromServer(`{"jsonrpc":"2.0","id":` + id3 + `,"error":{"code":-32601,"message":"no tools here"}}`)
		if got := h.serverGets(); got != again {
			t.Fatalf("server got %s, want %s", got, again)
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
		want := []string{`wipe={"destructiveHint":true}`, `echo={"readOnlyHint":true}`, "gone=", "echo=", "plain="}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("decided %v, want %v", got, want)
		}
	})
}

// A listing that fails fails the calls waiting on it, closed: not
// answered in time, answered with an error or unreadably, or the server
// exits. A late answer to it never reaches the client.
func TestStdioListingFails(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		var listed, failed atomic.Int32
		h := newPollHarness(t, allowAll, func(p *Stdio) {
			p.ReadsAnnotations = func() bool { return true }
			p.CallTimeout = 100 * time.Millisecond
			p.Listed = func(ok bool) {
				if ok {
					listed.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}, portable)

		h.fromClient(`{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"a"}}`)
		id, _ := h.listRequest()
		// Not answered within CallTimeout.
		if got := h.clientGets(); !strings.Contains(got, `"id":10,`) || !strings.Contains(got, `-32000`) || !strings.Contains(got, "did not answer the proxy's tools/list within 100ms") {
			t.Fatalf("client got %s, want call 10 failed for want of the listing", got)
		}
		if got := h.serverGets(); !strings.Contains(got, `"notifications/cancelled"`) || !strings.Contains(got, id) {
			t.Fatalf("server got %s, want the listing %s cancelled", got, id)
		}
		// Its late answer is dropped: the client's next line is the answer
		// to its next request.
		h.answerList(id, `{"tools":[]}`)
		h.fromClient(`{"jsonrpc":"2.0","id":"p","method":"ping"}`)
		h.serverGets()
		h.fromServer(`{"jsonrpc":"2.0","id":"p","result":{}}`)
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":"p","result":{}}` {
			t.Fatalf("client got %s, want the answer to its ping (the late listing dropped)", got)
		}

		// The next call lists again; an unreadable page fails it.
		h.fromClient(`{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"a"}}`)
		id, _ = h.listRequest()
		h.answerList(id, `{"tools":"none"}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":11,`) || !strings.Contains(got, "could not read the MCP server's list of tools") {
			t.Fatalf("client got %s, want call 11 failed", got)
		}

		// An error answer other than "method not found" fails it too.
		h.fromClient(`{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"a"}}`)
		id, _ = h.listRequest()
		h.fromServer(`{"jsonrpc":"2.0","id":` + id + `,"error":{"code":0,"message":"invalid during session initialization"}}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":12,`) || !strings.Contains(got, "refused the proxy's tools/list") {
			t.Fatalf("client got %s, want call 12 failed", got)
		}

		// The server exits while a listing is under way.
		h.fromClient(`{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"a"}}`)
		h.listRequest()
		h.server.Close()
		if got := h.clientGets(); !strings.Contains(got, `"id":13,`) || !strings.Contains(got, "exited") {
			t.Fatalf("client got %s, want call 13 failed", got)
		}
		if n := len(h.decided()); n != 0 {
			t.Fatalf("%d calls decided, want none (every listing failed)", n)
		}
		if h.wait(); listed.Load() != 0 || failed.Load() != 4 {
			t.Fatalf("listings reported: %d listed, %d failed; want 0 and 4", listed.Load(), failed.Load())
		}
	})
}

// The server's answer to a client request whose id, spelled with escapes,
// reads as a predictable form of the proxy's ids is the client's: the
// proxy's ids are random, and only its own request's answer is a page.
func TestStdioListingIDNotGuessable(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, denyDestructive, readsAnnotations, portable)
		h.fromClient(`{"jsonrpc":"2.0","id":"toolgate\u002dtools\u002dlist\u002d1","method":"ping"}`)
		h.serverGets()
		h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wipe"}}`)
		id, _ := h.listRequest()
		// The server answers the ping as servers do, the id decoded.
		h.fromServer(`{"jsonrpc":"2.0","id":"toolgate-tools-list-1","result":{}}`)
		if got := h.clientGets(); got != `{"jsonrpc":"2.0","id":"toolgate-tools-list-1","result":{}}` {
			t.Fatalf("client got %s, want the answer to its ping", got)
		}
		if n := len(h.decided()); n != 0 {
			t.Fatal("the call was decided on the answer to the client's ping")
		}
		h.answerList(id, `{"tools":[{"name":"wipe","annotations":{"destructiveHint":true}}]}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":1,`) || !strings.Contains(got, `"isError":true`) {
			t.Fatalf("client got %s, want the call denied", got)
		}
	})
}

// The server saying its tools changed while the proxy reads them makes the
// listing start over: a tool added meanwhile is decided on its
// annotations.
func TestStdioListingRestartsOnChange(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, denyDestructive, readsAnnotations, portable)
		h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wipe"}}`)
		id, _ := h.listRequest()
		h.answerList(id, `{"tools":[{"name":"echo"}],"nextCursor":"p2"}`)
		id, _ = h.listRequest()
		h.fromServer(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
		h.clientGets()
		h.answerList(id, `{"tools":[]}`)
		id, cursor := h.listRequest() // from the start
		if cursor != "" {
			t.Fatalf("restarted listing asked for cursor %q, want the first page", cursor)
		}
		h.answerList(id, `{"tools":[{"name":"echo"},{"name":"wipe","annotations":{"destructiveHint":true}}]}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":1,`) || !strings.Contains(got, `"isError":true`) {
			t.Fatalf("client got %s, want the call denied on the new listing", got)
		}
	})
}

// A released call larger than the server's pipe is written off the
// relay's goroutines: the server's messages keep flowing while it reads.
func TestStdioReleaseDoesNotBlockServer(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, allowAll, readsAnnotations, portable)
		big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":"` + strings.Repeat("y", 256<<10) + `"}}}`
		h.fromClient(big)
		id, _ := h.listRequest()
		h.answerList(id, `{"tools":[]}`)
		note := `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`
		h.fromServer(note)
		if got := h.clientGets(); got != note {
			t.Fatalf("client got %.100s, want the server's notification while the call is written", got)
		}
		if got := h.serverGets(); got != big {
			t.Fatalf("server got %d bytes, want the call (%d)", len(got), len(big))
		}
	})
}

// gatedDecide holds the decision of tool "slow" until gate is closed,
// signalling entered, and answers it with slow; other tools:
// denyDestructive.
func gatedDecide(entered chan<- struct{}, gate <-chan struct{}, slow Verdict) func(in *bundles.Input) Verdict {
	return func(in *bundles.Input) Verdict {
		if in.Tool == "slow" {
			entered <- struct{}{}
			<-gate
			return slow
		}
		return denyDestructive(in)
	}
}

// A call that joins the released calls after the server said its tools
// changed waits for a new listing: a tool added meanwhile is decided on
// its annotations.
func TestStdioReleasedCallRelistsAfterChange(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		entered, gate := make(chan struct{}, 1), make(chan struct{})
		var once sync.Once
		open := func() { once.Do(func() { close(gate) }) }
		defer open()
		h := newPollHarness(t, gatedDecide(entered, gate, Verdict{Allow: true}), readsAnnotations, portable)
		slow := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`
		h.fromClient(slow)
		id, _ := h.listRequest()
		h.answerList(id, `{"tools":[{"name":"slow"}]}`)
		<-entered // the release is deciding "slow"
		h.fromServer(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
		h.clientGets()
		wipe := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"wipe"}}`
		h.fromClient(wipe)
		h.fromClient(`{"jsonrpc":"2.0","id":"p","method":"ping"}`)
		if got := h.serverGets(); !strings.Contains(got, `"ping"`) {
			t.Fatalf("server got %s, want the ping", got)
		}
		open()
		if got := h.serverGets(); got != slow {
			t.Fatalf("server got %s, want %s", got, slow)
		}
		id, _ = h.listRequest() // a new listing, before wipe is decided
		h.answerList(id, `{"tools":[{"name":"slow"},{"name":"wipe","annotations":{"destructiveHint":true}}]}`)
		if got := h.clientGets(); !strings.Contains(got, `"id":2,`) || !strings.Contains(got, `"isError":true`) {
			t.Fatalf("client got %s, want wipe denied on the new listing", got)
		}
	})
}

// The server exits while a released call is being decided: the call was
// answered then ("exited"), and is neither answered again nor forwarded;
// an allowed one is rolled back.
func TestStdioReleaseAfterServerExit(t *testing.T) {
	for _, allow := range []bool{false, true} {
		eachRelay(t, func(t *testing.T, portable bool) {
			entered, gate := make(chan struct{}, 1), make(chan struct{})
			verdict := Verdict{Allow: allow, Message: "no", DecisionID: "d", Rule: "r", Bundle: "b"}
			h := newPollHarness(t, gatedDecide(entered, gate, verdict), readsAnnotations, portable)
			h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`)
			id, _ := h.listRequest()
			h.answerList(id, `{"tools":[{"name":"slow"}]}`)
			<-entered
			h.server.Close()
			if got := h.clientGets(); !strings.Contains(got, `"id":1,`) || !strings.Contains(got, "exited") {
				t.Fatalf("client got %s, want call 1 failed (the server exited)", got)
			}
			if _, ok := h.wait(); !ok {
				t.Fatal("Run did not return")
			}
			close(gate)
			h.clientOut.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if again, err := h.toClient.ReadString('\n'); err == nil {
				t.Fatalf("allow=%v: call 1 answered twice, then: %s", allow, again)
			}
			h.serverIn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if got, err := h.toServer.ReadString('\n'); err == nil {
				t.Fatalf("allow=%v: call forwarded after Run returned: %s", allow, got)
			}
			if want := map[bool]string{true: "[false]", false: "[]"}[allow]; fmt.Sprint(h.dones()) != want {
				t.Fatalf("allow=%v: Done calls %v, want %s", allow, h.dones(), want)
			}
		})
	}
}

// The proxy's ids are letters, digits and dashes: no JSON encoder escapes
// them (PHP's escapes "/"), so a server's answer always matches.
func TestStdioListingIDPlain(t *testing.T) {
	h := newPollHarness(t, allowAll, readsAnnotations, false)
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`)
	id, _ := h.listRequest()
	if !regexp.MustCompile(`^"[A-Za-z0-9-]+"$`).MatchString(id) {
		t.Fatalf("listing id %s: want only letters, digits and dashes", id)
	}
}

// A client that sends its call and then ends its input (a one-shot script)
// still has the call sent once the listing ends; the server's input closes
// after it.
func TestStdioClientEOFDuringListing(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, allowAll, readsAnnotations, portable)
		call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`
		h.fromClient(call)
		id, _ := h.listRequest()
		h.client.Close()
		h.answerList(id, `{"tools":[{"name":"echo"}]}`)
		if got := h.serverRest(); got != call+"\n" {
			t.Fatalf("server got %q, then its input closed; want the call", got)
		}
	})
}

// A client's cancellation of a call waiting on the listing drops the call:
// the server never gets it.
func TestStdioCancelWaitingCall(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, allowAll, readsAnnotations, portable)
		h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`)
		id, _ := h.listRequest()
		cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"user"}}`
		h.fromClient(cancel)
		if got := h.serverGets(); got != cancel {
			t.Fatalf("server got %s, want the cancellation passed on", got)
		}
		h.answerList(id, `{"tools":[{"name":"echo"}]}`)
		ping := `{"jsonrpc":"2.0","id":"p","method":"ping"}`
		h.fromClient(ping)
		if got := h.serverGets(); got != ping {
			t.Fatalf("server got %s, want the ping (the cancelled call dropped)", got)
		}
		if n := len(h.decided()); n != 0 {
			t.Fatalf("the cancelled call was decided (%d decisions)", n)
		}
	})
}

// At most MaxListWaiting calls wait on one listing; the next gets an error
// at once, the others are decided once it ends.
func TestStdioListingWaitingBounded(t *testing.T) {
	h := newPollHarness(t, allowAll, readsAnnotations, false)
	var calls strings.Builder
	for i := range MaxListWaiting + 1 {
		fmt.Fprintf(&calls, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"a"}}`+"\n", i)
	}
	h.send(h.client, calls.String())
	id, _ := h.listRequest()
	last := fmt.Sprintf(`"id":%d,`, MaxListWaiting)
	if got := h.clientGets(); !strings.Contains(got, last) || !strings.Contains(got, "too many calls are waiting") {
		t.Fatalf("client got %s, want call %d refused", got, MaxListWaiting)
	}
	h.answerList(id, `{"tools":[]}`)
	for i := range MaxListWaiting {
		want := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"a"}}`, i)
		if got := h.serverGets(); got != want {
			t.Fatalf("server got %s, want %s", got, want)
		}
	}
}

// A call cancelled while the calls released from a listing are being
// decided (it is in the release's batch, no longer queued) is dropped too.
func TestStdioCancelDuringRelease(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		entered, gate := make(chan struct{}, 1), make(chan struct{})
		var once sync.Once
		open := func() { once.Do(func() { close(gate) }) }
		defer open()
		h := newPollHarness(t, gatedDecide(entered, gate, Verdict{Allow: true}), readsAnnotations, portable)
		slow := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`
		h.fromClient(slow)
		id, _ := h.listRequest()
		h.fromClient(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}`) // waits behind slow
		h.fromClient(`{"jsonrpc":"2.0","id":"q","method":"ping"}`)                              // passes once echo is queued
		h.serverGets()
		h.answerList(id, `{"tools":[{"name":"slow"},{"name":"echo"}]}`)
		<-entered // the release is deciding slow; echo is in its batch
		cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"user"}}`
		h.fromClient(cancel)
		if got := h.serverGets(); got != cancel {
			t.Fatalf("server got %s, want the cancellation", got)
		}
		open()
		if got := h.serverGets(); got != slow {
			t.Fatalf("server got %s, want %s", got, slow)
		}
		ping := `{"jsonrpc":"2.0","id":"p","method":"ping"}`
		h.fromClient(ping)
		if got := h.serverGets(); got != ping {
			t.Fatalf("server got %s after the client cancelled it, want the ping (the cancelled call dropped)", got)
		}
		for _, in := range h.decided() {
			if in.Tool == "echo" {
				t.Errorf("the cancelled call was decided")
			}
		}
	})
}

// A client's own tools/list that asks for the whole list and gets it (no
// next cursor) completes the catalog: the proxy needs no listing of its
// own, until the server says its tools changed. A page (a cursor asked
// for), or an answer overtaken by a change, completes nothing.
func TestStdioClientListingCompletes(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, denyDestructive, readsAnnotations, portable)
		changed := `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
		ask := func(id, params string) {
			h.fromClient(`{"jsonrpc":"2.0","id":"` + id + `","method":"tools/list"` + params + `}`)
			h.serverGets()
		}
		answer := func(id, result string) {
			h.fromServer(`{"jsonrpc":"2.0","id":"` + id + `","result":` + result + `}`)
			h.clientGets()
		}
		// needsList calls "gone" (never listed) and reports whether the
		// proxy listed first, answering its listing and the call.
		n := 0
		needsList := func() bool {
			t.Helper()
			n++
			line := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"gone"}}`, n)
			h.fromClient(line)
			got := h.serverGets()
			listed := got != line
			if listed {
				var m struct{ ID json.RawMessage }
				json.Unmarshal([]byte(got), &m)
				h.answerList(string(m.ID), `{"tools":[]}`)
				if got := h.serverGets(); got != line {
					t.Fatalf("server got %s, want the call after the listing", got)
				}
			}
			h.fromServer(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{"content":[]}}`, n))
			h.clientGets()
			return listed
		}

		ask("L1", "")
		answer("L1", `{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}}]}`)
		if needsList() {
			t.Fatal("after the client's full listing, the proxy listed again")
		}
		h.fromServer(changed)
		h.clientGets()
		ask("L2", `,"params":{"cursor":"c"}`)
		answer("L2", `{"tools":[]}`)
		if !needsList() {
			t.Fatal("after a change and a page the client asked for, the proxy did not list")
		}
		// Overtaken: the change comes between the client's request and its
		// answer.
		ask("L3", `,"params":{}`)
		h.fromServer(changed)
		h.clientGets()
		answer("L3", `{"tools":[]}`)
		if !needsList() {
			t.Fatal("after a listing the server's change overtook, the proxy did not list")
		}
		ask("L4", `,"params":{"_meta":{"progressToken":1}}`)
		answer("L4", `{"tools":[]}`)
		if needsList() {
			t.Fatal("after the client's full listing (params without a cursor), the proxy listed again")
		}
	})
}

// A call released from a listing that needs a person's approval (hold
// mode) stays open until the decision, then is forwarded; calls behind it
// are not held up.
func TestStdioReleasedCallHeldForApproval(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		approve := make(chan struct{})
		var once sync.Once
		decide := func() { once.Do(func() { close(approve) }) }
		defer decide()
		h := newPollHarness(t, func(in *bundles.Input) Verdict {
			if strings.Contains(string(in.Annotations), `"destructiveHint":true`) {
				return Verdict{Hold: func(ctx context.Context) Verdict {
					<-approve
					return Verdict{Allow: true}
				}}
			}
			return Verdict{Allow: true}
		}, readsAnnotations, portable)
		wipe := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wipe"}}`
		echo := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}`
		h.fromClient(wipe)
		id, _ := h.listRequest()
		h.fromClient(echo)
		h.answerList(id, `{"tools":[{"name":"wipe","annotations":{"destructiveHint":true}},{"name":"echo"}]}`)
		if got := h.serverGets(); got != echo {
			t.Fatalf("server got %s, want the call behind the held one", got)
		}
		decide()
		if got := h.serverGets(); got != wipe {
			t.Fatalf("server got %s, want the approved call", got)
		}
	})
}

// TestStdioListingAliasedID: a call that waits on the listing under an id
// written unusually (1.0, which the server echoes as 1) is cleared by the
// server's answer like any other: the id is free again after it.
func TestStdioListingAliasedID(t *testing.T) {
	eachRelay(t, func(t *testing.T, portable bool) {
		h := newPollHarness(t, denyDestructive, readsAnnotations, portable)
		call := `{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
		h.fromClient(call)
		id, _ := h.listRequest()
		h.answerList(id, `{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}}]}`)
		if got := h.serverGets(); got != call {
			t.Fatalf("server got %s, want %s", got, call)
		}
		h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
		if got := h.clientGets(); !strings.Contains(got, `"result"`) {
			t.Fatalf("client got %s", got)
		}
		h.p.mu.Lock()
		left := len(h.p.pending)
		h.p.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d requests still pending after the answer, want none (a stale one would time out with a second answer)", left)
		}
		again := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
		h.fromClient(again)
		if got := h.serverGets(); got != again {
			t.Fatalf("server got %s, want %s (id 1 is free once its call was answered)", got, again)
		}
	})
}
