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
	rtry   bool // TryRead: return rather than wait when nothing is there
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // one Write at a time
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool

	// WriteWait's state: its callback runs under rmu and wmu.
	wwStarted bool // the callback wrote; a later invocation means readable
	wwWhole   bool // all of wbuf went in one go, before the wait
	wwFn      func(fd uintptr) bool
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
	c.wwFn = c.writeThenWait
	return c
}

// Read reads up to len(p) bytes, waiting for data as net.Conn does.
func (c *Conn) Read(p []byte) (int, error) { return c.readOnce(p, false) }

// TryRead reads up to len(p) bytes of what is there now, without waiting:
// ErrWouldBlock when nothing is. EOF and errors are reported as Read
// reports them.
func (c *Conn) TryRead(p []byte) (int, error) { return c.readOnce(p, true) }

// readOnce is Read, or TryRead when try is set.
func (c *Conn) readOnce(p []byte, try bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr, c.rtry = p, 0, nil, try
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, opError(c, "read", err)
	case errors.Is(rerr, syscall.EAGAIN):
		return 0, ErrWouldBlock
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
			if c.rtry {
				c.rerr = errno
				return true
			}
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
	return c.writeAll(fd)
}

// writeAll writes what the socket takes of wbuf from wn on: false when it
// would block first; an error is left in werr.
func (c *Conn) writeAll(fd uintptr) bool {
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

// WriteWait writes all of p, then waits until the connection is readable
// (data, EOF or an error to read) without trying a read first: a reply
// cannot be there yet, and the read that would find nothing is a system
// call saved. The next Read returns what arrived.
//
// It is for request and response protocols whose peer sends nothing until
// p is complete: the wait starts before p is written, so no sign of
// readiness from before the write is left to find. If the socket takes
// only part of p at once (a request larger than its buffer), WriteWait
// writes the rest as Write does and returns without waiting: the peer may
// answer before the end of a large request, and only a read would find
// that answer.
func (c *Conn) WriteWait(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	c.wwStarted, c.wwWhole = false, false
	// The read lock's prepare step drops any earlier readiness; the
	// callback then writes and asks to wait; the runtime calls it again
	// once the connection is readable.
	err := c.rc.Read(c.wwFn)
	n, werr, whole := c.wn, c.werr, c.wwWhole
	c.wbuf = nil
	c.wmu.Unlock()
	c.rmu.Unlock()
	switch {
	case werr != nil:
		return n, opError(c, "write", os.NewSyscallError("write", werr))
	case err != nil && !whole:
		// Closed or past the deadline before a byte went; or, once
		// written, while waiting: then the Read that follows reports it.
		return n, opError(c, "write", err)
	case n < len(p):
		m, err := c.Write(p[n:])
		return n + m, err
	}
	return n, nil
}

// writeThenWait is WriteWait's raw callback: the first call writes what
// the socket takes at once and, when that is all, waits for readability;
// a later call means the connection is readable.
func (c *Conn) writeThenWait(fd uintptr) bool {
	if c.wwStarted {
		return true
	}
	c.wwStarted = true
	raceRelease(fd)
	if !c.writeAll(fd) || c.werr != nil {
		return true // the rest is written outside the read lock, or it failed
	}
	c.wwWhole = true
	return false
}
