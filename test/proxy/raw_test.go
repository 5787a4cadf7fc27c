package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file holds what the raw-pipe tests share: the anyserver upstream,
// built on first use beside the toolgate binary TestMain builds, and a
// JSON-RPC client that writes and reads the proxy's stdio lines itself.

// anyserverBin returns the anyserver binary, building it on first use.
func anyserverBin(t testing.TB) string {
	return builtOnce(t, "anyserver", "github.com/toolgate/toolgate/test/proxy/anyserver")
}

// built holds the binaries builtOnce made, by name.
var built sync.Map // name → *builtBinary

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// builtOnce builds pkg with the extra go build flags into name, beside the
// toolgate binary TestMain builds, once per test binary, and returns its
// path.
func builtOnce(t testing.TB, name, pkg string, flags ...string) string {
	t.Helper()
	v, _ := built.LoadOrStore(name, &builtBinary{})
	b := v.(*builtBinary)
	b.once.Do(func() {
		b.path = filepath.Join(filepath.Dir(toolgate), name)
		args := append(append([]string{"build"}, flags...), "-o", b.path, pkg)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// rawProxy is a toolgate proxy process driven over raw pipes.
type rawProxy struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte // the proxy's stdout, a line at a time; closed at EOF
	stderr *syncBuffer
	exited chan struct{} // closed once the process has exited
	err    error         // the process's exit error, once exited is closed
	nextID int
	// other holds the lines read while waiting for a response that were
	// not that response (notifications, stray errors).
	other [][]byte
}

// startRaw starts `toolgate ARGS -- UPSTREAM…`. The process is killed at the
// end of the test if it is still running.
func startRaw(t testing.TB, args []string, upstream ...string) *rawProxy {
	t.Helper()
	cmd := exec.Command(toolgate, append(append(args, "--"), upstream...)...)
	// The caller is the one the flags name, whatever this environment says.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOOLGATE_IDENTITY=") && !strings.HasPrefix(kv, "TOOLGATE_GROUPS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &rawProxy{t: t, cmd: cmd, lines: make(chan []byte, 1024), stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReaderSize(stdout, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				p.lines <- bytes.TrimSuffix(line, []byte("\n"))
			}
			if err != nil {
				break
			}
		}
		close(p.lines)
		p.err = cmd.Wait() // only once stdout is read to its end
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		go func() {
			for range p.lines { // unread output must not block the process
			}
		}()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// send writes one line to the proxy.
func (p *rawProxy) send(line []byte) {
	p.t.Helper()
	if bytes.IndexByte(line, '\n') >= 0 {
		p.t.Fatalf("a message line holds a newline: %.200s", line)
	}
	if _, err := p.stdin.Write(append(line, '\n')); err != nil {
		p.t.Fatalf("writing to the proxy: %v\nproxy stderr:\n%s", err, tail(p.stderr.String(), 3000))
	}
}

// next returns the proxy's next output line, or an error when none comes
// within timeout or the output ended.
func (p *rawProxy) next(timeout time.Duration) ([]byte, error) {
	select {
	case line, ok := <-p.lines:
		if !ok {
			return nil, io.EOF
		}
		return line, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("no line from the proxy within %v", timeout)
	}
}

// response is a JSON-RPC response as the tests read it.
type response struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
	raw []byte
}

// await returns the response with this id (raw JSON): one read earlier
// into p.other, or the next to arrive; other lines go to p.other.
func (p *rawProxy) await(id string, timeout time.Duration) (*response, error) {
	match := func(line []byte) *response {
		var r response
		if json.Unmarshal(line, &r) == nil && string(r.ID) == id && (r.Result != nil || r.Error != nil) {
			r.raw = line
			return &r
		}
		return nil
	}
	for i, line := range p.other {
		if r := match(line); r != nil {
			p.other = append(p.other[:i:i], p.other[i+1:]...)
			return r, nil
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		line, err := p.next(time.Until(deadline))
		if err != nil {
			return nil, fmt.Errorf("waiting for the response to id %s: %w", id, err)
		}
		if r := match(line); r != nil {
			return r, nil
		}
		p.other = append(p.other, line)
	}
}

// request sends method with params (raw JSON, or "" for none) under a new
// numeric id and waits for its response.
func (p *rawProxy) request(method, params string) *response {
	p.t.Helper()
	p.nextID++
	id := fmt.Sprint(p.nextID)
	line := `{"jsonrpc":"2.0","id":` + id + `,"method":` + quote(method)
	if params != "" {
		line += `,"params":` + params
	}
	p.send([]byte(line + "}"))
	r, err := p.await(id, 20*time.Second)
	if err != nil {
		p.t.Fatalf("%s: %v\nproxy stderr:\n%s", method, err, tail(p.stderr.String(), 3000))
	}
	return r
}

// initialize runs the MCP handshake.
func (p *rawProxy) initialize() {
	p.t.Helper()
	r := p.request("initialize", `{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"rawtest","version":"1.0.0"}}`)
	if r.Error != nil {
		p.t.Fatalf("initialize: %s", r.raw)
	}
	p.send([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
}

// listTools returns the names tools/list gives.
func (p *rawProxy) listTools() []string {
	p.t.Helper()
	r := p.request("tools/list", `{}`)
	var res struct{ Tools []struct{ Name string } }
	if r.Error != nil || json.Unmarshal(r.Result, &res) != nil {
		p.t.Fatalf("tools/list: %s", r.raw)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	return names
}

// callResult is a CallToolResult as the tests read it.
type callResult struct {
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	IsError bool           `json:"isError"`
	Meta    map[string]any `json:"_meta"`
}

func (c *callResult) text() string {
	var b strings.Builder
	for _, x := range c.Content {
		b.WriteString(x.Text)
	}
	return b.String()
}

// callTool sends a tools/call of tool with args (raw JSON; "" leaves
// arguments out) and returns its response.
func (p *rawProxy) callTool(tool, args string) *response {
	p.t.Helper()
	params := `{"name":` + quote(tool)
	if args != "" {
		params += `,"arguments":` + args
	}
	return p.request("tools/call", params+"}")
}

// result decodes a response's CallToolResult; false for an error response
// or a result that is not one.
func (r *response) callResult() (*callResult, bool) {
	if r.Result == nil {
		return nil, false
	}
	var c callResult
	if json.Unmarshal(r.Result, &c) != nil {
		return nil, false
	}
	return &c, true
}

// close ends the client's input and waits for the proxy to exit; it returns
// the exit error.
func (p *rawProxy) close(timeout time.Duration) error {
	p.stdin.Close()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		return errors.New("the proxy did not exit after its input closed")
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
