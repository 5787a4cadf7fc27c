package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

// hpHungURL returns the URL of a listener whose connection queue is full,
// so that connecting to it hangs (the kernel drops the handshake).
func hpHungURL(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.Dial("tcp", addr) // takes the one place in the queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("connecting past a full listen queue did not hang: the test cannot make a hung connect here")
	}
	return "http://" + addr + "/mcp"
}

// TestHTTPHungConnect: a call whose connection to the server never opens
// before --upstream-timeout never reached the server: it spends nothing
// (from review: it was counted, as any timeout).
func TestHTTPHungConnect(t *testing.T) {
	allow := func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }
	p := newHPProxy(t, hpHungURL(t), allow, func(h *HTTP) { h.CallTimeout = 300 * time.Millisecond })
	status, body := hpPost(t, p.URL, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{}}}`)
	if status != http.StatusOK || !strings.Contains(body, "did not answer within 300ms") {
		t.Fatalf("got %d %s, want the timeout error", status, body)
	}
	p.waitDone(t, "read_file", false)
}
