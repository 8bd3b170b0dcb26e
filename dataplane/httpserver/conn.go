package httpserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/metamcp/metamcp/dataplane/callctx"
	"github.com/metamcp/metamcp/internal/nbio"
)

// aLongTimeAgo is a read deadline in the past: it interrupts a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one client connection served by the lean loop.
type conn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	remote string

	// hasByte and byteBuf hold a byte the watch read past a request (a
	// pipelined request's first byte); the next Read returns it.
	hasByte bool
	byteBuf [1]byte

	// idleUntil is the idle read deadline set on the connection, zero
	// when the deadline set is another (or none): the serving goroutine's.
	idleUntil time.Time

	mu         sync.Mutex
	idle       bool // waiting for a request head
	watchArmed bool // the current request may be watched
	watching   bool // a watch read is in progress
	aborting   bool // the watch is being stopped on purpose
	peerGone   bool // the watch saw the client go away
	cleared    bool // the watch cleared the read deadline
	watchDone  chan struct{}
	cancelReq  *callctx.Ctx // the request in progress's context
	watchTimer *time.Timer

	wbuf []byte // scratch for response heads and chunks
}

func newConn(s *Server, nc net.Conn) *conn {
	nc = nbio.Wrap(nc)
	c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.br = bufio.NewReaderSize(connReader{c}, headBufferSize)
	c.watchTimer = time.AfterFunc(time.Hour, c.watch)
	c.watchTimer.Stop()
	return c
}

// connReader reads the connection, starting with a byte the watch read.
type connReader struct{ c *conn }

func (r connReader) Read(p []byte) (int, error) {
	if r.c.hasByte && len(p) > 0 {
		p[0] = r.c.byteBuf[0]
		r.c.hasByte = false
		return 1, nil
	}
	return r.c.nc.Read(p)
}

// cancelRequest cancels the context of the request in progress, if any.
func (c *conn) cancelRequest() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancelReq != nil {
		c.cancelReq.Cancel()
	}
}

// closeIfIdle interrupts a connection waiting for its next request (Shutdown).
func (c *conn) closeIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle {
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
	}
}

// setIdle marks the connection waiting for a request or busy; false when
// the server is shutting down and the connection should end.
func (c *conn) setIdle(idle bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle = idle
	return !c.s.shutdown.Load()
}

func (c *conn) serve() {
	handedOff, detached := false, false
	defer func() {
		if v := recover(); v != nil {
			// A bug of this package must cost one connection, not the process.
			c.s.log.Error("panic serving an HTTP connection", "remote", c.remote, "panic", v, "stack", string(debug.Stack()))
		}
		if detached {
			return // the connection is served on by another goroutine (Detach)
		}
		c.end(handedOff)
	}()
	for {
		if !c.setIdle(true) {
			return
		}
		c.idleDeadline()
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		if !c.setIdle(false) {
			return
		}
		head, ok, err := c.readHead()
		if err != nil {
			return
		}
		var p parsedHead
		if ok {
			ok = parseHead(head, &p)
		}
		if !ok {
			handedOff = c.handOff()
			return
		}
		if c.idleUntil.IsZero() {
			// readHead waited with its own deadline: none while the
			// request runs, as before the idle one.
			c.setReadDeadline(time.Time{})
		}
		switch c.serveRequest(len(head), &p) {
		case requestDetached:
			detached = true
			return
		case requestClose:
			return
		}
	}
}

// idleDeadline bounds the wait for the next request by the idle timeout.
// Setting a deadline updates a runtime timer, and a request would cost two
// (set it, clear it once the head is in), so the one set stays for the
// requests of the next eighth of the timeout: a connection is closed after
// between one and 9/8 idle timeouts without a request. Reads of a request's
// body are bounded by it too; the watch, which may read for as long as a
// request runs, clears it (watch).
func (c *conn) idleDeadline() {
	now := time.Now()
	if !c.idleUntil.IsZero() && !c.idleUntil.Before(now.Add(c.s.idleTimeout)) {
		return
	}
	dl := now.Add(c.s.idleTimeout + c.s.idleTimeout/8)
	c.setReadDeadline(dl)
	c.idleUntil = dl
}

// setReadDeadline sets a read deadline other than the idle one.
func (c *conn) setReadDeadline(t time.Time) {
	_ = c.nc.SetReadDeadline(t)
	c.idleUntil = time.Time{}
}

