package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
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

var loadFor = flag.Duration("load-for", 8*time.Second, "how long TestSwapUnderLoad calls (the issue's full run: -load-for 30s)")

// TestSwapUnderLoad: 8 concurrent callers through the real proxy binary
// while the pin file flips between two signed bundles every 100 ms. No call
// may fail, be lost or be answered twice; each call's outcome must be one of
// the two bundles' and every audit record must name the digest that decided
// it, one record per call.
func TestSwapUnderLoad(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), *loadFor+2*time.Minute)
	defer cancel()
	cmd := exec.Command(toolgate, "proxy", "--pin-file", pinPath, "--cache-dir", t.TempDir(), "--admin", "", "--state", "memory",
		"--audit-log", auditLog, "--server", "testsrv", "--", testserver)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "loadtest", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting through the proxy: %v\n%s", err, stderr.String())
	}
	defer func() {
		if t.Failed() {
			t.Logf("proxy stderr (tail):\n%s", tail(stderr.String(), 3000))
		}
	}()
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
			}
		}
	}()

	var calls, allowed, denied atomic.Int64
	var callers sync.WaitGroup
	end := time.Now().Add(*loadFor)
	for c := 0; c < 8; c++ {
		callers.Add(1)
		go func(c int) {
			defer callers.Done()
			for i := 0; time.Now().Before(end); i++ {
				want := strings.Repeat("x", c+1) + string(rune('a'+i%26))
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": want}})
				calls.Add(1)
				switch {
				case err != nil:
					t.Errorf("caller %d call %d failed: %v", c, i, err)
					return
				case res.IsError:
					if got := text(res); got != "v2 denies echo." {
						t.Errorf("caller %d call %d: denied with %q", c, i, got)
						return
					}
					if d, _ := res.Meta["toolgate/bundle"].(string); d != v2.DigestStr() {
						t.Errorf("caller %d call %d: denied by %q, want v2 %s", c, i, d, v2.DigestStr())
						return
					}
					denied.Add(1)
				default:
					if got := text(res); !strings.Contains(got, want) {
						t.Errorf("caller %d call %d: got %q, want the echo of %q (a mixed-up answer)", c, i, got, want)
						return
					}
					allowed.Add(1)
				}
			}
		}(c)
	}
	callers.Wait()
	close(stop)
	flips.Wait()
	cs.Close()
	if t.Failed() {
		return
	}
	if allowed.Load() == 0 || denied.Load() == 0 {
		t.Fatalf("%d calls: %d allowed, %d denied; both bundles should have decided some", calls.Load(), allowed.Load(), denied.Load())
	}

	// One audit record per call (the warm-up calls too), each naming v1 or v2,
	// and the decision matching the digest.
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	records := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct{ Bundle, Tool, Decision string }
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %d: %v", records+1, err)
		}
		records++
		switch {
		case r.Bundle == v1.DigestStr() && r.Decision == "allow":
		case r.Bundle == v2.DigestStr() && r.Decision == "deny":
		case r.Bundle == "" && r.Decision == "deny": // before v1 was loaded (warm-up)
		default:
			t.Fatalf("audit line %d: %+v is not what either bundle decides", records, r)
		}
	}
	if int64(records) < calls.Load() {
		t.Fatalf("%d audit records for %d calls", records, calls.Load())
	}
	t.Logf("%d calls (%d allowed by v1, %d denied by v2), %d audit records", calls.Load(), allowed.Load(), denied.Load(), records)
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
