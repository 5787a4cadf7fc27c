//go:build unix

package proxy

import "syscall"

// directTransportSupported: idle sockets can be peeked at (see alive).
const directTransportSupported = true

// alive reports whether an idle connection is still open and quiet: the
// server has neither closed it nor sent anything unasked. One non-blocking
// peek at the socket.
func (c *upConn) alive() bool {
	if c.raw == nil {
		return true
	}
	var buf [1]byte
	var peekErr error
	err := c.raw.Read(func(fd uintptr) bool {
		_, _, peekErr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return err == nil && peekErr == syscall.EAGAIN
}
