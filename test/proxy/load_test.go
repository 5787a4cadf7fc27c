package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bundles/pin"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/test/registry"
)

var (
	loadFor    = flag.Duration("load-for", 8*time.Second, "how long TestLoadWhileSwapping calls (the issue's full run: -load-for 30s)")
	raceBinary = flag.Bool("race-binary", false, "run TestLoadWhileSwapping's proxy built with -race (make test does, with -load-for 30s)")
)

// toolgateRace returns the toolgate binary built with the race detector,
// building it on first use.
func toolgateRace(t testing.TB) string {
	return builtOnce(t, "toolgate-race", "github.com/toolgate/toolgate/cmd/toolgate", "-race")
}

// wireTap watches the JSON-RPC lines between the client and the proxy: every
// request the client sends must get exactly one response.
type wireTap struct {
	mu        sync.Mutex        // guards the fields below
	requests  map[string]string // request id → method, as the client sent them
	responses map[string]int    // response id → how many came back
	buf       []byte            // a partial line the client wrote
}

// classify reads one line: a request (method and id) or a response (id, no
// method). Notifications and lines it cannot read are none.
func (w *wireTap) classify(line []byte) (id, method string, isResponse bool) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method *string         `json:"method"`
	}
	if json.Unmarshal(line, &m) != nil || m.ID == nil {
		return "", "", false
	}
	if m.Method != nil {
		return string(m.ID), *m.Method, false
	}
	return string(m.ID), "", true
}

// clientWriter is the client's side of the proxy's stdin.
type clientWriter struct {
	tap *wireTap
	w   io.WriteCloser
}

func (c clientWriter) Write(p []byte) (int, error) {
	c.tap.mu.Lock()
	c.tap.buf = append(c.tap.buf, p...)
	for {
		i := bytes.IndexByte(c.tap.buf, '\n')
		if i < 0 {
			break
		}
		if id, method, resp := c.tap.classify(c.tap.buf[:i]); id != "" && !resp {
			if _, dup := c.tap.requests[id]; dup {
				c.tap.requests[id] = "reused id " + id // reported by check
			} else {
				c.tap.requests[id] = method
			}
		}
		c.tap.buf = c.tap.buf[i+1:]
	}
	c.tap.mu.Unlock()
	return c.w.Write(p)
}

func (c clientWriter) Close() error { return c.w.Close() }

// relay copies the proxy's stdout to the client, counting responses; it
// reads to the end even once the client has stopped reading.
func (w *wireTap) relay(stdout io.Reader, to *io.PipeWriter) {
	r := bufio.NewReaderSize(stdout, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			if id, _, resp := w.classify(line); resp {
				w.mu.Lock()
				w.responses[id]++
				w.mu.Unlock()
			}
			to.Write(line) // fails once the client has closed: keep counting
		}
		if err != nil {
			to.CloseWithError(err)
			return
		}
	}
}

// check reports requests without exactly one response, and responses to
// nothing the client asked.
func (w *wireTap) check(t *testing.T) (calls int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var problems []string
	for id, method := range w.requests {
		if method == "tools/call" {
			calls++
		}
		if n := w.responses[id]; n != 1 {
			problems = append(problems, fmt.Sprintf("request %s (%s) got %d responses", id, method, n))
		}
	}
	for id := range w.responses {
		if _, ok := w.requests[id]; !ok {
			problems = append(problems, fmt.Sprintf("a response to id %s, which the client never sent", id))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("… %d more", len(problems)-20))
		}
		t.Errorf("on the wire:\n%s", strings.Join(problems, "\n"))
	}
	return calls
}

