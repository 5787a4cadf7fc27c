//go:build linux

package proxy

import (
	"context"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
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

const (
	pollIn  = 0x1
	pollOut = 0x4
)

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

// nonBlocking returns the raw connection of w when it is a file (such as
// exec.Cmd's StdinPipe) whose descriptor is in non-blocking mode, so that a
// write can be tried without waiting.
func nonBlocking(w io.Writer) (syscall.RawConn, bool) {
	sc, ok := w.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = fcntlGetFlags(int(fd)) }); err != nil || ferr != nil {
		return nil, false
	}
	return rc, flags&syscall.O_NONBLOCK != 0
}

func fcntlGetFlags(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// spillWriter is the server's input while the poll loop relays. The loop
// is the only reader of both peers, so it must never wait on a write: a
// server that answers a request in full before it reads the next one would
// wait on the loop to read its answer while the loop waited on it to read
// the next request. A write is tried without waiting; what does not fit in
// the pipe is handed, in order, to a goroutine that finishes it (spilling),
// and until it has, later writes join it and the loop stops reading the
// client (so what is held stays bounded) but goes on reading the server.
// Writes come one at a time (under the lineWriter's lock); the spilling
// goroutine runs beside them.
type spillWriter struct {
	rc   syscall.RawConn
	file io.WriteCloser // the server's input: blocking writes, and Close

	mu       sync.Mutex // guards pending, spilling, closing, err
	pending  []byte     // bytes the spilling goroutine has yet to write
	spilling bool
	closing  bool  // Close was called while spilling: the goroutine closes
	err      error // the spilling goroutine's write error, returned next

	backlog atomic.Bool // spilling, for the poll loop to read without the lock

	write rawWrite // tryWrite's scratch
}

func (s *spillWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return 0, os.ErrClosed
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	if s.spilling {
		s.pending = append(s.pending, b...)
		s.mu.Unlock()
		return len(b), nil
	}
	s.mu.Unlock()
	n, err := s.tryWrite(b)
	if err != nil || n == len(b) {
		return n, err
	}
	s.mu.Lock()
	s.spilling = true
	s.pending = append([]byte(nil), b[n:]...)
	s.backlog.Store(true)
	s.mu.Unlock()
	go s.spill()
	return len(b), nil
}

// tryWrite writes what fits in the pipe now. It is called by one goroutine
// at a time (Write's caller while not spilling, else the spilling
// goroutine), so the scratch state of one rawWrite serves them all without
// a closure made per write.
func (s *spillWriter) tryWrite(b []byte) (written int, err error) {
	w := &s.write
	if w.fn == nil {
		w.fn = w.once
	}
	w.b, w.n, w.err = b, 0, nil
	cerr := s.rc.Write(w.fn)
	written, err = w.n, w.err
	w.b, w.err = nil, nil
	if err == nil {
		err = cerr
	}
	return written, err
}

// rawWrite is one non-blocking write of b through a syscall.RawConn: fn,
// made once, writes until done or the pipe is full, leaving in n how much it
// wrote and in err why it stopped early (EAGAIN, a full pipe, is no error).
type rawWrite struct {
	fn  func(fd uintptr) bool
	b   []byte
	n   int
	err error
}

func (w *rawWrite) once(fd uintptr) bool {
	for w.n < len(w.b) {
		n, werr := syscall.Write(int(fd), w.b[w.n:])
		if n > 0 {
			w.n += n
		}
		switch werr {
		case nil:
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true // full: the rest spills
		default:
			w.err = werr
			return true
		}
	}
	return true
}

// spill writes pending out, waiting as long as the server takes to read.
func (s *spillWriter) spill() {
	for {
		s.mu.Lock()
		buf := s.pending
		s.pending = nil
		if len(buf) == 0 {
			s.stopSpilling()
			return
		}
		s.mu.Unlock()
		if err := s.writeAll(buf); err != nil {
			s.mu.Lock()
			s.err, s.pending = err, nil
			s.stopSpilling()
			return
		}
	}
}

// stopSpilling ends a spill (s.mu held, and released here), closing the
// file if Close was called meanwhile.
func (s *spillWriter) stopSpilling() {
	s.spilling = false
	s.backlog.Store(false)
	closing := s.closing
	s.mu.Unlock()
	if closing {
		s.file.Close()
	}
}

// writeAll writes b, waiting in ppoll(2) for room whenever the pipe is
// full: the descriptor need not be in the Go runtime's poller.
func (s *spillWriter) writeAll(b []byte) error {
	for len(b) > 0 {
		n, err := s.tryWrite(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if len(b) == 0 {
			return nil
		}
		var werr error
		if err := s.rc.Control(func(fd uintptr) {
			pfd := [1]pollfd{{fd: int32(fd), events: pollOut}}
			for {
				_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 1, 0, 0, 0, 0)
				if e == syscall.EINTR {
					continue
				}
				if e != 0 {
					werr = e
				}
				return
			}
		}); err != nil {
			return err
		}
		if werr != nil {
			return werr
		}
	}
	return nil
}

// Close closes the server's input once everything written has been
// written.
func (s *spillWriter) Close() error {
	s.mu.Lock()
	s.closing = true
	spilling := s.spilling
	s.mu.Unlock()
	if spilling {
		return nil // spill closes it when done
	}
	return s.file.Close()
}

// spillWait is how long the loop waits in ppoll, while the server's input
// spills, before it looks again whether it may read the client.
const spillWait = time.Millisecond

// relayPolled is Run's relay on Linux when both inputs are files and the
// server's input is a non-blocking pipe: one goroutine waits on both with
// ppoll(2), reads whichever is ready and handles its lines, as a C relay's
// poll loop does: a message costs one thread wake-up and three system calls
// (ppoll, read, write) in each direction. Writes to the server never make
// it wait (see [spillWriter]); writes to the client may, as a client that
// writes only while it reads would stall a direct server too. The caller
// keeps the files open until it returns.
func (p *Stdio) relayPolled(ctx context.Context, clientIn io.Reader, serverIn io.WriteCloser, serverOut io.Reader) (clientErr, serverErr error, ok bool) {
	cfd, ok1 := fdOf(clientIn)
	sfd, ok2 := fdOf(serverOut)
	rc, ok3 := nonBlocking(serverIn)
	if !ok1 || !ok2 || !ok3 {
		return nil, nil, false
	}
	sw := &spillWriter{rc: rc, file: serverIn}
	p.toServer.setPeer(sw, sw)
	fds := [2]pollfd{{fd: int32(cfd), events: pollIn}, {fd: int32(sfd), events: pollIn}}
	clientOpen := true
	cb, sb := &batch{p: p}, &batch{p: p}
	clb, slb := newLineBuffer(p.MaxLine), newLineBuffer(p.MaxLine)
	fromClient := func(line []byte, tooLong bool) error { return p.fromClient(ctx, cb, line, tooLong) }
	fromServer := func(line []byte, tooLong bool) error { return p.fromServer(ctx, sb, line, tooLong) }
	closeClient := func(err error) {
		clientErr = err
		if err == io.EOF {
			p.clientClosed.Store(true)
		}
		p.closeServerInput()
		clientOpen = false
		fds[0].fd = -1 // poll ignores it from now on
	}
	yielded := time.Now()
	for {
		var timeout *syscall.Timespec
		if clientOpen {
			fds[0].fd = int32(cfd)
			if sw.backlog.Load() {
				fds[0].fd = -1 // not while the server's input spills
				ts := syscall.NsecToTimespec(int64(spillWait))
				timeout = &ts
			}
		}
		_, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(timeout)), 0, 0, 0)
		if e != 0 && e != syscall.EINTR && e != syscall.EAGAIN {
			return nil, e, true
		}
		if fds[0].fd >= 0 && fds[0].revents != 0 {
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
				closeClient(err)
			default:
				handled, herr := clb.split(n, false, fromClient)
				if handled && herr == nil {
					herr = cb.flush()
				}
				if herr != nil {
					closeClient(herr)
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
