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