// end releases the connection once no goroutine serves it any more.
func (c *conn) end(handedOff bool) {
	c.watchTimer.Stop()
	if !handedOff {
		_ = c.nc.Close()
	}
	c.s.forget(c)
}

// requestEnd is what serveRequest leaves the connection in.
type requestEnd int

const (
	requestKeep     requestEnd = iota // serve the next request
	requestClose                      // close the connection
	requestDetached                   // another goroutine serves it now (Detach)
)

// readHead returns the request head (through the blank line) buffered in
// c.br without consuming it; ok is false when it does not fit the buffer.
// A head that came whole with its first bytes, as most do, is parsed
// without another deadline; the rest of one that did not must come within
// readHeaderTimeout.
func (c *conn) readHead() (head []byte, ok bool, err error) {
	for waiting := false; ; waiting = true {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := headEnd(buf); i > 0 {
			return buf[:i], true, nil
		}
		if len(buf) >= headBufferSize {
			return nil, false, nil
		}
		if !waiting {
			c.setReadDeadline(time.Now().Add(c.s.readHeaderTimeout))
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			// The client went away or stalled mid-head: close, as net/http does.
			return nil, false, err
		}
	}
}

// headEnd returns the length of the head in b through its blank line, or 0.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
}

// handOff gives the connection, with what was read of it, to net/http.
func (c *conn) handOff() bool {
	c.setReadDeadline(time.Time{})
	rc := &replayConn{Conn: c.nc, r: bufferedReplay(c.br, c.nc)}
	return c.s.handoff.give(rc)
}

// serveRequest runs the handler for one parsed request whose head is
// headLen bytes of c.br and says what becomes of the connection.
func (c *conn) serveRequest(headLen int, p *parsedHead) requestEnd {
	_, _ = c.br.Discard(headLen)
	// Not a child of a server-wide context: that would put every request
	// through one mutex and map. Close cancels requests through their
	// connections instead.
	ctx := callctx.WithCancel(context.Background())
	defer ctx.Cancel()
	c.mu.Lock()
	c.cancelReq = ctx
	c.peerGone = false
	c.mu.Unlock()

	// A value, copied once by WithContext (the only way to give a request
	// its context): it stays on the stack, where a pointer made one more
	// allocation.
	base := http.Request{
		Method:        p.method,
		URL:           p.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        p.header,
		ContentLength: p.contentLength,
		Host:          p.host,
		RemoteAddr:    c.remote,
		RequestURI:    p.uri,
		Close:         p.close,
	}
	var b *body
	if p.contentLength > 0 {
		b = &body{c: c, remain: p.contentLength}
		base.Body = b
	} else {
		base.Body = http.NoBody
		c.armWatch()
	}
	req := base.WithContext(ctx)
	w := &response{c: c, req: req, header: make(http.Header, 4), closeAfter: p.close}

	ok := c.runHandler(w, req)
	if w.detached {
		// Detach completed the response; the handler ran on after it. Its
		// return (or panic) no longer concerns the connection.
		return requestDetached
	}
	if !ok {
		c.stopWatch()
		return requestClose
	}
	if !c.complete(w, b) {
		return requestClose
	}
	return requestKeep
}

// complete sends the response of a request whose handler is done with it
// and makes the connection ready for the next request; false when it must
// close instead.
func (c *conn) complete(w *response, b *body) bool {
	w.finish()
	gone := c.stopWatch()
	if w.err != nil || gone || w.closeAfter {
		return false
	}
	if b != nil && b.remain > 0 {
		if b.remain > maxDrain || b.err != nil {
			return false
		}
		c.setReadDeadline(time.Now().Add(c.s.readHeaderTimeout))
		if _, err := c.br.Discard(int(b.remain)); err != nil {
			return false
		}
	}
	return !c.s.shutdown.Load()
}

