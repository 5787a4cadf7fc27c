package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The npm tests put the proxy in front of the MCP reference servers from
// npm, pinned (scripts/test-deps.sh installs the same versions into the same
// folder), and drive it with the go-sdk client: real servers written by
// others, with every protocol feature they have — progress, sampling,
// resource subscriptions, roots — passing through the proxy.

// npmPackages are the pinned reference servers.
var npmPackages = []string{
	"@modelcontextprotocol/server-everything@2026.8.31",
	"@modelcontextprotocol/server-filesystem@2026.8.31",
}

var (
	npmOnce sync.Once
	npmDir  string
	npmErr  error
)

// npmServer returns the stdio entry point (dist/index.js) of one of the
// pinned packages, installing them on first use into the user cache folder
// (toolgate-test/npm, where scripts/test-deps.sh puts them).
func npmServer(t *testing.T, pkg string) string {
	t.Helper()
	npmOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		npmDir = filepath.Join(cache, "toolgate-test", "npm")
		var missing bool
		for _, p := range npmPackages {
			name, version := splitVersion(p)
			data, err := os.ReadFile(filepath.Join(npmDir, "node_modules", name, "package.json"))
			var pj struct{ Version string }
			if err != nil || json.Unmarshal(data, &pj) != nil || pj.Version != version {
				missing = true
			}
		}
		if _, err := exec.LookPath("node"); err != nil {
			npmErr = fmt.Errorf("the npm tests need Node.js (node) on PATH: run scripts/test-deps.sh")
			return
		}
		if !missing {
			return
		}
		t.Logf("installing %v into %s with npm (once per machine)", npmPackages, npmDir)
		if err := os.MkdirAll(npmDir, 0o755); err != nil {
			npmErr = err
			return
		}
		cmd := exec.Command("npm", append([]string{"install", "--prefix", npmDir, "--save-exact", "--no-audit", "--no-fund", "--loglevel=error"}, npmPackages...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = fmt.Errorf("npm install %v (or run scripts/test-deps.sh): %v\n%s", npmPackages, err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	entry := filepath.Join(npmDir, "node_modules", pkg, "dist", "index.js")
	if _, err := os.Stat(entry); err != nil {
		t.Fatalf("%s has no stdio entry point: %v", pkg, err)
	}
	return entry
}

func splitVersion(p string) (name, version string) {
	i := strings.LastIndex(p, "@")
	return p[:i], p[i+1:]
}

// npmSession starts the proxy on testdata/npm for server in front of the
// command, and connects a go-sdk client with opts.
func npmSession(t *testing.T, client *mcp.Client, server string, command ...string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	args := append([]string{"proxy", "--policy", "testdata/npm", "--server", server, "--identity", "alice", "--state", "memory", "--admin", "", "--"}, command...)
	cmd := exec.Command(toolgate, args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting through the proxy: %v\nproxy stderr:\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("proxy stderr (tail):\n%s", tail(stderr.String(), 4000))
		}
	})
	return cs
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	return names
}

// expectDenied checks that a call was denied by the proxy with message,
// rule in _meta.
func expectDenied(t *testing.T, res *mcp.CallToolResult, err error, message, rule string) {
	t.Helper()
	if err != nil {
		t.Fatalf("got error %v, want the denial %q", err, message)
	}
	if !res.IsError || text(res) != message {
		t.Errorf("got %q (isError %v), want the denial %q", text(res), res.IsError, message)
	}
	if rule != "" && res.Meta["toolgate/rule"] != rule {
		t.Errorf("_meta rule: got %v, want %q", res.Meta["toolgate/rule"], rule)
	}
	if d, _ := res.Meta["toolgate/bundle"].(string); !strings.HasPrefix(d, "sha256:") {
		t.Errorf("_meta bundle: got %v, want a digest", res.Meta["toolgate/bundle"])
	}
}

// TestNpmEverything: server-everything behind the proxy. One session with a
// sampling handler and notification handlers checks the listing, an allowed
// and a denied call, progress from a long-running tool, a sampling request
// the server makes of the client in the middle of a call, and a resource
// subscription's update notification.
func TestNpmEverything(t *testing.T) {
	entry := npmServer(t, "@modelcontextprotocol/server-everything")
	progress := make(chan *mcp.ProgressNotificationParams, 16)
	updated := make(chan string, 16)
	var sampledPrompt string
	var mu sync.Mutex
	client := mcp.NewClient(&mcp.Implementation{Name: "npmtest", Version: "1.0.0"}, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range req.Params.Messages {
				if tc, ok := m.Content.(*mcp.TextContent); ok {
					sampledPrompt += tc.Text
				}
			}
			return &mcp.CreateMessageResult{Content: &mcp.TextContent{Text: "sampled through toolgate"}, Model: "toolgate-test-model", Role: "assistant"}, nil
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			progress <- req.Params
		},
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			updated <- req.Params.URI
		},
	})
	cs := npmSession(t, client, "everything", "node", entry, "stdio")
	ctx := context.Background()
	t.Logf("protocol version %s", cs.InitializeResult().ProtocolVersion)
	const policyFile = "testdata/npm/everything.yaml"

	t.Run("tools/list", func(t *testing.T) {
		names := toolNames(t, cs)
		for _, want := range []string{"echo", "get-sum", "trigger-long-running-operation", "trigger-sampling-request", "toggle-subscriber-updates"} {
			if !slices.Contains(names, want) {
				t.Errorf("tools/list lacks %s: %v", want, names)
			}
		}
		for _, hidden := range []string{"get-env", "gzip-file-as-resource"} {
			if slices.Contains(names, hidden) {
				t.Errorf("tools/list shows the hidden %s: %v", hidden, names)
			}
		}
	})

	t.Run("allowed", func(t *testing.T) {
		res, err := call(t, cs, "echo", map[string]any{"message": "hello through toolgate"})
		if err != nil || res.IsError || text(res) != "Echo: hello through toolgate" {
			t.Fatalf("got %v %+v, want the server's echo", err, res)
		}
		res, err = call(t, cs, "get-sum", map[string]any{"a": 2, "b": 3})
		if err != nil || res.IsError || !strings.Contains(text(res), "is 5") {
			t.Fatalf("got %v %+v, want the server's sum", err, res)
		}
	})

	t.Run("denied", func(t *testing.T) {
		res, err := call(t, cs, "echo", map[string]any{"message": "my password is hunter2"})
		expectDenied(t, res, err, "Echoing secrets is not allowed.", policyFile+"#echo/no secrets")
		res, err = call(t, cs, "get-sum", map[string]any{"a": 5000, "b": 1})
		expectDenied(t, res, err, "get-sum takes numbers up to 1000.", policyFile+"#get-sum/small numbers")
		res, err = call(t, cs, "get-env", nil)
		expectDenied(t, res, err, `Tool "get-env" is hidden by policy`, policyFile+"#hide")
	})

	t.Run("progress", func(t *testing.T) {
		params := &mcp.CallToolParams{Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 1, "steps": 3}}
		params.SetProgressToken("long-op")
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := cs.CallTool(cctx, params)
		if err != nil || res.IsError || !strings.Contains(text(res), "Long running operation completed") {
			t.Fatalf("got %v %+v", err, res)
		}
		var got []float64
		for len(got) < 3 {
			select {
			case p := <-progress:
				if p.ProgressToken != "long-op" || p.Total != 3 {
					t.Errorf("progress: %+v, want token long-op of 3 steps", p)
				}
				got = append(got, p.Progress)
			case <-time.After(5 * time.Second):
				t.Fatalf("got progress %v, want steps 1, 2 and 3", got)
			}
		}
		if !slices.Equal(got, []float64{1, 2, 3}) {
			t.Errorf("progress steps %v, want [1 2 3]", got)
		}
		// A long operation the policy refuses never starts.
		res, err = call(t, cs, "trigger-long-running-operation", map[string]any{"duration": 60, "steps": 2})
		expectDenied(t, res, err, "Operations may last at most 5 seconds.", "")
	})

	t.Run("sampling", func(t *testing.T) {
		res, err := call(t, cs, "trigger-sampling-request", map[string]any{"prompt": "say hi to the proxy", "maxTokens": 20})
		if err != nil || res.IsError {
			t.Fatalf("got %v %+v", err, res)
		}
		for _, want := range []string{"sampled through toolgate", "toolgate-test-model"} {
			if !strings.Contains(text(res), want) {
				t.Errorf("the server's result %q does not hold %q, which the client's sampling handler returned", text(res), want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(sampledPrompt, "say hi to the proxy") {
			t.Errorf("the sampling request the client got: %q, want the prompt", sampledPrompt)
		}
	})

	t.Run("resource subscription", func(t *testing.T) {
		resources, err := cs.ListResources(ctx, nil)
		if err != nil || len(resources.Resources) == 0 {
			t.Fatalf("resources/list: %v %+v", err, resources)
		}
		uri := resources.Resources[0].URI
		rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil || len(rr.Contents) == 0 {
			t.Fatalf("resources/read %s: %v", uri, err)
		}
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatalf("subscribing to %s: %v", uri, err)
		}
		// The server sends an update at once for every subscription, then
		// every 5 seconds, once its simulated updates are on.
		res, err := call(t, cs, "toggle-subscriber-updates", map[string]any{})
		if err != nil || res.IsError {
			t.Fatalf("got %v %+v", err, res)
		}
		select {
		case got := <-updated:
			if got != uri {
				t.Errorf("update for %s, want %s", got, uri)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no notifications/resources/updated for %s within 10s", uri)
		}
		call(t, cs, "toggle-subscriber-updates", map[string]any{}) // off again
	})
}

// TestNpmFilesystem: server-filesystem on a temporary folder behind the
// proxy. A read under allowed/ returns the file; reads elsewhere, any write
// outside allowed/drafts/ and a path with ".." are denied by the policy and
// never reach the server (the file is not written); a write the policy
// allows is.
func TestNpmFilesystem(t *testing.T) {
	entry := npmServer(t, "@modelcontextprotocol/server-filesystem")
	root := t.TempDir()
	for path, content := range map[string]string{
		"allowed/notes.txt":  "hello from the allowed folder\n",
		"private/secret.txt": "do not read\n",
	} {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "allowed", "drafts"), 0o755); err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "npmtest", Version: "1.0.0"}, nil)
	// The server asks the client for its roots through the proxy and adopts them.
	client.AddRoots(&mcp.Root{URI: "file://" + root, Name: "test root"})
	cs := npmSession(t, client, "filesystem", "node", entry, root)
	const policyFile = "testdata/npm/filesystem.yaml"

	t.Run("tools/list", func(t *testing.T) {
		names := toolNames(t, cs)
		if !slices.Contains(names, "read_text_file") || !slices.Contains(names, "write_file") {
			t.Errorf("tools/list: %v", names)
		}
		for _, hidden := range []string{"list_allowed_directories", "read_file"} {
			if slices.Contains(names, hidden) {
				t.Errorf("tools/list shows the hidden %s: %v", hidden, names)
			}
		}
	})

	t.Run("read allowed", func(t *testing.T) {
		res, err := call(t, cs, "read_text_file", map[string]any{"path": filepath.Join(root, "allowed", "notes.txt")})
		if err != nil || res.IsError || text(res) != "hello from the allowed folder\n" {
			t.Fatalf("got %v %+v, want the file's content", err, res)
		}
		res, err = call(t, cs, "list_directory", map[string]any{"path": filepath.Join(root, "allowed")})
		if err != nil || res.IsError || !strings.Contains(text(res), "notes.txt") {
			t.Fatalf("list_directory: got %v %+v", err, res)
		}
	})

	t.Run("read denied", func(t *testing.T) {
		res, err := call(t, cs, "read_text_file", map[string]any{"path": filepath.Join(root, "private", "secret.txt")})
		expectDenied(t, res, err, "Agents read only under an allowed/ folder.", policyFile+"#read_text_file/reads under allowed")
		res, err = call(t, cs, "read_text_file", map[string]any{"path": root + "/allowed/../private/secret.txt"})
		expectDenied(t, res, err, `Paths may not contain "..".`, policyFile+"#*/no parent segments")
		res, err = call(t, cs, "read_file", map[string]any{"path": filepath.Join(root, "allowed", "notes.txt")})
		expectDenied(t, res, err, `Tool "read_file" is hidden by policy`, policyFile+"#hide")
		res, err = call(t, cs, "move_file", map[string]any{"source": filepath.Join(root, "allowed", "notes.txt"), "destination": filepath.Join(root, "moved.txt")})
		expectDenied(t, res, err, `Tool "move_file" is not permitted by policy`, policyFile+"#default")
		if _, err := os.Stat(filepath.Join(root, "allowed", "notes.txt")); err != nil {
			t.Errorf("the denied move happened: %v", err)
		}
	})

	t.Run("write denied", func(t *testing.T) {
		target := filepath.Join(root, "allowed", "new.txt")
		res, err := call(t, cs, "write_file", map[string]any{"path": target, "content": "should never be written"})
		expectDenied(t, res, err, "Agents write only to allowed/drafts/.", policyFile+"#write_file/writes to drafts only")
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Errorf("the denied write reached the disk: stat %s: %v", target, err)
		}
		secret := filepath.Join(root, "private", "secret.txt")
		res, err = call(t, cs, "write_file", map[string]any{"path": secret, "content": "overwritten"})
		expectDenied(t, res, err, "Agents write only to allowed/drafts/.", "")
		if data, _ := os.ReadFile(secret); string(data) != "do not read\n" {
			t.Errorf("the denied overwrite reached the disk: %q", data)
		}
	})

	t.Run("write allowed", func(t *testing.T) {
		target := filepath.Join(root, "allowed", "drafts", "draft.txt")
		res, err := call(t, cs, "write_file", map[string]any{"path": target, "content": "written through toolgate"})
		if err != nil || res.IsError {
			t.Fatalf("got %v %+v", err, res)
		}
		if data, err := os.ReadFile(target); err != nil || !bytes.Equal(data, []byte("written through toolgate")) {
			t.Errorf("the allowed write: %q %v", data, err)
		}
	})
}

// TestNpmFilesystemAnnotations: server-filesystem behind a policy that
// reads the annotations it announces, with a client that never lists tools:
// the proxy lists them itself, so write_file (destructiveHint: true) is
// denied and never reaches the disk, and read_text_file (readOnlyHint) runs.
func TestNpmFilesystemAnnotations(t *testing.T) {
	entry := npmServer(t, "@modelcontextprotocol/server-filesystem")
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "notes.txt"), []byte("notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cs := npmSession(t, mcp.NewClient(&mcp.Implementation{Name: "npmtest", Version: "1.0.0"}, nil), "fs-annotated", "node", entry, root)
	target := filepath.Join(root, "new.txt")
	res, err := call(t, cs, "write_file", map[string]any{"path": target, "content": "should never be written"})
	expectDenied(t, res, err, "Destructive tools are off for agents.", "testdata/npm/fs-annotated.yaml#*/no destructive tools")
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("the denied write reached the disk: stat %s: %v", target, err)
	}
	res, err = call(t, cs, "read_text_file", map[string]any{"path": filepath.Join(root, "notes.txt")})
	if err != nil || res.IsError || text(res) != "notes\n" {
		t.Fatalf("read_text_file: got %v %+v, want the file's content", err, res)
	}
}
