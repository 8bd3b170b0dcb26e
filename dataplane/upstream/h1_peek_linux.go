package upstream

import (
	"net"
	"syscall"
	"unsafe"
)

// peeker looks at an idle connection without blocking. It is made once per
// connection: its callback and the raw connection are not allocated again
// on every reuse.
type peeker struct {
	rc     syscall.RawConn // nil when the connection has none
	closed bool
	buf    [1]byte
	look   func(fd uintptr) bool
}

func newPeeker(nc net.Conn) *peeker {
	p := &peeker{}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			p.rc = rc
		}
	}
	p.look = func(fd uintptr) bool {
		// A raw call: a non-blocking peek never blocks, and it does not
		// wake the runtime's sysmon thread (see package nbio).
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.buf[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		// EAGAIN: nothing to read, alive. Anything else (an error, EOF,
		// stray bytes) makes the connection unusable.
		p.closed = errno != syscall.EAGAIN
		return true
	}
	return p
}

// peerClosed reports whether the server has closed an idle connection (or
// sent something unexpected on it): a non-blocking peek finds EOF or data.
func (p *peeker) peerClosed() bool {
	if p.rc == nil {
		return false
	}
	p.closed = false
	err := p.rc.Read(p.look)
	return p.closed || err != nil
}
