//go:build !unix

package proxy

// directTransportSupported: without a way to peek at an idle socket, a
// connection the server has closed could not be told from an open one, so
// the default client keeps http.Transport here.
const directTransportSupported = false

// alive is never called here (see directTransportSupported).
func (c *upConn) alive() bool { return false }
