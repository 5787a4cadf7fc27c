//go:build !linux

package proxy

import (
	"context"
	"io"
)

func (p *Stdio) relayPolled(context.Context, io.Reader, io.WriteCloser, io.Reader) (error, error, bool) {
	return nil, nil, false
}
