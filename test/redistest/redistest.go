// Package redistest starts Debian's redis-server for tests: on a free
// loopback port, with no persistence, in a folder of the test's own, stopped
// at cleanup. A missing binary fails the test (install it with
// scripts/test-deps.sh): tests that need Redis do not skip.
package redistest

import (
	"bufio"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server of the test's own, on a free loopback port,
// with no persistence, stopped at cleanup.
type Server struct {
	tb  testing.TB
	bin string
	// Dir is the server's folder; Port its port. Args are more flags
	// (later flags win) and TLS is set when the port speaks TLS only: set
	// them between New and Start.
	Dir  string
	Port int
	Args []string
	TLS  *tls.Config

	mu   sync.Mutex // guards cmd, done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start starts a redis-server (extra are more of its flags); see New.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s := New(tb)
	s.Args = extra
	s.Start()
	return s
}

// New picks the port and folder of a server that is not started yet. It
// fails the test when redis-server is not installed.
func New(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server is not installed (not found in PATH): install it to run the tests that need Redis (scripts/test-deps.sh, or apt-get install redis-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{tb: tb, bin: bin, Dir: tb.TempDir(), Port: port}
	tb.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts the server (again, on the same port) and waits until it
// answers.
func (s *Server) Start() {
	s.tb.Helper()
	args := append([]string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis.log"),
	}, s.Args...)
	cmd := exec.Command(s.bin, args...)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if answers(s.Addr(), s.TLS) {
			return
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.tb.Fatalf("redis-server on port %d exited at start:\n%s", s.Port, log)
		default:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redis-server on port %d did not answer within 10s", s.Port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answers reports whether a server at addr replies to PING (an error reply,
// such as NOAUTH, counts), over TLS when tlsConfig is set.
func answers(addr string, tlsConfig *tls.Config) bool {
	d := &net.Dialer{Timeout: time.Second}
	var c net.Conn
	var err error
	if tlsConfig != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsConfig)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-"))
}

// Stop stops the server and waits for it to exit; it does nothing to a
// stopped server.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
