package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The fault tests drive the real proxy over raw pipes, so that they can send
// what no SDK would: broken JSON, wrong JSON-RPC shapes, huge and deeply
// nested arguments, invalid UTF-8; and put test/proxy/anyserver -faults
// behind it to misbehave from the server's side. After every fault the
// proxy must still serve a good call.

// faultProxy starts the proxy on testdata/faults in front of anyserver
// -faults, and runs the handshake.
func faultProxy(t *testing.T, extra ...string) *rawProxy {
	t.Helper()
	args := append([]string{"proxy", "--policy", "testdata/faults", "--server", "faults", "--state", "memory", "--admin", ""}, extra...)
	p := startRaw(t, args, anyserverBin(t), "-faults", "-tool", "echo")
	p.initialize()
	return p
}

// calledText is the text anyserver answers a call of tool with, for these
// raw argument bytes.
func calledText(tool string, args []byte) string {
	sum := sha256.Sum256(args)
	return fmt.Sprintf("called %s sha256=%s bytes=%d", tool, hex.EncodeToString(sum[:]), len(args))
}

// expectServing checks that a good call still goes through.
func expectServing(t *testing.T, p *rawProxy, after string) {
	t.Helper()
	args := `{"text":"still there?"}`
	r := p.callTool("echo", args)
	if c, ok := r.callResult(); !ok || c.IsError || c.text() != calledText("echo", []byte(args)) {
		t.Fatalf("after %s, a good call got %.300s\nproxy stderr:\n%s", after, r.raw, tail(p.stderr.String(), 3000))
	}
}

func deepObject(depth int) string {
	return strings.Repeat(`{"d":`, depth) + `"bottom"` + strings.Repeat(`}`, depth)
}

