package proxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTextModeServer: a client must not get a call past the policy to a
// server that reads its input in text mode, as Python's MCP SDK does (a
// lone CR ends a line there, while it is whitespace to JSON and to the
// proxy). The call hidden behind CRs in a notification never runs; the
// same call sent plainly is denied; an allowed one runs.
func TestTextModeServer(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test: make test-deps installs it")
	}
	ran := filepath.Join(t.TempDir(), "ran")
	p := startRaw(t, []string{"proxy", "--policy", "testdata/textmode", "--state", "memory", "--admin", ""},
		python, "testdata/textmode/server.py", ran)
	p.initialize()
	p.send([]byte("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"x\":\r" +
		"{\"jsonrpc\":\"2.0\",\"id\":\"smuggled\",\"method\":\"tools/call\",\"params\":{\"name\":\"delete_repo\",\"arguments\":{}}}\r}}"))
	if r := p.request("tools/call", `{"name":"delete_repo","arguments":{}}`); r.Result == nil || !strings.Contains(string(r.raw), `"isError":true`) {
		t.Fatalf("delete_repo sent plainly: %s, want a denial", r.raw)
	}
	if r := p.request("tools/call", `{"name":"echo","arguments":{}}`); !strings.Contains(string(r.raw), "RAN echo") {
		t.Fatalf("echo: %s, want it run", r.raw)
	}
	got, err := os.ReadFile(ran)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "echo\n" {
		t.Fatalf("the server ran %q, want only echo (the hidden delete_repo must not run)", got)
	}
}
