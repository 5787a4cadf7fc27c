package proxy

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// startForSignal starts `toolgate proxy` with args (the server's part: `--
// CMD` or `--upstream URL`) and returns the session and the proxy process
// (to signal).
func startForSignal(t *testing.T, args ...string) (*mcp.ClientSession, *exec.Cmd, *syncBuffer) {
	t.Helper()
	args = append([]string{"proxy", "--policy", "testdata/policies", "--server", "testsrv", "--state", "memory", "--admin", "", "--identity", "alice"}, args...)
	cmd := exec.Command(toolgate, args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "shutdowntest", Version: "1.0.0"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", stderr.String())
		}
	})
	return cs, cmd, stderr
}

// TestGracefulShutdown: SIGTERM while a call is in flight lets it finish;
// the proxy then exits 0. With a short --shutdown-timeout, a call that
// outlasts it gets an error instead of hanging. So over stdio, and over the
// stdio-to-HTTP bridge, which also ends its session with one DELETE (it
// used to die at once with the signal).
func TestGracefulShutdown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string
		ms      int
		want    string // "" means an error
	}{
		{"finishes", "10s", 1500, "slept 1500 ms"},
		{"times out", "300ms", 6000, ""},
	} {
		for _, bridge := range []bool{false, true} {
			name := tc.name
			if bridge {
				name += "/bridge"
			}
			t.Run(name, func(t *testing.T) {
				var up *httpUpstream
				server := []string{"--", testserver}
				if bridge {
					up = startHTTPUpstream(t)
					server = []string{"--upstream", up.URL}
				}
				cs, cmd, stderr := startForSignal(t, append([]string{"--shutdown-timeout", tc.timeout}, server...)...)
				type result struct {
					res *mcp.CallToolResult
					err error
				}
				done := make(chan result, 1)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "sleep", Arguments: map[string]any{"ms": tc.ms}})
					done <- result{res, err}
				}()
				time.Sleep(300 * time.Millisecond) // the call is at the server
				start := time.Now()
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				var r result
				select {
				case r = <-done:
				case <-time.After(25 * time.Second):
					t.Fatal("the call in flight never came back")
				}
				if tc.want != "" && (r.err != nil || r.res.IsError || text(r.res) != tc.want) {
					t.Fatalf("the call in flight: %v %+v, want %q", r.err, r.res, tc.want)
				}
				if tc.want == "" {
					if r.err == nil {
						t.Fatalf("the call outlasting --shutdown-timeout: %+v, want an error", r.res)
					}
					if d := time.Since(start); d > 10*time.Second {
						t.Fatalf("the error came after %v", d)
					}
				}
				// The SDK's command transport waits for the process when the
				// session closes; the exit status is then in cmd.ProcessState.
				closed := make(chan error, 1)
				go func() { closed <- cs.Close() }()
				select {
				case <-closed:
				case <-time.After(15 * time.Second):
					t.Fatal("the proxy did not exit after SIGTERM")
				}
				if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 0 || !strings.Contains(stderr.String(), `"msg":"shut down"`) {
					t.Fatalf("after SIGTERM: process state %v; want a clean exit 0", cmd.ProcessState)
				}
				if up != nil {
					up.mu.Lock()
					deletes := up.deletes
					up.mu.Unlock()
					if deletes != 1 {
						t.Errorf("%d DELETEs, want the session ended once", deletes)
					}
				}
			})
		}
	}
}
