package upstream

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed reports whether the server has closed an idle connection (or
// sent something unexpected on it): a non-blocking peek finds EOF or data.
func peerClosed(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing to read, alive. Anything else (an error, EOF,
		// stray bytes) makes the connection unusable.
		closed = !errors.Is(err, syscall.EAGAIN)
		return true
	})
	return closed || err != nil
}
