//go:build linux

// Command gorelay is relay.c (../shared/bench/relay.c) written in Go: one
// goroutine waiting in ppoll, copying bytes both ways and looking at
// nothing. It measures what a Go process itself costs a stdio hop, apart
// from any proxy's work (BENCHMARKS.md, "stdio on this session's machine").
// With GORELAY_RAW=1 it waits in ppoll with RawSyscall6, so that the Go
// runtime never hands its processor away while it waits.
//
//	gorelay -- CMD ARGS...
package main

import (
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

type pollfd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1

func main() {
	if len(os.Args) < 3 {
		os.Exit(2) // os.Args[1] is "--"
	}
	inR, inW, err1 := os.Pipe()
	outR, outW, err2 := os.Pipe()
	if err1 != nil || err2 != nil {
		os.Exit(1)
	}
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	if err := cmd.Start(); err != nil {
		os.Exit(127)
	}
	inR.Close()
	outW.Close()
	toServer, fromServer := int(inW.Fd()), int(outR.Fd()) // Fd leaves them blocking
	raw := os.Getenv("GORELAY_RAW") != ""
	fds := [2]pollfd{{fd: 0, events: pollIn}, {fd: int32(fromServer), events: pollIn}}
	buf := make([]byte, 1<<16)
	for {
		if raw {
			syscall.RawSyscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, 0, 0, 0, 0)
		} else {
			syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, 0, 0, 0, 0)
		}
		if fds[0].revents != 0 && !copyOnce(0, toServer, buf) {
			return
		}
		if fds[1].revents != 0 && !copyOnce(fromServer, 1, buf) {
			return
		}
	}
}

// copyOnce reads what is there from src and writes all of it to dst; it
// reports false at the end of src or on an error.
func copyOnce(src, dst int, buf []byte) bool {
	n, err := syscall.Read(src, buf)
	if n <= 0 || err != nil {
		return false
	}
	for b := buf[:n]; len(b) > 0; {
		m, err := syscall.Write(dst, b)
		if err != nil {
			return false
		}
		b = b[m:]
	}
	return true
}