// TestClientFaults sends one bad (or merely unusual) message at a time and
// checks the answer: a JSON-RPC error with the request's id when it has a
// usable one (else id null), nothing for a notification, and the call
// itself when the message is valid. Each is followed by a good call.
func TestClientFaults(t *testing.T) {
	p := faultProxy(t)
	big := `{"blob":"` + strings.Repeat("x", 10<<20) + `"}`
	for _, tc := range []struct {
		name string
		line string
		id   string // the id the answer must carry ("null" for none readable)
		code int    // the JSON-RPC error code wanted; 0: no error (see result)
		// result, when code is 0, is the text anyserver answers a forwarded
		// call with; empty means no answer at all is wanted.
		result string
	}{
		{"malformed JSON", `{not json`, "null", -32700, ""},
		{"cut-off object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"`, "null", -32700, ""},
		{"trailing garbage", `{"jsonrpc":"2.0","id":"t1","method":"ping"} x`, "null", -32700, ""},
		{"missing jsonrpc", `{"id":"m1","method":"tools/call","params":{"name":"echo"}}`, `"m1"`, -32600, ""},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":"v1","method":"tools/call","params":{"name":"echo"}}`, `"v1"`, -32600, ""},
		{"array batch", `[{"jsonrpc":"2.0","id":"b1","method":"tools/call","params":{"name":"echo"}}]`, "null", -32600, ""},
		{"empty batch", `[]`, "null", -32600, ""},
		{"a bare number", `42`, "null", -32600, ""},
		{"id as object", `{"jsonrpc":"2.0","id":{"x":1},"method":"tools/call","params":{"name":"echo"}}`, "null", -32600, ""},
		{"id as array", `{"jsonrpc":"2.0","id":[1],"method":"tools/call","params":{"name":"echo"}}`, "null", -32600, ""},
		{"id as boolean", `{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"echo"}}`, "null", -32600, ""},
		{"method as number", `{"jsonrpc":"2.0","id":"n1","method":42}`, `"n1"`, -32600, ""},
		{"empty method", `{"jsonrpc":"2.0","id":"n2","method":""}`, `"n2"`, -32600, ""},
		{"params as string", `{"jsonrpc":"2.0","id":"p1","method":"tools/call","params":"echo"}`, `"p1"`, -32600, ""},
		{"tools/call without a name", `{"jsonrpc":"2.0","id":"p2","method":"tools/call","params":{"arguments":{}}}`, `"p2"`, -32602, ""},
		{"tools/call name not a string", `{"jsonrpc":"2.0","id":"p3","method":"tools/call","params":{"name":7}}`, `"p3"`, -32602, ""},
		{"arguments not an object", `{"jsonrpc":"2.0","id":"p4","method":"tools/call","params":{"name":"echo","arguments":[1,2]}}`, `"p4"`, -32602, ""},
		{"request with result", `{"jsonrpc":"2.0","id":"r1","method":"ping","result":{}}`, `"r1"`, -32600, ""},
		{"invalid notification", `{"jsonrpc":"2.0","method":42}`, "", 0, ""},
		{"10 MiB argument", `{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"echo","arguments":` + big + `}}`, `"big"`, 0, calledText("echo", []byte(big))},
		{"escapes and astral characters", `{"jsonrpc":"2.0","id":"u1","method":"tools/call","params":{"name":"echo","arguments":{"s":"\u00e9\ud83d\ude00 \"q\" \\ \u0000 é😀"}}}`, `"u1"`,
			0, calledText("echo", []byte(`{"s":"\u00e9\ud83d\ude00 \"q\" \\ \u0000 é😀"}`))},
		{"17 MiB line", `{"jsonrpc":"2.0","id":"huge","method":"ping","params":{"blob":"` + strings.Repeat("y", 17<<20) + `"}}`, "null", -32600, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.other = nil
			p.send([]byte(tc.line))
			if tc.id == "" {
				// No answer: the good call's answer must be the next line.
				expectServing(t, p, tc.name)
				if len(p.other) > 0 {
					t.Fatalf("got %q, want no answer", p.other)
				}
				return
			}
			r, err := p.await(tc.id, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.code != 0:
				if r.Error == nil || r.Error.Code != tc.code || r.Error.Message == "" {
					t.Errorf("got %.300s, want a JSON-RPC error %d with id %s", r.raw, tc.code, tc.id)
				}
			default:
				c, ok := r.callResult()
				if !ok || c.IsError || c.text() != tc.result {
					t.Errorf("got %.300s, want the call's result %q", r.raw, tc.result)
				}
			}
			expectServing(t, p, tc.name)
			// Nothing of a refused message may have reached the server: it
			// would have answered before the good call.
			for _, l := range p.other {
				if bytes.Contains(l, []byte("called ")) {
					t.Errorf("a refused message reached the server: %.300s", l)
				}
			}
		})
	}

	t.Run("id in use by a pending request", func(t *testing.T) {
		p.send([]byte(`{"jsonrpc":"2.0","id":"dup","method":"tools/call","params":{"name":"fault_hang"}}`))
		r := p.callToolID(`"dup"`, "echo", `{}`)
		if r.Error == nil || r.Error.Code != -32600 || !strings.Contains(r.Error.Message, "already in use") {
			t.Errorf("got %.300s, want -32600 naming the id in use", r.raw)
		}
		expectServing(t, p, "a duplicate id")
	})

	t.Run("1,000-deep arguments", func(t *testing.T) {
		// Valid JSON, so the call must either reach the server intact or
		// be denied with a message that says why; and the proxy serves on.
		args := `{"deep":` + deepObject(1000) + `}`
		r := p.callTool("echo", args)
		c, ok := r.callResult()
		switch {
		case ok && !c.IsError:
			if c.text() != calledText("echo", []byte(args)) {
				t.Errorf("forwarded, but the server got other arguments: %q", c.text())
			}
		case ok && c.IsError:
			if !strings.Contains(c.text(), "nest") {
				t.Errorf("denied without saying why: %q", c.text())
			}
			t.Logf("denied: %s", c.text())
		case r.Error != nil:
			if !strings.Contains(r.Error.Message, "nest") {
				t.Errorf("refused without saying why: %s", r.raw)
			}
			t.Logf("refused: %s", r.raw)
		default:
			t.Errorf("got %.300s", r.raw)
		}
		expectServing(t, p, "deep arguments")
		// The same depth in a message the proxy does not decide on passes.
		r = p.request("ping", `{"deep":`+deepObject(1000)+`}`)
		if r.Error != nil {
			t.Errorf("a ping with deep params: %s", r.raw)
		}
	})

	t.Run("denied 10 MiB argument", func(t *testing.T) {
		r := p.callTool("echo", `{"forbidden":true,"blob":"`+strings.Repeat("z", 10<<20)+`"}`)
		if c, ok := r.callResult(); !ok || !c.IsError || c.text() != "Calls with a forbidden argument are denied." {
			t.Errorf("got %.300s, want the policy's denial", r.raw)
		}
		expectServing(t, p, "a denied big call")
	})

	t.Run("invalid UTF-8 in a tools/call argument", func(t *testing.T) {
		// Not JSON (RFC 8259 §8.1): the call must not reach the server; it
		// gets an error or a denial carrying its id.
		r := p.callTool("echo", "{\"s\":\"bad \xff\xfe\"}")
		if c, ok := r.callResult(); ok && !c.IsError {
			t.Errorf("a call with invalid UTF-8 arguments reached the server: %.300s", r.raw)
		} else if r.Error == nil && !ok {
			t.Errorf("got %.300s", r.raw)
		}
		t.Logf("answer: %.300s", r.raw)
		expectServing(t, p, "invalid UTF-8")
	})
}

