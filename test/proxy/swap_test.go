package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/pin"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/test/registry"
)

// Policies for the swap test: v1 denies delete_repo, v2 denies echo, v3
// (pushed unsigned) denies everything.
const (
	policyV1 = `version: "1"
default: allow
tools:
  delete_repo:
    rules:
      - name: no deleting
        action: deny
        on_deny: "v1 denies deleting."
`
	policyV2 = `version: "1"
default: allow
tools:
  echo:
    rules:
      - name: no echo
        action: deny
        on_deny: "v2 denies echo."
`
	policyV3 = `version: "1"
default: deny
`
)

// syncBuffer is a bytes.Buffer safe for the proxy's stderr writer and the
// test reading it.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pushPolicy builds the policy YAML into a bundle, pushes it to repo and
// signs it with priv when signed.
func pushPolicy(t *testing.T, repo, yaml string, priv []byte, signed bool) name.Digest {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "testsrv.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := policy.ReadSources([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := build.Build(ctx, src, build.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	d, err := oci.Push(ctx, buf.Bytes(), repo+":latest")
	if err != nil {
		t.Fatal(err)
	}
	nd, _ := d.Name()
	if signed {
		ro, err := oci.RemoteOptions()
		if err != nil {
			t.Fatal(err)
		}
		if err := sign.Sign(ctx, nd, priv, nil, ro...); err != nil {
			t.Fatal(err)
		}
	}
	return nd
}

// adminStatus is the part of /status the test reads.
type adminStatus struct {
	Digest        string `json:"digest"`
	Ready         bool   `json:"ready"`
	LastSwapError string `json:"lastSwapError"`
	SwapFailures  uint64 `json:"swapFailures"`
}

// TestPinFileSwap runs the real proxy on a pin file: it starts with no pin
// (fail closed, not ready), loads a signed pin, swaps to a second, refuses an
// unsigned one, and loads the first again from its cache while the registry
// is down; /status, /readyz and /metrics report each step.
func TestPinFileSwap(t *testing.T) {
	reg := registry.Start(t, registry.Options{})
	u, _ := url.Parse(reg.URL)
	front := httptest.NewServer(httputil.NewSingleHostReverseProxy(u)) // closed to take the registry down
	t.Cleanup(front.Close)
	repo := strings.TrimPrefix(front.URL, "http://") + "/acme/policies"

	priv, pub, err := sign.GenerateKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cosign.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	v1 := pushPolicy(t, repo, policyV1, priv, true)
	v2 := pushPolicy(t, repo, policyV2, priv, true)
	v3 := pushPolicy(t, repo, policyV3, priv, false)
	pinPath := filepath.Join(dir, "pin.yaml")
	pinTo := func(d name.Digest) {
		t.Helper()
		if err := (&pin.File{Bundle: d.String(), PublicKey: "cosign.pub"}).Write(pinPath); err != nil {
			t.Fatal(err)
		}
	}

	// Start the proxy before any pin exists.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.Command(toolgate, "proxy", "--pin-file", pinPath, "--cache-dir", t.TempDir(), "--state-dir", t.TempDir(),
		"--admin", "127.0.0.1:0", "--server", "testsrv", "--", testserver)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "swaptest", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting through the proxy: %v\nproxy stderr:\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", stderr.String())
		}
	})
	admin := "http://" + adminAddr(t, stderr)

	httpGet := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	status := func() adminStatus {
		t.Helper()
		_, body := httpGet("/status")
		var s adminStatus
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("/status: %v\n%s", err, body)
		}
		return s
	}
	waitStatus := func(what string, cond func(adminStatus) bool) adminStatus {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := status()
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; /status: %+v", what, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	expect := func(tool string, allowed bool, digest string) {
		t.Helper()
		res, err := call(t, cs, tool, map[string]any{"text": "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if res.IsError == allowed {
			t.Fatalf("%s: got %q (isError %v), want allowed=%v", tool, text(res), res.IsError, allowed)
		}
		if got, _ := res.Meta["toolgate/bundle"].(string); !allowed && digest != "" && got != digest {
			t.Fatalf("%s: decided by %q, want %s", tool, got, digest)
		}
	}

	// No pin: not ready, and every call denied.
	if code, _ := httpGet("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with no bundle: %d, want 503", code)
	}
	if code, _ := httpGet("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	expect("echo", false, "")

	pinTo(v1)
	waitStatus("v1", func(s adminStatus) bool { return s.Digest == v1.DigestStr() })
	if code, _ := httpGet("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with v1: %d, want 200", code)
	}
	expect("echo", true, "")
	expect("delete_repo", false, v1.DigestStr())

	pinTo(v2)
	waitStatus("v2", func(s adminStatus) bool { return s.Digest == v2.DigestStr() })
	expect("echo", false, v2.DigestStr())
	expect("delete_repo", true, "")

	failures := status().SwapFailures
	pinTo(v3)
	s := waitStatus("the unsigned v3 to be refused", func(s adminStatus) bool { return s.SwapFailures > failures })
	if s.Digest != v2.DigestStr() || !strings.Contains(s.LastSwapError, "no signature") {
		t.Fatalf("after pinning an unsigned digest: %+v", s)
	}
	expect("echo", false, v2.DigestStr())

	front.Close() // the registry is unreachable from here on
	pinTo(v1)
	waitStatus("v1 from the cache", func(s adminStatus) bool { return s.Digest == v1.DigestStr() })
	expect("delete_repo", false, v1.DigestStr())

	_, metrics := httpGet("/metrics")
	for _, re := range []string{
		`(?m)^toolgate_decisions_total\{outcome="allow"\} [1-9]`,
		`(?m)^toolgate_decisions_total\{outcome="deny"\} [1-9]`,
		`(?m)^toolgate_decisions_total\{outcome="error"\} [1-9]`, // the call with no bundle
		`(?m)^toolgate_decision_duration_seconds_count [1-9]`,
		`(?m)^toolgate_active_bundle\{digest="` + v1.DigestStr() + `"\} 1$`,
		`(?m)^toolgate_bundle_swaps_total [3-9]`,
		`(?m)^toolgate_bundle_swap_failures_total [1-9]`,
		`(?m)^toolgate_upstream_errors_total 0$`,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("/metrics does not match %s:\n%s", re, metrics)
		}
	}
}

// adminAddr waits for the proxy's "admin listener started" log line and
// returns its address.
func adminAddr(t *testing.T, stderr *syncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "admin listener started" {
				return rec.Addr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the proxy logged no admin address:\n%s", stderr.String())
	return ""
}
