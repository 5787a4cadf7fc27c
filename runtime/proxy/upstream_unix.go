//go:build unix

package proxy

import "syscall"

// directTransportSupported: idle sockets can be peeked at (see alive).
const directTransportSupported = true

// alive reports whether an idle connection is still open and quiet: the
// server has neither closed it nor sent anything unasked. One non-blocking
// peek at the socket; no allocation after a connection's first check.
func (c *upConn) alive() bool {
	if c.raw == nil {
		return true
	}
	if c.peek == nil {
		c.peek = c.peekFD
	}
	err := c.raw.Read(c.peek)
	return err == nil && c.peekErr == syscall.EAGAIN
}

// peekFD peeks at the socket fd without waiting, into c.peekErr.
func (c *upConn) peekFD(fd uintptr) bool {
	var buf [1]byte
	_, _, c.peekErr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true
}