// callToolID sends a tools/call with the given raw id and waits for its
// response.
func (p *rawProxy) callToolID(id, tool, args string) *response {
	p.t.Helper()
	p.send([]byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":` + quote(tool) + `,"arguments":` + args + `}}`))
	r, err := p.await(id, 20*time.Second)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

// TestServerFaults has anyserver misbehave on the way back: the proxy drops
// what is not JSON-RPC, answers a call whose response is malformed with an
// error (and does not spend its quota), relays a deep result intact, and
// keeps serving.
func TestServerFaults(t *testing.T) {
	p := faultProxy(t)
	valid := func(t *testing.T) {
		t.Helper()
		for _, l := range p.other {
			if !json.Valid(l) {
				t.Errorf("the proxy passed on a line that is not JSON: %q", l)
			}
			if !utf8.Valid(l) {
				t.Logf("the proxy passed on a line with invalid UTF-8: %q", l)
			}
		}
	}

	t.Run("garbage lines", func(t *testing.T) {
		p.other = nil
		r := p.callTool("fault_garbage", "")
		if c, ok := r.callResult(); !ok || c.text() != calledText("fault_garbage", nil) {
			t.Errorf("got %.300s, want the answer after the garbage", r.raw)
		}
		valid(t)
		for _, l := range p.other {
			if bytes.Contains(l, []byte("987654321")) {
				t.Logf("the proxy passed on a response to an id no client request had: %s", l)
			}
		}
		expectServing(t, p, "garbage from the server")
	})

	t.Run("invalid UTF-8", func(t *testing.T) {
		p.other = nil
		r := p.callTool("fault_badutf8", "")
		if c, ok := r.callResult(); !ok || c.text() != calledText("fault_badutf8", nil) {
			t.Errorf("got %.300s, want the answer after the bad lines", r.raw)
		}
		valid(t)
		expectServing(t, p, "invalid UTF-8 from the server")
	})

	t.Run("1,000-deep result", func(t *testing.T) {
		r := p.callTool("fault_deep", "")
		if !bytes.Contains(r.Result, []byte(`"structuredContent":`+deepObject(1000))) {
			t.Errorf("the deep result did not come through intact: %.300s", r.raw)
		}
		expectServing(t, p, "a deep result")
	})

	t.Run("malformed response", func(t *testing.T) {
		// fault_badresponse is limited to one a day; a malformed answer
		// does not say the call failed, so it counts and the second call
		// is refused by the limit.
		r := p.callTool("fault_badresponse", "")
		if r.Error == nil || r.Error.Code != -32000 {
			t.Errorf("got %.300s, want -32000 for the malformed response", r.raw)
		}
		expectRateLimited(t, p, "fault_badresponse", "1 per day")
		expectServing(t, p, "a malformed response")
	})
}

// TestUpstreamCrashMidCall: the server dies while two calls are pending
// (one it was answering when it crashed, one it would never answer); both
// get a JSON-RPC error, and the proxy exits 1 saying the server exited.
func TestUpstreamCrashMidCall(t *testing.T) {
	p := faultProxy(t)
	expectServing(t, p, "the handshake")
	p.send([]byte(`{"jsonrpc":"2.0","id":"hang","method":"tools/call","params":{"name":"fault_hang"}}`))
	p.send([]byte(`{"jsonrpc":"2.0","id":"crash","method":"tools/call","params":{"name":"fault_crash"}}`))
	for _, id := range []string{`"hang"`, `"crash"`} {
		r, err := p.await(id, 20*time.Second)
		if err != nil {
			t.Fatalf("%v\nproxy stderr:\n%s", err, p.stderr.String())
		}
		if r.Error == nil || r.Error.Code != -32000 || !strings.Contains(r.Error.Message, "exited") {
			t.Errorf("pending call %s: got %.300s, want -32000 saying the server exited", id, r.raw)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the proxy did not exit after its server crashed")
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("proxy exit: %v, want status 1", p.err)
	}
	stderr := p.stderr.String()
	for _, want := range []string{"crashing in the middle of a call", `exited (exit status 3)`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
}

// TestUpstreamHang: a call the server never answers gets a JSON-RPC error
// after --upstream-timeout and counts against its limit (the server may
// still run it): fault_hang is limited to one a day, so the second call is
// refused at once by the policy. The proxy keeps serving.
func TestUpstreamHang(t *testing.T) {
	p := faultProxy(t, "--upstream-timeout", "500ms")
	start := time.Now()
	p.nextID++
	id := fmt.Sprint(p.nextID)
	p.send([]byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"fault_hang"}}`))
	r, err := p.await(id, 10*time.Second)
	if err != nil {
		t.Fatalf("%v (the server never answers the call; --upstream-timeout 500ms should have)", err)
	}
	if r.Error == nil || !strings.Contains(r.Error.Message, "did not answer within 500ms") {
		t.Errorf("got %.300s, want a JSON-RPC error for the call the server never answered", r.raw)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("the error came after %v, before the 500ms timeout", d)
	}
	expectRateLimited(t, p, "fault_hang", "1 per day")
	expectServing(t, p, "a hung call")
}

// expectRateLimited checks that a call of tool is denied by its rate limit
// (whose message names limit), answered by the proxy at once.
func expectRateLimited(t *testing.T, p *rawProxy, tool, limit string) {
	t.Helper()
	start := time.Now()
	r := p.callTool(tool, "")
	c, ok := r.callResult()
	if !ok || !c.IsError || !strings.Contains(c.text(), "Rate limit of "+limit+" reached") {
		t.Errorf("second %s call: got %.300s, want the rate limit's denial (the first call counts)", tool, r.raw)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second %s call: answered after %v; a denial needs no server", tool, d)
	}
}
