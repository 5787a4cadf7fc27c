// Package proxybench measures what the stdio proxy adds to a tools/call
// round trip, side by side in one run with a direct call and with the bare
// C relay of ../shared/bench/relay.c (the price of the extra process hop
// alone).
//
// Each client is one MCP session: its own command (the upstream, the relay
// in front of an upstream, or toolgate in front of an upstream), sending a
// tools/call and waiting for its answer, over and over. With clients=8,
// eight sessions run at once, as eight MCP clients each with their own
// proxy would; on a 2-core machine that measures what each path costs in
// CPU as much as in latency. Sessions are started once per benchmark and
// kept for its runs, so that start-up (toolgate compiles its policy) and
// warm-up never fall in the timed part.
//
// Besides ns/op (wall time per round trip over all clients: the inverse of
// throughput), each benchmark reports the median and the 99th percentile
// of the round trips' own latencies (p50-ns, p99-ns): compare those between
// paths.
package proxybench

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var bin string // folder of the built binaries

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // no benchmarks asked for: nothing to build
	}
	dir, err := os.MkdirTemp("", "proxybench")
	if err != nil {
		panic(err)
	}
	bin = dir
	for _, b := range [][]string{
		{"go", "build", "-o", filepath.Join(dir, "toolgate"), "github.com/toolgate/toolgate/cmd/toolgate"},
		{"go", "build", "-o", filepath.Join(dir, "upstream"), "github.com/toolgate/toolgate/test/proxybench/upstream"},
		{"go", "build", "-o", filepath.Join(dir, "reverseproxy"), "github.com/toolgate/toolgate/test/proxybench/reverseproxy"},
		{"go", "build", "-o", filepath.Join(dir, "gorelay"), "github.com/toolgate/toolgate/test/proxybench/gorelay"},
		{"cc", "-O2", "-o", filepath.Join(dir, "relay"), "../../../shared/bench/relay.c"},
		{"cc", "-O2", "-pthread", "-o", filepath.Join(dir, "loadgen"), "testdata/loadgen.c"},
	} {
		cmd := exec.Command(b[0], b[1:]...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			panic(fmt.Sprintf("%v: %v", b, err))
		}
	}
	code := m.Run()
	closeSessions()
	os.RemoveAll(dir)
	os.Exit(code)
}

// session is one client connected to one command.
type session struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	r     *bufio.Reader
	req   []byte // the request being built
	tool  string
	next  int // the next request id
}

// sessions are kept from one run of a benchmark to the next, by benchmark
// name and client number.
var (
	sessionsMu sync.Mutex
	sessions   = map[string]*session{}
)

func closeSessions() {
	sessionsMu.Lock()
	defer sessionsMu.Unlock()
	for k, s := range sessions {
		s.stdin.Close()
		s.cmd.Wait()
		delete(sessions, k)
	}
}

