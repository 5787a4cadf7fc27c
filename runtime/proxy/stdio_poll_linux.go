//go:build linux

package proxy

import (
	"context"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// pollfd is struct pollfd of poll(2).
type pollfd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1

// fdOf returns the descriptor of r when it is an *os.File.
func fdOf(r io.Reader) (int, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return 0, false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if rc.Control(func(d uintptr) { fd = int(d) }) != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// relayPolled is Run's relay on Linux when both inputs are files: one
// goroutine waits on both with ppoll(2), reads whichever is ready and
// handles its lines, as a C relay's poll loop does: a message costs one
// thread wake-up and three system calls (ppoll, read, write) in each
// direction.
func (p *Stdio) relayPolled(ctx context.Context, clientIn io.Reader, serverIn io.WriteCloser, serverOut io.Reader) (clientErr, serverErr error, ok bool) {
	cfd, ok1 := fdOf(clientIn)
	sfd, ok2 := fdOf(serverOut)
	if !ok1 || !ok2 {
		return nil, nil, false
	}
	fds := [2]pollfd{{fd: int32(cfd), events: pollIn}, {fd: int32(sfd), events: pollIn}}
	cb, sb := &batch{p: p}, &batch{p: p}
	clb, slb := newLineBuffer(p.MaxLine), newLineBuffer(p.MaxLine)
	fromClient := func(line []byte, tooLong bool) error { return p.fromClient(ctx, cb, line, tooLong) }
	fromServer := func(line []byte, tooLong bool) error { return p.fromServer(ctx, sb, line, tooLong) }
	yielded := time.Now()
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, 0, 0, 0, 0)
		if e != 0 && e != syscall.EINTR && e != syscall.EAGAIN {
			return nil, e, true
		}
		if fds[0].revents != 0 {
			n, err := syscall.Read(cfd, clb.free())
			switch {
			case err == syscall.EAGAIN || err == syscall.EINTR:
			case n <= 0:
				if err == nil {
					err = io.EOF
				}
				if _, herr := clb.split(0, true, fromClient); herr != nil {
					err = herr
				}
				if ferr := cb.flush(); ferr != nil && err == io.EOF {
					err = ferr
				}
				clientErr = err
				if err == io.EOF {
					p.clientClosed.Store(true)
				}
				serverIn.Close()
				fds[0].fd = -1 // poll ignores it from now on
			default:
				handled, herr := clb.split(n, false, fromClient)
				if handled && herr == nil {
					herr = cb.flush()
				}
				if herr != nil {
					clientErr = herr
					serverIn.Close()
					fds[0].fd = -1
				}
			}
		}
		if fds[1].revents != 0 {
			n, err := syscall.Read(sfd, slb.free())
			switch {
			case err == syscall.EAGAIN || err == syscall.EINTR:
			case n <= 0:
				if err == nil {
					err = io.EOF
				}
				slb.split(0, true, fromServer)
				sb.flush()
				return clientErr, err, true
			default:
				handled, herr := slb.split(n, false, fromServer)
				if handled && herr == nil {
					herr = sb.flush()
				}
				if herr != nil {
					return clientErr, herr, true
				}
			}
		}
		// Syscalls do not count as rescheduling: without a yield now and
		// then the runtime would preempt this goroutine every 10ms and
		// then poll for a while at a high rate.
		if now := time.Now(); now.Sub(yielded) > 5*time.Millisecond {
			yielded = now
			runtime.Gosched()
		}
	}
}
