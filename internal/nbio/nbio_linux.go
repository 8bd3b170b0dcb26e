package nbio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// maxRW caps a single read or write, as internal/poll does.
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write make raw system calls.
// Everything else (deadlines, Close, addresses, SyscallConn, ReadFrom) is
// the *net.TCPConn's own.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex // one Read at a time, as the poller allows
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // one Write at a time
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// Wrap returns nc as a *Conn when it is a TCP connection, and nc itself
// otherwise.
func Wrap(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{TCPConn: tc, rc: rc}
	// Method values made once: a closure per call would allocate.
	c.readFn = c.read
	c.writeFn = c.write
	return c
}

// Read reads up to len(p) bytes, waiting for data as net.Conn does.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, opError(c, "read", err)
	case rerr != nil:
		return 0, opError(c, "read", os.NewSyscallError("read", rerr))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is the raw connection's callback: false waits for readiness.
func (c *Conn) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch errno {
		case 0:
			c.rn = int(n)
			if n > 0 {
				raceAcquire(fd)
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = errno
			return true
		}
	}
}

// opError reports err for op the way the net package does, so that
// callers see the same errors whether a connection is wrapped or not.
func opError(c net.Conn, op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		// The raw connection names its operations "raw-read" and
		// "raw-write"; report the operation the caller made.
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Write writes all of p, waiting for buffer space as net.Conn does.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, opError(c, "write", err)
	case werr != nil:
		return n, opError(c, "write", os.NewSyscallError("write", werr))
	}
	return n, nil
}

// write is the raw connection's callback: false waits for buffer space.
func (c *Conn) write(fd uintptr) bool {
	raceRelease(fd)
	for c.wn < len(c.wbuf) {
		b := c.wbuf[c.wn:]
		if len(b) > maxRW {
			b = b[:maxRW]
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch errno {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = errno
			return true
		}
	}
	return true
}