// Detach completes the response to a request served by the lean loop as if
// its handler had returned: what was written goes out (a streamed response
// is ended), and the connection serves its next requests on a new goroutine
// while the handler runs on, apart from the connection. From then on the
// handler must not use w or the request body; the request's context is no
// longer cancelled when the client goes away, only when the handler returns.
// Detach may be called on another goroutine than the handler's, provided
// the handler does not use w meanwhile and returns only after Detach did.
//
// It reports false and does nothing when w is not the lean loop's (a
// request net/http serves, which has no such thing), when the response is
// complete already, or when the request body was not read to its end.
func Detach(w http.ResponseWriter) bool {
	r := leanResponse(w)
	if r == nil || !r.detachable() {
		return false
	}
	c := r.c
	keep := c.complete(r, r.body())
	r.detached = true
	if keep {
		go c.serve()
	} else {
		c.end(false)
	}
	return true
}

// CanDetach reports whether Detach(w) would detach the request now.
func CanDetach(w http.ResponseWriter) bool {
	r := leanResponse(w)
	return r != nil && r.detachable()
}

// leanResponse finds the lean loop's response behind w, through the Unwrap
// methods of wrappers (as http.ResponseController does); nil if none.
func leanResponse(w http.ResponseWriter) *response {
	for {
		switch v := w.(type) {
		case *response:
			return v
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}

func (w *response) detachable() bool {
	b := w.body()
	return !w.handlerDone && !w.detached && (b == nil || b.remain == 0)
}

// body is the request's body, nil when it had none.
func (w *response) body() *body {
	b, _ := w.req.Body.(*body)
	return b
}

// runHandler calls the handler; false when it panicked.
func (c *conn) runHandler(w *response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			w.handlerDone = true
			if err, isErr := v.(error); !isErr || !errors.Is(err, http.ErrAbortHandler) {
				c.s.log.Error("panic serving an HTTP request", "remote", c.remote, "method", req.Method, "path", req.URL.Path, "panic", v, "stack", string(debug.Stack()))
			}
		}
	}()
	c.s.handler.ServeHTTP(w, req)
	return true
}

// armWatch schedules watching the connection for the client going away,
// once the request body was read: a request still running after
// watchAfter gets its context cancelled when the client disconnects.
func (c *conn) armWatch() {
	if c.br.Buffered() > 0 {
		// The client sent more (a pipelined request): reading on would
		// consume it, and net/http does not cancel in this case either.
		return
	}
	c.mu.Lock()
	c.watchArmed = true
	c.mu.Unlock()
	c.watchTimer.Reset(c.s.watchAfter)
}

// watch runs on the timer's goroutine: it blocks reading the connection
// until the client sends or goes away, or stopWatch interrupts it.
func (c *conn) watch() {
	c.mu.Lock()
	if !c.watchArmed || c.watching || c.hasByte {
		// hasByte: an earlier watch of this request (its timer fired late)
		// read the next request's first byte; reading on would lose it.
		c.mu.Unlock()
		return
	}
	// The watch may read for as long as the request runs: no idle
	// deadline. Cleared under the lock, so that stopWatch's interrupting
	// deadline comes after this.
	_ = c.nc.SetReadDeadline(time.Time{})
	c.cleared = true
	c.watching = true
	done := make(chan struct{})
	c.watchDone = done
	c.mu.Unlock()

	n, err := c.nc.Read(c.byteBuf[:])

	c.mu.Lock()
	if n == 1 {
		c.hasByte = true
	}
	if err != nil && !c.aborting {
		c.peerGone = true
		if c.cancelReq != nil {
			c.cancelReq.Cancel()
		}
	}
	c.watching = false
	c.mu.Unlock()
	close(done)
}

// stopWatch ends the watch of the request that finished; true when the
// client went away meanwhile.
func (c *conn) stopWatch() (gone bool) {
	c.watchTimer.Stop()
	c.mu.Lock()
	c.watchArmed = false
	c.cancelReq = nil
	if c.watching {
		c.aborting = true
		done := c.watchDone
		c.mu.Unlock()
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
		<-done
		_ = c.nc.SetReadDeadline(time.Time{})
		c.mu.Lock()
		c.aborting = false
	}
	if c.cleared {
		c.cleared = false
		c.idleUntil = time.Time{}
	}
	gone = c.peerGone
	c.mu.Unlock()
	return gone
}

// body is a request body of known length.
type body struct {
	c      *conn
	remain int64
	err    error
	closed bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.c.br.Read(p)
	b.remain -= int64(n)
	if b.remain == 0 {
		b.c.armWatch()
		return n, io.EOF
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
	}
	return n, err
}

func (b *body) Close() error {
	b.closed = true
	return nil
}
