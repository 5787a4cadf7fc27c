//go:build !linux

package main

import "os"

// serverPipes makes the MCP server's stdin and stdout pipes: in and out are
// the proxy's ends, childIn and childOut the server's (close them once it
// has started).
func serverPipes() (in, out, childIn, childOut *os.File, err error) {
	childIn, in, err = os.Pipe()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	out, childOut, err = os.Pipe()
	if err != nil {
		childIn.Close()
		in.Close()
		return nil, nil, nil, nil, err
	}
	return in, out, childIn, childOut, nil
}
