package proxybench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file measures the Streamable HTTP proxy as users run it: the real
// toolgate binary (`toolgate proxy --listen --upstream`, with its
// production defaults: counters on disk, an audit log) in its own process,
// against the same upstream called directly and through a bare
// httputil.ReverseProxy in its own process (the price of an HTTP hop
// alone). With 8 clients it is also the throughput benchmark: calls/s
// through one proxy process.
//
// The 2 cores of these machines run the proxy, the clients and the
// upstream at once, so what the clients and the upstream cost is taken
// from the proxy. Both are therefore testdata/loadgen.c: C, one thread per
// keep-alive connection, blocking sockets, about 5 µs of CPU a call each
// side (a Go client and upstream on net/http cost 30–60 µs, mostly in
// waking and parking their goroutines). BenchmarkHTTPRoundTrip is the
// in-process comparison with net/http peers.
//
// Metrics: calls/s (all clients together), p50-ns and p99-ns (the round
// trips), proxy-cpu-ns/op (the proxy process's user+system CPU per call,
// from /proc) and load-cpu-ns/op (the clients' and the upstream's).

// startServer starts one of the built binaries, which prints where it
// listens as its first line, and returns that line and the process id.
func startServer(b *testing.B, name string, args ...string) (string, int) {
	cmd := exec.Command(filepath.Join(bin, name), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("%s printed no address: %v", name, err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid
}

// startHTTPToolgate starts the toolgate binary as a Streamable HTTP proxy
// in front of upstream, with counters on disk and an audit log, and
// returns its endpoint and process id.
func startHTTPToolgate(b *testing.B, upstream string) (string, int) {
	dir := b.TempDir()
	cmd := exec.Command(filepath.Join(bin, "toolgate"), "proxy", "--policy", "testdata/policies", "--server", "bench",
		"--admin", "", "--state", "disk", "--state-dir", filepath.Join(dir, "state"),
		"--audit-log", filepath.Join(dir, "audit.jsonl"), "--audit-max-size", "1GB",
		"--listen", "127.0.0.1:0", "--upstream", upstream)
	var stderr tail
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct{ Msg, Listen string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "proxy started" && rec.Listen != "" {
				return "http://" + rec.Listen + "/mcp", cmd.Process.Pid
			}
		}
	}
	b.Fatalf("toolgate logged no listen address; its stderr ends:\n%s", stderr.String())
	return "", 0
}

// processCPU returns the user+system CPU time process pid has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 10 ms).
func processCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it
	// follow its closing parenthesis.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// throughputRun runs b.N calls from clients loadgen clients to endpoint,
// and reports calls/s, latencies, and CPU per call of the proxy process
// (proxyPID, when not 0) and of the clients and the upstream (upPID).
func throughputRun(b *testing.B, clients int, endpoint string, proxyPID, upPID int) {
	host, path, _ := strings.Cut(strings.TrimPrefix(endpoint, "http://"), "/")
	h, port, _ := strings.Cut(host, ":")
	cmd := exec.Command(filepath.Join(bin, "loadgen"), "clients", h, port, "/"+path,
		strconv.Itoa(clients), "500", strconv.Itoa(b.N))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cpu := func() (proxy, up time.Duration) {
		var err error
		if proxyPID != 0 {
			if proxy, err = processCPU(proxyPID); err != nil {
				b.Fatal(err)
			}
		}
		if up, err = processCPU(upPID); err != nil {
			b.Fatal(err)
		}
		return proxy, up
	}
	b.ResetTimer()
	proxy0, up0 := cpu() // includes the warm-up: CPU per call is a slight overestimate
	out, err := cmd.Output()
	proxy1, up1 := cpu()
	b.StopTimer()
	if err != nil {
		b.Fatalf("loadgen clients: %v\n%s", err, stderr.String())
	}
	var calls, ns, p50, p99, clientCPU int64
	if _, err := fmt.Sscanf(string(out), "calls %d ns %d p50 %d p99 %d cpu %d", &calls, &ns, &p50, &p99, &clientCPU); err != nil || calls != int64(b.N) {
		b.Fatalf("loadgen clients printed %q (%v)", out, err)
	}
	warm := int64(clients * 500)
	b.ReportMetric(float64(calls)/(float64(ns)/1e9), "calls/s")
	b.ReportMetric(float64(p50), "p50-ns")
	b.ReportMetric(float64(p99), "p99-ns")
	b.ReportMetric(float64(clientCPU+(up1-up0).Nanoseconds())/float64(calls+warm), "load-cpu-ns/op")
	if proxyPID != 0 {
		b.ReportMetric(float64((proxy1-proxy0).Nanoseconds())/float64(calls+warm), "proxy-cpu-ns/op")
	}
}

// BenchmarkHTTPProcesses is the process-level Streamable HTTP benchmark
// (see the comment at the top of this file). Paths: direct to the upstream;
// through the reverse proxy; through toolgate (allowed calls: decided, a
// disk counter reserved and committed, an audit record written,
// forwarded).
func BenchmarkHTTPProcesses(b *testing.B) {
	port, upPID := startServer(b, "loadgen", "upstream")
	up := "http://127.0.0.1:" + port + "/mcp"
	rpAddr, rpPID := startServer(b, "reverseproxy", up)
	rp := "http://" + rpAddr + "/mcp"
	tg, tgPID := startHTTPToolgate(b, up)
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			b.Run("path=direct", func(b *testing.B) { throughputRun(b, clients, up, 0, upPID) })
			b.Run("path=reverseproxy", func(b *testing.B) { throughputRun(b, clients, rp, rpPID, upPID) })
			b.Run("path=toolgate", func(b *testing.B) { throughputRun(b, clients, tg, tgPID, upPID) })
		})
	}
}