// tail keeps the last 4 KiB written to it.
type tail struct {
	mu  sync.Mutex // guards buf
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4<<10 {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-4<<10:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// startSession starts the command and warms it up (the proxy compiles its
// policy at start; the first calls fault in its pages).
func startSession(b *testing.B, tool string, args []string) *session {
	cmd := exec.Command(args[0], args[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr tail
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &session{cmd: cmd, stdin: stdin, r: bufio.NewReaderSize(stdout, 1<<16), tool: tool}
	for i := 0; i < 200; i++ {
		if err := s.roundTrip(); err != nil {
			stdin.Close()
			cmd.Wait()
			b.Fatalf("warming up %s: %v; its stderr ends:\n%s", args[0], err, stderr.String())
		}
	}
	return s
}

// roundTrip sends one tools/call and reads one line back, checking that it
// answers the request.
func (s *session) roundTrip() error {
	s.next++
	s.req = append(s.req[:0], `{"jsonrpc":"2.0","id":`...)
	s.req = strconv.AppendInt(s.req, int64(s.next), 10)
	s.req = append(s.req, `,"method":"tools/call","params":{"name":"`...)
	s.req = append(s.req, s.tool...)
	s.req = append(s.req, `","arguments":{"path":"/srv/a","text":"hello"}}}`+"\n"...)
	if _, err := s.stdin.Write(s.req); err != nil {
		return err
	}
	line, err := s.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	id := s.req[len(`{"jsonrpc":"2.0","id":`):]
	id = id[:bytes.IndexByte(id, ',')+1]
	if !bytes.Contains(line, append([]byte(`"id":`), id...)) {
		return fmt.Errorf("answer %q is not for request %d", line, s.next)
	}
	return nil
}

// sessionFor returns client i's session of this benchmark, starting it on
// first use.
func sessionFor(b *testing.B, i int, tool string, args func(i int) []string) *session {
	key := b.Name() + "#" + strconv.Itoa(i)
	sessionsMu.Lock()
	defer sessionsMu.Unlock()
	if sessions[key] == nil {
		sessions[key] = startSession(b, tool, args(i))
	}
	return sessions[key]
}

// run measures b.N round trips spread over clients sessions, session i
// running the command args(i), and reports their median and
// 99th-percentile latencies.
func run(b *testing.B, clients int, tool string, args func(i int) []string) {
	ss := make([]*session, clients)
	for i := range ss {
		ss[i] = sessionFor(b, i, tool, args)
	}

	rts := make([]roundTripper, len(ss))
	for i, s := range ss {
		rts[i] = s
	}
	measure(b, rts, nil)
}

// roundTripper is one client of a benchmark: it sends one call and waits
// for its answer.
type roundTripper interface{ roundTrip() error }

// measure times b.N round trips spread over clients, one goroutine each
// (the timer covers only them), and reports the median and 99th-percentile
// round trip (p50-ns, p99-ns). around, when set, is called just before and
// just after the timed part (to read a counter such as CPU time).
func measure(b *testing.B, clients []roundTripper, around func(after bool)) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64 // the next slot of lat to claim
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	if around != nil {
		around(false)
	}
	b.ResetTimer()
	for _, c := range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				start := time.Now()
				if err := c.roundTrip(); err != nil {
					failed.Store(&err)
					next.Store(int64(b.N))
					return
				}
				lat[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if around != nil {
		around(true)
	}
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

// BenchmarkStdioRoundTrip is the stdio proxy's latency benchmark (see the
// package doc). Paths: direct to the upstream; through relay.c; through
// the same relay in Go (gorelay: what a Go process costs a hop); through
// toolgate with an allowed call (decided, a counter reserved in memory,
// forwarded); the same with counters on disk (--state disk); and a call
// toolgate denies (answered without the upstream hop).
func BenchmarkStdioRoundTrip(b *testing.B) {
	up := filepath.Join(bin, "upstream")
	direct := func(int) []string { return []string{up} }
	relay := func(int) []string { return []string{filepath.Join(bin, "relay"), "--", up} }
	goRelay := func(int) []string { return []string{filepath.Join(bin, "gorelay"), "--", up} }
	proxy := func(int) []string {
		return []string{filepath.Join(bin, "toolgate"), "proxy", "--policy", "testdata/policies", "--server", "bench",
			"--admin", "", "--state", "memory", "--", up}
	}
	proxyDisk := func(int) []string {
		// Each session has its own state folder: the proxy using a folder
		// locks it.
		dir, err := os.MkdirTemp(bin, "state")
		if err != nil {
			panic(err)
		}
		return []string{filepath.Join(bin, "toolgate"), "proxy", "--policy", "testdata/policies", "--server", "bench",
			"--admin", "", "--state", "disk", "--state-dir", dir, "--", up}
	}
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			b.Run("path=direct", func(b *testing.B) { run(b, clients, "echo", direct) })
			b.Run("path=relay", func(b *testing.B) { run(b, clients, "echo", relay) })
			b.Run("path=gorelay", func(b *testing.B) { run(b, clients, "echo", goRelay) })
			b.Run("path=toolgate", func(b *testing.B) { run(b, clients, "echo", proxy) })
			b.Run("path=toolgate-disk", func(b *testing.B) { run(b, clients, "echo", proxyDisk) })
			b.Run("path=toolgate-denied", func(b *testing.B) { run(b, clients, "delete_everything", proxy) })
		})
	}
}
