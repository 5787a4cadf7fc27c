package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/test/redistest"
	"github.com/toolgate/toolgate/test/registry"
)

// connectConfig starts `toolgate proxy --config FILE` (the server command
// comes from the file) and connects the go-sdk client to it.
func connectConfig(t *testing.T, config string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.Command(toolgate, "proxy", "--config", config)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "configtest", Version: "1.0.0"}, nil)
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
	return cs
}

// TestConfigFileRegistryBundle runs the proxy from a config file alone:
// --bundle REF@DIGEST pulled from a real registry and verified with the
// key the file names (relative to the file), denials as JSON-RPC errors.
// A digest signed by nobody the file trusts decides nothing: every call is
// denied.
func TestConfigFileRegistryBundle(t *testing.T) {
	reg := registry.Start(t, registry.Options{})
	u, _ := url.Parse(reg.URL)
	repo := u.Host + "/acme/policies"
	priv, pub, err := sign.GenerateKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "cosign.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	signed := pushPolicy(t, repo, policyV1, priv, true)
	unsigned := pushPolicy(t, repo, policyV2, priv, false)

	write := func(name, bundle string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		config := fmt.Sprintf(`# toolgate proxy configuration (docs/proxy.md)
bundle: %s
key: [keys/cosign.pub]
server: testsrv
deny-as-error: true
state: memory
admin: ""
cache-dir: cache
command: [%q]
`, bundle, testserver)
		if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	cs := connectConfig(t, write("signed.yaml", signed.String()))
	res, err := call(t, cs, "echo", map[string]any{"text": "hi"})
	if err != nil || res.IsError || text(res) != "echo: hi" {
		t.Fatalf("echo under the signed bundle: %v %+v", err, res)
	}
	_, err = call(t, cs, "delete_repo", map[string]any{"text": "x"})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != -32030 || werr.Message != "v1 denies deleting." {
		t.Fatalf("delete_repo: got error %v, want JSON-RPC error -32030 with the rule's message", err)
	}
	if !strings.Contains(string(werr.Data), `"bundle":"`+signed.DigestStr()+`"`) {
		t.Errorf("error data %s does not name the bundle %s", werr.Data, signed.DigestStr())
	}
	if _, err := os.Stat(filepath.Join(dir, "cache")); err != nil {
		t.Errorf("cache-dir relative to the config file: %v", err)
	}

	cs = connectConfig(t, write("unsigned.yaml", unsigned.String()))
	_, err = call(t, cs, "echo", map[string]any{"text": "hi"})
	if !errors.As(err, &werr) || werr.Code != -32030 {
		t.Fatalf("echo with an unsigned bundle: got %v, want a denial (fail closed)", err)
	}
}

// TestAuditRotationThroughProxy: with --audit-max-size the proxy's audit log
// rotates into several files, `toolgate audit verify` checks them as one
// chain, and --audit-arguments puts the argument values in the records.
func TestAuditRotationThroughProxy(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "audit.log")
	cs := session(t, logPath, nil, "--audit-max-size", "1KiB", "--audit-arguments")
	const calls = 12
	for i := 0; i < calls; i++ {
		res, err := call(t, cs, "echo", map[string]any{"text": fmt.Sprintf("call-%d", i)})
		if err != nil || res.IsError {
			t.Fatalf("call %d: %v %+v", i, err, res)
		}
	}
	cs.Close()
	files, err := filepath.Glob(logPath + "*")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("audit files %q: want the log rotated at 1 KiB into several", files)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1024 {
			t.Errorf("%s is %d bytes, over --audit-max-size", f, st.Size())
		}
	}
	out, err := exec.Command(toolgate, "audit", "verify", logPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d line", calls)) {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	// The files as a shell lists log*: the live file first, then the
	// rotated ones; verify checks them in chain order all the same.
	globbed, err := filepath.Glob(logPath + "*")
	if err != nil || len(globbed) != len(files) || globbed[0] != logPath {
		t.Fatalf("glob %s*: %q (%v); want the %d files, the live one first", logPath, globbed, err, len(files))
	}
	out, err = exec.Command(toolgate, append([]string{"audit", "verify"}, globbed...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d line(s) in %d files", calls, len(files))) {
		t.Fatalf("audit verify %s*: %v\n%s", logPath, err, out)
	}
	var all strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all.Write(b)
	}
	if !strings.Contains(all.String(), `"arguments":{"text":"call-7"}`) {
		t.Errorf("--audit-arguments: no record carries the arguments of call 7")
	}

	// Delete a middle file: verify names where the chain breaks.
	rotated := files[:0]
	for _, f := range files {
		if f != logPath {
			rotated = append(rotated, f)
		}
	}
	if len(rotated) < 2 {
		t.Fatalf("rotated files %q", rotated)
	}
	if err := os.Remove(rotated[1]); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(toolgate, "audit", "verify", logPath).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), ":1:") {
		t.Fatalf("audit verify after deleting %s: %v\n%s", rotated[1], err, out)
	}
}

// TestRedisSharedLimit: two proxy processes on one Redis (--redis) share a
// rate limit of 2 a minute; with Redis gone, a counted call is denied (fail
// closed) and an uncounted one still runs.
func TestRedisSharedLimit(t *testing.T) {
	srv := redistest.Start(t)
	for attempt := 0; ; attempt++ {
		start := time.Now().UTC().Truncate(time.Minute)
		redisURL := fmt.Sprintf("redis://%s/%d", srv.Addr(), attempt%16)
		a := session(t, "", nil, "--state", "redis", "--redis", redisURL)
		b := session(t, "", nil, "--state", "redis", "--redis", redisURL)
		var got []string
		for _, cs := range []*mcp.ClientSession{a, b, a, b} {
			res, err := call(t, cs, "limited", map[string]any{"text": "x"})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%v:%s", res.IsError, text(res)))
		}
		if !time.Now().UTC().Truncate(time.Minute).Equal(start) && attempt < 2 {
			continue // the minute turned: the window restarted mid-sequence
		}
		refused := "true:Rate limit of 2 per minute reached. Try again later."
		want := []string{"false:limited: x", "false:limited: x", refused, refused}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("calls through two proxies sharing Redis:\n got %q\nwant %q", got, want)
		}

		srv.Stop()
		res, err := call(t, a, "limited", map[string]any{"text": "x"})
		if err != nil || !res.IsError || !strings.Contains(text(res), "shared counter store is unavailable") {
			t.Fatalf("counted call with Redis down: %v %q, want a denial", err, text(res))
		}
		res, err = call(t, b, "echo", map[string]any{"text": "still here"})
		if err != nil || res.IsError || text(res) != "echo: still here" {
			t.Fatalf("uncounted call with Redis down: %v %q", err, text(res))
		}
		return
	}
}
