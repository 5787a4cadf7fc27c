package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/pin"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/runtime/engine"
	"github.com/toolgate/toolgate/runtime/proxy"
	"github.com/toolgate/toolgate/test/registry"
)

// policy denies tool "rm" with rule name and allows the rest with name as
// its message.
func policy(name string) string {
	return fmt.Sprintf(`package toolgate

default decision := {"decision": "allow", "rule": "", "message": %[1]q, "counters": [], "approval": null, "shadow": []}

decision := {"decision": "deny", "rule": %[1]q, "message": "no", "counters": [], "approval": null, "shadow": []} if {
	input.tool.name == "rm"
}
`, name)
}

// bundleBytes compiles rego into a bundle's .tar.gz bytes.
func bundleBytes(t testing.TB, rego string) []byte {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("policy.rego", rego, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	ob := &bundle.Bundle{
		Data:    map[string]any{},
		Modules: []bundle.ModuleFile{{URL: "/policy.rego", Path: "/policy.rego", Raw: []byte(rego), Parsed: mod}},
	}
	var out bytes.Buffer
	c := compile.New().WithTarget("wasm").WithEntrypoints(bundles.Entrypoint).WithBundle(ob).WithOutput(&out)
	if err := c.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := &bundles.Bundle{
		Manifest: bundles.Manifest{
			Revision: "rev-" + bundles.SHA256Hex([]byte(rego))[:8],
			Wasm:     []bundles.WasmResolver{{Entrypoint: bundles.Entrypoint, Module: bundles.WasmFile}},
		},
		Wasm: c.Bundle().WasmModules[0].Raw,
		Rego: []byte(rego),
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// world is a real registry behind a front the test can switch off (the
// registry "goes down"), a key pair, and a pin file folder.
type world struct {
	t     *testing.T
	front *httptest.Server
	host  string
	priv  []byte
	dir   string // holds pin.yaml and cosign.pub
	cache string
}

func newWorld(t *testing.T) *world {
	reg := registry.Start(t, registry.Options{})
	u, _ := url.Parse(reg.URL)
	front := httptest.NewServer(httputil.NewSingleHostReverseProxy(u))
	t.Cleanup(front.Close)
	priv, pub, err := sign.GenerateKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, front: front, host: strings.TrimPrefix(front.URL, "http://"), priv: priv, dir: t.TempDir(), cache: t.TempDir()}
	if err := os.WriteFile(filepath.Join(w.dir, "cosign.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// push pushes the bundle of rego, signs it when signed, and returns its
// digest reference.
func (w *world) push(rego string, signed bool) name.Digest {
	w.t.Helper()
	ctx := context.Background()
	d, err := oci.Push(ctx, bundleBytes(w.t, rego), w.host+"/acme/policies:latest")
	if err != nil {
		w.t.Fatal(err)
	}
	nd, _ := d.Name()
	if signed {
		ro, err := oci.RemoteOptions()
		if err != nil {
			w.t.Fatal(err)
		}
		if err := sign.Sign(ctx, nd, w.priv, nil, ro...); err != nil {
			w.t.Fatal(err)
		}
	}
	return nd
}

func (w *world) pinPath() string { return filepath.Join(w.dir, "pin.yaml") }

// pin writes the pin file naming d, atomically (temporary file and rename,
// as git does).
func (w *world) pin(d name.Digest) {
	w.t.Helper()
	f := &pin.File{Bundle: d.String(), PublicKey: "cosign.pub"}
	if err := f.Write(w.pinPath()); err != nil {
		w.t.Fatal(err)
	}
}

// pinInPlace writes the pin file naming d in place, as some editors do:
// truncated, then written in two pieces 10 ms apart, the first of which
// does not parse.
func (w *world) pinInPlace(d name.Digest) {
	w.t.Helper()
	f, err := os.OpenFile(w.pinPath(), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	whole := "bundle: " + d.String() + "\npublicKey: cosign.pub\n"
	f.WriteString(whole[:20])
	time.Sleep(10 * time.Millisecond)
	f.WriteString(whole[20:])
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPinFileLifecycle(t *testing.T) {
	w := newWorld(t)
	a, b := w.push(policy("A"), true), w.push(policy("B"), true)
	unsigned := w.push(policy("C"), false)

	eng := engine.New()
	defer eng.Close()
	// An hour between polls: every change below must be seen through
	// fsnotify (TestSwapUnderLoad covers the poll).
	src, err := NewPinFile(w.pinPath(), w.cache, eng, WithLogger(quietLogger()), WithPollInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pol := proxy.NewPolicy(eng, proxy.WithLogger(quietLogger()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// No pin file yet: the load fails and nothing is active (fail closed).
	if err := src.Load(ctx); err == nil {
		t.Fatal("Load with no pin file: no error")
	}
	if v := pol.Decide(ctx, &bundles.Input{Tool: "ls"}); v.Allow {
		t.Fatalf("with no bundle: %+v, want a denial", v)
	}

	w.pin(a)
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, hup) }()
	waitFor(t, "A to be active", func() bool { d, _ := eng.Active(); return d == a.DigestStr() })
	if v := pol.Decide(ctx, &bundles.Input{Tool: "rm"}); v.Allow || v.Rule != "A" || v.Bundle != a.DigestStr() {
		t.Fatalf("rm under A: %+v", v)
	}

	w.pin(b)
	waitFor(t, "B to be active", func() bool { d, _ := eng.Active(); return d == b.DigestStr() })
	if v := pol.Decide(ctx, &bundles.Input{Tool: "rm"}); v.Allow || v.Rule != "B" || v.Bundle != b.DigestStr() {
		t.Fatalf("rm under B: %+v", v)
	}

	// A pin file written in place, in two pieces (as some editors write):
	// read once whole, not refused half-written first.
	failures, swaps := src.Status().Failures, src.Status().Swaps
	w.pinInPlace(a)
	waitFor(t, "A to be active again", func() bool { d, _ := eng.Active(); return d == a.DigestStr() })
	if st := src.Status(); st.Failures != failures || st.Swaps != swaps+1 {
		t.Fatalf("a pin file written in place: %d failures (was %d), %d swaps (was %d)", st.Failures, failures, st.Swaps, swaps)
	}
	w.pin(b)
	waitFor(t, "B to be active again", func() bool { d, _ := eng.Active(); return d == b.DigestStr() })

	// An unsigned digest is refused; B stays.
	before := src.Status().Failures
	w.pin(unsigned)
	waitFor(t, "the unsigned pin to be refused", func() bool { return src.Status().Failures > before })
	st := src.Status()
	if d, _ := eng.Active(); d != b.DigestStr() || st.Digest != b.DigestStr() {
		t.Fatalf("after an unsigned pin: active %s, status %+v", d, st)
	}
	if !strings.Contains(st.LastError, sign.ErrNoSignature.Error()) || st.LastErrorAt.IsZero() {
		t.Fatalf("last error: %+v", st)
	}

	// The registry goes down: A, verified and cached before, loads from the
	// cache; SIGHUP re-reads an unchanged file.
	w.front.Close()
	w.pin(a)
	waitFor(t, "A to load from the cache", func() bool { d, _ := eng.Active(); return d == a.DigestStr() })
	swaps = src.Status().Swaps
	hup <- syscall.SIGHUP
	waitFor(t, "the SIGHUP reload", func() bool { return src.Status().Swaps > swaps })

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
}

// TestPinFileWrittenInPlacePolled: with a poll every 5 ms, a pin file
// written in place in two pieces 10 ms apart is still read once whole (the
// poll that reads the first piece, which does not parse, reads again
// PinSettle later instead of refusing it).
func TestPinFileWrittenInPlacePolled(t *testing.T) {
	w := newWorld(t)
	a, b := w.push(policy("A"), true), w.push(policy("B"), true)
	eng := engine.New()
	defer eng.Close()
	src, err := NewPinFile(w.pinPath(), w.cache, eng, WithLogger(quietLogger()), WithPollInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	w.pin(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, nil) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "A to be active", func() bool { d, _ := eng.Active(); return d == a.DigestStr() })
	failures := src.Status().Failures
	w.pinInPlace(b)
	waitFor(t, "B to be active", func() bool { d, _ := eng.Active(); return d == b.DigestStr() })
	if got := src.Status().Failures; got != failures {
		t.Fatalf("a pin file written in place: %d failures, was %d", got, failures)
	}
}

// TestOfflineNeedsEarlierVerification: with the registry down, a signed
// digest that was never verified here is refused even when it is cached.
func TestOfflineNeedsEarlierVerification(t *testing.T) {
	w := newWorld(t)
	a := w.push(policy("A"), true)
	ctx := context.Background()
	// Put A in the cache without verifying it (a plain pull).
	src, err := NewPinFile(w.pinPath(), w.cache, engine.New(), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := oci.ParseDigest(a.String())
	if _, err := oci.Pull(ctx, d, oci.WithCache(src.cache)); err != nil {
		t.Fatal(err)
	}
	w.front.Close()
	w.pin(a)
	if err := src.Load(ctx); err == nil || !strings.Contains(err.Error(), "never verified") {
		t.Fatalf("Load: %v, want a refusal", err)
	}
}

func TestBadPinFileKeepsBundle(t *testing.T) {
	w := newWorld(t)
	a := w.push(policy("A"), true)
	eng := engine.New()
	defer eng.Close()
	src, err := NewPinFile(w.pinPath(), w.cache, eng, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w.pin(a)
	if err := src.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, content string }{
		{"not yaml", "bundle: [\n"},
		{"a tag", "bundle: " + w.host + "/acme/policies:latest\npublicKey: cosign.pub\n"},
		{"missing key file", "bundle: " + a.String() + "\npublicKey: nope.pub\n"},
		{"unknown repo", "bundle: " + w.host + "/acme/other@" + a.DigestStr() + "\npublicKey: cosign.pub\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(w.pinPath(), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := src.Load(ctx); err == nil {
				t.Fatal("Load: no error")
			}
			if got, _ := eng.Active(); got != a.DigestStr() {
				t.Fatalf("active %s, want %s", got, a.DigestStr())
			}
		})
	}
}

// TestSwapUnderLoad: 8 goroutines decide through an engine-backed Policy
// while the pin file flips between two signed digests for about 3 s: no
// decision fails, and each names one of the two digests.
func TestSwapUnderLoad(t *testing.T) {
	w := newWorld(t)
	a, b := w.push(policy("A"), true), w.push(policy("B"), true)
	eng := engine.New()
	defer eng.Close()
	src, err := NewPinFile(w.pinPath(), w.cache, eng, WithLogger(quietLogger()), WithPollInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.pin(a)
	if err := src.Load(ctx); err != nil {
		t.Fatal(err)
	}
	go src.Watch(ctx, nil)
	pol := proxy.NewPolicy(eng, proxy.WithLogger(quietLogger()))

	want := map[string]string{a.DigestStr(): "A", b.DigestStr(): "B"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var decisions atomic.Int64
	seen := make([]map[string]bool, 8)
	errs := make(chan error, 8)
	for g := range 8 {
		seen[g] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := decisions.Add(1)
				tool := "ls"
				if n%2 == 0 {
					tool = "rm"
				}
				if n%64 == 0 {
					// Leave the two CPUs of a CI machine some room for the
					// loads (verify, pull, compile) the test is about.
					time.Sleep(time.Millisecond)
				}
				v := pol.Decide(ctx, &bundles.Input{Tool: tool})
				rule, ok := want[v.Bundle]
				switch {
				case !ok:
					errs <- fmt.Errorf("decision by %q, not one of the two digests: %+v", v.Bundle, v)
					return
				case tool == "ls" && !v.Allow, tool == "rm" && (v.Allow || v.Rule != rule):
					errs <- fmt.Errorf("%s decided wrongly by %s: %+v", tool, rule, v)
					return
				}
				seen[g][v.Bundle] = true
			}
		}()
	}
	end := time.Now().Add(3 * time.Second)
	flips := 0
	// At least 4 flips even where compiling is slow (-race on 2 CPUs).
	for cur := a; flips < 4 || time.Now().Before(end); flips++ {
		if cur == a {
			cur = b
		} else {
			cur = a
		}
		w.pin(cur)
		waitFor(t, "the flip to "+cur.DigestStr(), func() bool { d, _ := eng.Active(); return d == cur.DigestStr() })
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := src.Status(); st.Failures != 0 {
		t.Errorf("failed loads: %+v", st)
	}
	both := 0
	for _, s := range seen {
		if len(s) == 2 {
			both++
		}
	}
	t.Logf("%d decisions, %d flips; %d of 8 goroutines saw both digests", decisions.Load(), flips, both)
	if both == 0 {
		t.Fatalf("no goroutine saw both digests across %d flips", flips)
	}
}

// TestFixedDigest: --bundle REF@DIGEST loads a signed digest, refuses an
// unsigned one or one signed by another key (nothing becomes active), and
// with the registry down loads the digest verified before from the cache.
func TestFixedDigest(t *testing.T) {
	w := newWorld(t)
	a, unsigned := w.push(policy("A"), true), w.push(policy("C"), false)
	pub, err := os.ReadFile(filepath.Join(w.dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, err := sign.GenerateKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := NewDigest(a, nil, w.cache, engine.New()); err == nil {
		t.Fatal("NewDigest with no keys: no error")
	}
	for _, tc := range []struct {
		name string
		ref  name.Digest
		key  []byte
		want error
	}{
		{"unsigned", unsigned, pub, sign.ErrNoSignature},
		{"other key", a, otherPub, sign.ErrUntrusted},
	} {
		eng := engine.New()
		src, err := NewDigest(tc.ref, [][]byte{tc.key}, w.cache, eng, WithLogger(quietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Load(ctx); !errors.Is(err, tc.want) {
			t.Fatalf("%s: Load = %v, want %v", tc.name, err, tc.want)
		}
		if d, _ := eng.Active(); d != "" {
			t.Fatalf("%s: %s became active", tc.name, d)
		}
		eng.Close()
	}

	eng := engine.New()
	defer eng.Close()
	src, err := NewDigest(a, [][]byte{pub}, w.cache, eng, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := eng.Active(); d != a.DigestStr() || src.Status().Digest != a.DigestStr() {
		t.Fatalf("active %s, status %+v; want %s", d, src.Status(), a.DigestStr())
	}
	// Registry down: a new engine (a restarted proxy) loads A from the cache.
	w.front.Close()
	eng2 := engine.New()
	defer eng2.Close()
	src2, err := NewDigest(a, [][]byte{pub}, w.cache, eng2, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src2.Load(ctx); err != nil {
		t.Fatalf("offline load of a digest verified before: %v", err)
	}
	if d, _ := eng2.Active(); d != a.DigestStr() {
		t.Fatalf("offline: active %q", d)
	}
}