// TestLoadWhileSwapping: 8 concurrent callers through the real proxy binary
// (built with -race under -race-binary) while the pin file flips between two
// signed bundles every 100 ms, for -load-for. No call may fail, be lost or
// be answered twice (checked on the wire: each request id the client sends
// gets exactly one response), no answer may be another call's; each call's
// outcome must be one of the two bundles', and the audit log (with argument
// values, so each record is matched to its call) must hold exactly one
// record per call, naming the digest whose policy gives the outcome the
// client saw (and, for a denial, the decision id the client got). The race
// detector must report nothing and the proxy must exit 0.
func TestLoadWhileSwapping(t *testing.T) {
	bin := toolgate
	if *raceBinary {
		bin = toolgateRace(t)
	}
	reg := registry.Start(t, registry.Options{})
	repo := reg.Repo("acme/policies")
	priv, pub, err := sign.GenerateKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cosign.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	v1 := pushPolicy(t, repo, policyV1, priv, true) // echo allowed
	v2 := pushPolicy(t, repo, policyV2, priv, true) // echo denied: "v2 denies echo."
	pinPath := filepath.Join(dir, "pin.yaml")
	pinTo := func(d name.Digest) {
		if err := (&pin.File{Bundle: d.String(), PublicKey: "cosign.pub"}).Write(pinPath); err != nil {
			t.Error(err)
		}
	}
	pinTo(v1)

	auditLog := filepath.Join(dir, "audit.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), *loadFor+3*time.Minute)
	defer cancel()
	cmd := exec.Command(bin, "proxy", "--pin-file", pinPath, "--cache-dir", t.TempDir(), "--admin", "", "--state", "memory",
		"--audit-log", auditLog, "--audit-arguments", "--server", "testsrv", "--", testserver)
	cmd.Env = append(os.Environ(), "GORACE=exitcode=66")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	tap := &wireTap{requests: map[string]string{}, responses: map[string]int{}}
	pr, pw := io.Pipe()
	relayed := make(chan struct{})
	go func() {
		tap.relay(stdout, pw)
		close(relayed)
	}()
	go func() {
		<-relayed // all of stdout is read before Wait closes it
		exited <- cmd.Wait()
	}()
	defer func() {
		if t.Failed() {
			t.Logf("proxy stderr (tail):\n%s", tail(stderr.String(), 3000))
		}
	}()
	client := mcp.NewClient(&mcp.Implementation{Name: "loadtest", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.IOTransport{Reader: pr, Writer: clientWriter{tap, stdin}}, nil)
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("connecting through the proxy: %v\n%s", err, stderr.String())
	}

	// Wait until v1 decides (the first load happens as the proxy starts).
	for deadline := time.Now().Add(30 * time.Second); ; {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "warm"}})
		if err == nil && !res.IsError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v1 never became active: %v %+v", err, res)
		}
		time.Sleep(20 * time.Millisecond)
	}

	stop := make(chan struct{})
	var flips sync.WaitGroup
	var pins atomic.Int64 // pin file rewrites
	flips.Add(1)
	go func() {
		defer flips.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				if i%2 == 0 {
					pinTo(v2)
				} else {
					pinTo(v1)
				}
				pins.Add(1)
			}
		}
	}()

	// seen is what each call's client saw, by its unique text.
	type outcome struct {
		allowed    bool
		decisionID string // of a denial
	}
	var seenMu sync.Mutex
	seen := map[string]outcome{}
	var calls, allowed, denied atomic.Int64
	var callers sync.WaitGroup
	end := time.Now().Add(*loadFor)
	for c := 0; c < 8; c++ {
		callers.Add(1)
		go func(c int) {
			defer callers.Done()
			for i := 0; time.Now().Before(end); i++ {
				want := fmt.Sprintf("caller %d call %d", c, i)
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": want}})
				calls.Add(1)
				var o outcome
				switch {
				case err != nil:
					t.Errorf("%s failed: %v", want, err)
					return
				case res.IsError:
					if got := text(res); got != "v2 denies echo." {
						t.Errorf("%s: denied with %q", want, got)
						return
					}
					if d, _ := res.Meta["toolgate/bundle"].(string); d != v2.DigestStr() {
						t.Errorf("%s: denied by %q, want v2 %s", want, d, v2.DigestStr())
						return
					}
					o.decisionID, _ = res.Meta["toolgate/decision_id"].(string)
					denied.Add(1)
				default:
					if got := text(res); got != "echo: "+want {
						t.Errorf("%s: got %q, want its own echo (a mixed-up answer)", want, got)
						return
					}
					o.allowed = true
					allowed.Add(1)
				}
				seenMu.Lock()
				seen[want] = o
				seenMu.Unlock()
			}
		}(c)
	}
	callers.Wait()
	close(stop)
	flips.Wait()
	cs.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the proxy exited with %v, want 0 (66: the race detector found a race)", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Errorf("the proxy did not exit after the client closed")
	}
	if strings.Contains(stderr.String(), "DATA RACE") {
		t.Errorf("the race detector reported a race:\n%s", tail(stderr.String(), 20000))
	}
	wireCalls := tap.check(t)
	if t.Failed() {
		return
	}
	if allowed.Load() == 0 || denied.Load() == 0 {
		t.Fatalf("%d calls: %d allowed, %d denied; both bundles should have decided some", calls.Load(), allowed.Load(), denied.Load())
	}

	// One audit record per call: the warm-up calls, then each call's, which
	// names the bundle whose policy gives the outcome its client saw.
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	records, warm := 0, 0
	recorded := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			DecisionID string `json:"decision_id"`
			Bundle     string `json:"bundle"`
			Tool       string `json:"tool"`
			Decision   string `json:"decision"`
			Arguments  struct{ Text string }
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %d: %v", records+1, err)
		}
		records++
		if r.Arguments.Text == "warm" {
			warm++
			if r.Bundle != v1.DigestStr() || r.Decision != "allow" {
				t.Errorf("audit line %d: warm-up call decided %s by %q, want allowed by v1", records, r.Decision, r.Bundle)
			}
			continue
		}
		o, ok := seen[r.Arguments.Text]
		switch {
		case !ok:
			t.Errorf("audit line %d: a record of %q, a call no client made or saw answered: %s", records, r.Arguments.Text, sc.Bytes())
		case recorded[r.Arguments.Text]:
			t.Errorf("audit line %d: a second record of %q", records, r.Arguments.Text)
		case o.allowed && (r.Bundle != v1.DigestStr() || r.Decision != "allow"):
			t.Errorf("audit line %d: %q was allowed, but its record says %s by %q (want allow by v1 %s)", records, r.Arguments.Text, r.Decision, r.Bundle, v1.DigestStr())
		case !o.allowed && (r.Bundle != v2.DigestStr() || r.Decision != "deny" || r.DecisionID != o.decisionID):
			t.Errorf("audit line %d: %q was denied by v2 as decision %s, but its record says %s by %q as %s", records, r.Arguments.Text, o.decisionID, r.Decision, r.Bundle, r.DecisionID)
		}
		recorded[r.Arguments.Text] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(recorded) != len(seen) || int64(records-warm) != calls.Load() || records != wireCalls {
		t.Errorf("%d audit records (%d warm-up), %d calls recorded of %d made, %d tools/call on the wire", records, warm, len(recorded), calls.Load(), wireCalls)
	}
	loads := strings.Count(stderr.String(), `"msg":"bundle loaded"`)
	t.Logf("%d calls (%d allowed by v1, %d denied by v2), %d audit records, %d bundle loads for %d pins, race-built proxy: %v",
		calls.Load(), allowed.Load(), denied.Load(), records, loads, pins.Load(), *raceBinary)
	// The pins are followed as they come: many fall together while a load
	// is under way (verifying, compiling and warming a bundle takes about
	// 130 ms here with 8 busy clients, 700 ms in the race-built proxy: 55
	// of 80 and 43 of 300 pins loaded), but a watcher that held the pin
	// file off for as long as it kept changing would load only the first.
	if loads < 4 {
		t.Errorf("%d bundle loads for %d pins: the proxy stopped following the pin file", loads, pins.Load())
	}
	if out, err := exec.Command(toolgate, "audit", "verify", auditLog).CombinedOutput(); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
