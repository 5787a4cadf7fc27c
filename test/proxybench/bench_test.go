// Package proxybench measures what the stdio proxy adds to a tools/call
// round trip, side by side in one run with a direct call and with the bare
// C relay of ../shared/bench/relay.c (the price of the extra hop alone).
package proxybench

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
		{"cc", "-O2", "-o", filepath.Join(dir, "relay"), "../../../shared/bench/relay.c"},
	} {
		cmd := exec.Command(b[0], b[1:]...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			panic(fmt.Sprintf("%v: %v", b, err))
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// roundTrips sends b.N tools/call requests one at a time through the command
// and waits for each answer.
func roundTrips(b *testing.B, tool string, args ...string) {
	cmd := exec.Command(args[0], args[1:]...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	r := bufio.NewReaderSize(stdout, 1<<16)
	req := func(id int) []byte {
		return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"path":"/srv/a","text":"hello"}}}`+"\n", id, tool)
	}
	// Warm up (the proxy compiles its policy at start).
	for i := 0; i < 50; i++ {
		stdin.Write(req(i))
		if _, err := r.ReadBytes('\n'); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := stdin.Write(req(i + 1000)); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadBytes('\n'); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStdioRoundTrip(b *testing.B) {
	up := filepath.Join(bin, "upstream")
	proxy := []string{filepath.Join(bin, "toolgate"), "proxy", "--policy", "testdata/policies", "--server", "bench", "--admin", "", "--state", "memory", "--"}
	b.Run("path=direct", func(b *testing.B) { roundTrips(b, "echo", up) })
	b.Run("path=relay", func(b *testing.B) { roundTrips(b, "echo", filepath.Join(bin, "relay"), "--", up) })
	b.Run("path=toolgate", func(b *testing.B) { roundTrips(b, "echo", append(proxy, up)...) })
	b.Run("path=toolgate-denied", func(b *testing.B) { roundTrips(b, "delete_everything", append(proxy, up)...) })
}
