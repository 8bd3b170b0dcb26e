package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metamcp/metamcp/internal/nbio"
)

// h1Client is a small HTTP/1.1 client for the POSTs of a plain http://
// Streamable HTTP upstream. Unlike net/http.Transport it writes the request
// and reads the response on the calling goroutine (no per-connection reader
// and writer goroutines to hand off to), over a pool of keep-alive
// connections with one request in flight each. https://, proxies, the
// standalone GET stream and the SSE transport stay on net/http.
type h1Client struct {
	addr    string // host:port to dial
	reqLine []byte // "POST /path HTTP/1.1\r\nHost: h\r\n" + fixed headers
	dialer  net.Dialer
	maxIdle int
	// finishWait is h1FinishWait; a test may lengthen it.
	finishWait time.Duration

	mu     sync.Mutex
	idle   []*h1Conn // most recently used last
	closed bool
}

// h1IdleTimeout is how long an idle connection is kept; servers commonly
// close theirs after a minute or more.
const h1IdleTimeout = 30 * time.Second

// h1MaxIdle bounds the idle connections kept per session.
const h1MaxIdle = 64

// newH1Client returns a client for POSTs to rawURL with the configured
// headers, or nil when the URL or headers need net/http (https, a proxy from
// the environment, user info, headers net/http treats specially).
func newH1Client(rawURL string, headers http.Header) *h1Client {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Host == "" || u.Opaque != "" {
		return nil
	}
	if req, err := http.NewRequest(http.MethodPost, rawURL, nil); err != nil {
		return nil
	} else if proxy, err := http.ProxyFromEnvironment(req); err != nil || proxy != nil {
		return nil
	}
	var b []byte
	b = append(b, "POST "...)
	b = append(b, u.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, u.Host...)
	b = append(b, "\r\n"...)
	ua := false
	for k, vs := range headers {
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Content-Type", "Accept",
			"Mcp-Session-Id", "Mcp-Protocol-Version", "Te", "Upgrade", "Expect", "Trailer":
			return nil
		case "User-Agent":
			ua = true
		}
		if !validHeaderText(k) || k == "" || strings.ContainsAny(k, " :") {
			return nil
		}
		for _, v := range vs {
			if !validHeaderText(v) {
				return nil
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if !ua {
		b = append(b, "User-Agent: Go-http-client/1.1\r\n"...)
	}
	b = append(b, "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"...)
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &h1Client{
		addr: addr, reqLine: b, maxIdle: h1MaxIdle, finishWait: h1FinishWait,
		dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
	}
}

func validHeaderText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}

// h1Conn is one keep-alive connection.
type h1Conn struct {
	nc    net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	wrote bool // a byte of the current request reached the connection
	// ww is nc when it can WriteWait; waitNext makes the next Write the
	// request's last, which waits for the response.
	ww       writeWaiter
	waitNext bool
	// tr is nc when it can read without waiting (*nbio.Conn); try makes
	// the next Read a TryRead.
	tr       tryReader
	try      bool
	deadline time.Time // the last deadline set on nc; zero when none is
	// unfinished: the last response's chunked body was left unread past
	// the message the caller wanted (typically only its last chunk); the
	// next use reads it first.
	unfinished bool
	abortIO    func() // interrupts blocked I/O: a deadline in the past
	used       time.Time
	body       h1Body
	// lastSessionID is the Mcp-Session-Id of the last response, whose
	// string the next responses of the session share.
	lastSessionID string
}

// internOr returns b as one of the strings common (no allocation) when it
// is one, else as a new string.
func internOr(b []byte, common1, common2 string) string {
	switch string(b) {
	case common1:
		return common1
	case common2:
		return common2
	}
	return string(b)
}

// Write counts what reaches the connection, for the retry decision.
func (c *h1Conn) Write(p []byte) (int, error) {
	var n int
	var err error
	if c.waitNext && c.ww != nil {
		// The request's last bytes: wait for the response without the
		// read that would find nothing yet (nbio.Conn.WriteWait).
		c.waitNext = false
		n, err = c.ww.WriteWait(p)
	} else {
		n, err = c.nc.Write(p)
	}
	if n > 0 {
		c.wrote = true
	}
	return n, err
}

// Read is br's source: the connection's Read, or its TryRead when c.try
// is set.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.try {
		return c.tr.TryRead(p)
	}
	return c.nc.Read(p)
}

// tryReader is a connection that can read what is there without waiting
// (*nbio.Conn).
type tryReader interface {
	TryRead(p []byte) (int, error)
}

// writeWaiter is a connection that can write and then wait for the reply
// without a read first (*nbio.Conn).
type writeWaiter interface {
	WriteWait(p []byte) (int, error)
}

func (h *h1Client) get(ctx context.Context) (*h1Conn, bool, error) {
	now := time.Now()
	// Connections whose last body has not ended yet are passed over (the
	// server is still finishing that response) and go back afterwards.
	var aside [h1MaxAside]*h1Conn
	na := 0
	h.mu.Lock()
	wait := h.finishWait
	for len(h.idle) > 0 {
		c := h.idle[len(h.idle)-1]
		h.idle[len(h.idle)-1] = nil
		h.idle = h.idle[:len(h.idle)-1]
		if now.Sub(c.used) > h1IdleTimeout {
			h.mu.Unlock()
			_ = c.nc.Close()
			h.mu.Lock()
			continue
		}
		h.mu.Unlock()
		if !c.deadline.IsZero() && !now.Before(c.deadline) {
			// The last call's deadline passed while the connection was
			// idle: a read now would fail on it, not on the connection.
			_ = c.nc.SetDeadline(time.Time{})
			c.deadline = time.Time{}
		}
		usable := true
		if c.unfinished {
			st := c.endArrived(now, wait)
			if st == endLater && na < len(aside) {
				aside[na] = c
				na++
				h.mu.Lock()
				continue
			}
			// Here, or late with no room left to pass it over: finish
			// waits for it.
			usable = st != endFailed && c.finish(wait)
		}
		if !usable || c.peerClosed() {
			_ = c.nc.Close()
			h.mu.Lock()
			continue
		}
		h.restore(aside[:na])
		return c, true, nil
	}
	closed := h.closed
	h.mu.Unlock()
	h.restore(aside[:na])
	if closed {
		return nil, false, errClosed
	}
	nc, err := h.dialer.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, false, err
	}
	nc = nbio.Wrap(nc)
	c := &h1Conn{nc: nc}
	c.br = bufio.NewReaderSize(c, 16<<10)
	c.ww, _ = nc.(writeWaiter)
	c.tr, _ = nc.(tryReader)
	c.abortIO = func() { _ = nc.SetDeadline(time.Unix(1, 0)) }
	c.bw = bufio.NewWriterSize(c, 8<<10)
	return c, false, nil
}

// h1MaxAside bounds the connections one get passes over because their
// last body has not ended yet; past it, get waits for the end (finish).
const h1MaxAside = 4

// endState is what endArrived found of an unfinished connection's body.
type endState int

const (
	endHere   endState = iota // there to read: finish will not wait
	endLater                  // not there yet: pass the connection over
	endFailed                 // EOF, an error, or overdue: close the connection
)

// endArrived looks, without waiting, whether the rest of the last body of
// an unfinished connection has arrived. A server sends it right after the
// response event, but may not have yet when the next request comes; one
// that has not within wait (h1FinishWait) of the event is not waited for.
func (c *h1Conn) endArrived(now time.Time, wait time.Duration) endState {
	const end = "\r\n0\r\n\r\n" // the most the end can be: see endBuffered
	n := c.br.Buffered()
	if c.tr == nil || n >= len(end) || c.body.endBuffered() {
		return endHere // more than the end is there, or all of it
	}
	switch err := c.tryFill(); {
	case err == nil:
		return endHere
	case errors.Is(err, nbio.ErrWouldBlock) && now.Sub(c.used) < wait:
		return endLater
	}
	return endFailed
}

// tryFill reads into br, without waiting, what the connection has now:
// nbio.ErrWouldBlock when it has nothing.
func (c *h1Conn) tryFill() error {
	c.try = true
	_, err := c.br.Peek(c.br.Buffered() + 1)
	c.try = false
	return err
}

// peerClosed reports whether the server has closed an idle connection (or
// sent something unexpected on it): bytes are buffered, or a read that does
// not wait finds EOF or data. Where connections cannot read without
// waiting (not Linux), a connection the server closed shows as a failed
// call.
func (c *h1Conn) peerClosed() bool {
	return c.br.Buffered() > 0 || (c.tr != nil && !errors.Is(c.tryFill(), nbio.ErrWouldBlock))
}

// restore puts back on top of the pool, in their order, the connections
// get passed over; they keep their last-used time.
func (h *h1Client) restore(aside []*h1Conn) {
	if len(aside) == 0 {
		return
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		for _, c := range aside {
			_ = c.nc.Close()
		}
		return
	}
	for i := len(aside) - 1; i >= 0; i-- {
		if len(h.idle) >= h.maxIdle {
			_ = aside[i].nc.Close()
			continue
		}
		h.idle = append(h.idle, aside[i])
	}
	h.mu.Unlock()
}

func (h *h1Client) put(c *h1Conn) {
	c.used = time.Now()
	h.mu.Lock()
	if h.closed || len(h.idle) >= h.maxIdle {
		h.mu.Unlock()
		_ = c.nc.Close()
		return
	}
	// get takes the most recently used: the oldest idle connection is the
	// first to expire; close it here so that a quiet session does not keep
	// connections the server has long closed.
	var stale *h1Conn
	if len(h.idle) > 0 && c.used.Sub(h.idle[0].used) > h1IdleTimeout {
		stale = h.idle[0]
		copy(h.idle, h.idle[1:])
		h.idle[len(h.idle)-1] = nil
		h.idle = h.idle[:len(h.idle)-1]
	}
	h.idle = append(h.idle, c)
	h.mu.Unlock()
	if stale != nil {
		_ = stale.nc.Close()
	}
}

// close closes the idle connections; connections in use are closed when
// their request ends.
func (h *h1Client) close() {
	h.mu.Lock()
	idle := h.idle
	h.idle = nil
	h.closed = true
	h.mu.Unlock()
	for _, c := range idle {
		_ = c.nc.Close()
	}
}

// h1FinishWait bounds waiting for the end of a body left unfinished: it
// was sent right after what the last caller read, so it is there by then
// unless the server misbehaves.
const h1FinishWait = 100 * time.Millisecond

// finish reads the rest of the last response's body before the connection
// is used again; false when it did not end cleanly. When it has to wait
// for more than is buffered, it leaves its read deadline in place
// (c.deadline): the request that takes the connection next replaces it in
// arm at once.
func (c *h1Conn) finish(wait time.Duration) bool {
	c.unfinished = false
	if c.body.endBuffered() {
		return c.br.Buffered() == 0
	}
	c.deadline = time.Now().Add(wait)
	_ = c.nc.SetReadDeadline(c.deadline)
	return c.body.finish(64<<10) && c.br.Buffered() == 0
}

// h1Response is the head of a response; body reads the rest on the conn.
type h1Response struct {
	status      int
	statusText  string // e.g. "404 Not Found"
	contentType string
	sessionID   string
	body        *h1Body
}

// h1Call is one request in flight: release must be called once the body is
// no longer needed.
type h1Call struct {
	h    *h1Client
	c    *h1Conn
	ctx  context.Context
	stop func() bool
}

// errBeforeResponse marks a failure before a response head was read: the
// connection to the server is in question.
type errBeforeResponse struct{ err error }

func (e *errBeforeResponse) Error() string { return e.err.Error() }
func (e *errBeforeResponse) Unwrap() error { return e.err }

// do sends one POST with the given extra headers (each "Key: value\r\n")
// and reads the response head. On success the caller reads resp.body and
// then calls call.release.
func (h *h1Client) do(ctx context.Context, extra []byte, body []byte) (*h1Call, *h1Response, error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		c, reused, err := h.get(ctx)
		if err != nil {
			return nil, nil, &errBeforeResponse{err}
		}
		call := &h1Call{h: h, c: c, ctx: ctx}
		call.arm()
		resp, err := call.roundTrip(extra, body)
		if err == nil {
			return call, resp, nil
		}
		wrote := c.wrote
		call.abort()
		// A POST is not idempotent: only a request of which no byte was
		// written may go again, once, on a fresh connection.
		if reused && !wrote && attempt == 0 && ctx.Err() == nil {
			continue
		}
		return nil, nil, call.ctxErr(&errBeforeResponse{err})
	}
}

// onCanceler is a context that runs a func when cancelled without
// watching its deadline (callctx.Ctx): arm puts the deadline on the
// connection.
type onCanceler interface {
	OnCancel(f func()) (stop func() bool)
}

// arm bounds the connection's I/O by the context: its deadline, and on
// cancel a deadline in the past that aborts a blocked read or write.
func (call *h1Call) arm() {
	c := call.c
	if dl, ok := call.ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
		c.deadline = dl
	} else if !c.deadline.IsZero() {
		_ = c.nc.SetDeadline(time.Time{})
		c.deadline = time.Time{}
	}
	if oc, ok := call.ctx.(onCanceler); ok {
		// No Done channel, no timer: the deadline is on the connection.
		call.stop = oc.OnCancel(c.abortIO)
	} else if call.ctx.Done() != nil {
		call.stop = context.AfterFunc(call.ctx, c.abortIO)
	}
}

// disarm reports whether the connection is still usable as far as the
// context is concerned.
func (call *h1Call) disarm() bool {
	if call.stop != nil && !call.stop() {
		return false // the cancel func ran: the connection's deadline is poisoned
	}
	return true
}

// ctxErr turns an I/O timeout caused by the context into the context's error.
func (call *h1Call) ctxErr(err error) error {
	if err := call.ctx.Err(); err != nil {
		return err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if dl, ok := call.ctx.Deadline(); ok && !time.Now().Before(dl) {
			<-call.ctx.Done() // the deadline has passed: its timer fires momentarily
			return call.ctx.Err()
		}
	}
	return err
}

// abort closes the connection of a failed request.
func (call *h1Call) abort() {
	call.disarm()
	_ = call.c.nc.Close()
}

// release ends the request: the connection goes back to the pool when the
// body was read to its end and the context did not interfere.
func (call *h1Call) release() {
	c := call.c
	ok := call.disarm()
	if ok && c.body.reusable() {
		call.h.put(c)
		return
	}
	_ = c.nc.Close()
}

// releaseUnfinished is release for a caller done with a chunked body it did
// not read to the end: rather than wait here for the end (the server sends
// its last chunk after the response event, so waiting costs a blocking read
// on every call), the next request on the connection reads it first.
func (call *h1Call) releaseUnfinished() {
	c := call.c
	b := &c.body
	if b.done || !b.chunked || b.err != nil || !b.keepAlive {
		b.finish(64 << 10)
		call.release()
		return
	}
	if b.endBuffered() {
		call.release()
		return
	}
	if !call.disarm() {
		_ = c.nc.Close()
		return
	}
	c.unfinished = true
	call.h.put(c)
}

func (call *h1Call) roundTrip(extra, body []byte) (*h1Response, error) {
	c := call.c
	c.wrote = false
	bw := c.bw
	_, _ = bw.Write(call.h.reqLine)
	_, _ = bw.Write(extra)
	_, _ = bw.WriteString("Content-Length: ")
	// Formatted in the writer's own buffer: a local array would escape.
	_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(body)), 10))
	_, _ = bw.WriteString("\r\n\r\n")
	_, _ = bw.Write(body)
	// A request that fits the writer's buffer goes in this one write, and
	// the server answers only after it: wait for the answer without a
	// read first. A larger request was partly written already, and a
	// server may answer one early (413) while the rest is on its way.
	c.waitNext = !c.wrote && c.br.Buffered() == 0
	err := bw.Flush()
	c.waitNext = false
	if err != nil {
		bw.Reset(c)
		return nil, fmt.Errorf("write request: %w", err)
	}
	return readResponseHead(c)
}

// readResponseHead reads the status line and headers and prepares c.body.
func readResponseHead(c *h1Conn) (*h1Response, error) {
	for {
		line, err := readLine(c.br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read response: %w", err)
		}
		proto, rest, ok := bytes.Cut(line, []byte{' '})
		if !ok || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(rest) < 3 {
			return nil, fmt.Errorf("malformed HTTP response %q", clipBytes(line, 64))
		}
		code, err := strconv.Atoi(string(rest[:3]))
		if err != nil || code < 100 || code > 999 {
			return nil, fmt.Errorf("malformed HTTP status %q", clipBytes(line, 64))
		}
		resp := &h1Response{status: code, statusText: internOr(rest, "200 OK", "202 Accepted")}
		keepAlive := string(proto) == "HTTP/1.1"
		length := int64(-1)
		chunked := false
		total := 0
		for {
			line, err := readLine(c.br)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("read response headers: %w", err)
			}
			if len(line) == 0 {
				break
			}
			if total += len(line); total > 1<<20 {
				return nil, errors.New("response headers larger than 1 MiB")
			}
			if line[0] == ' ' || line[0] == '\t' {
				return nil, errors.New("malformed HTTP response: folded header line")
			}
			k, v, ok := bytes.Cut(line, []byte{':'})
			if !ok {
				return nil, fmt.Errorf("malformed HTTP header line %q", clipBytes(line, 64))
			}
			v = bytes.TrimSpace(v)
			// The length first: most lines are none of these, and
			// bytes.EqualFold is not inlined.
			switch {
			case len(k) == len("Content-Length") && bytes.EqualFold(k, []byte("Content-Length")):
				n, err := strconv.ParseInt(string(v), 10, 64)
				if err != nil || n < 0 || (length >= 0 && n != length) {
					return nil, fmt.Errorf("malformed Content-Length %q", clipBytes(v, 64))
				}
				length = n
			case len(k) == len("Transfer-Encoding") && bytes.EqualFold(k, []byte("Transfer-Encoding")):
				if !bytes.EqualFold(v, []byte("chunked")) {
					return nil, fmt.Errorf("unsupported Transfer-Encoding %q", clipBytes(v, 64))
				}
				chunked = true
			case len(k) == len("Content-Type") && bytes.EqualFold(k, []byte("Content-Type")):
				resp.contentType = internOr(v, "text/event-stream", "application/json")
			case len(k) == len("Mcp-Session-Id") && bytes.EqualFold(k, []byte("Mcp-Session-Id")):
				if string(v) != c.lastSessionID { // the same on every response of a session
					c.lastSessionID = string(v)
				}
				resp.sessionID = c.lastSessionID
			case len(k) == len("Connection") && bytes.EqualFold(k, []byte("Connection")):
				for tok := range bytes.SplitSeq(v, []byte{','}) {
					tok = bytes.TrimSpace(tok)
					if bytes.EqualFold(tok, []byte("close")) {
						keepAlive = false
					} else if bytes.EqualFold(tok, []byte("keep-alive")) && string(proto) != "HTTP/1.1" {
						keepAlive = true
					}
				}
			}
		}
		if code >= 100 && code < 200 {
			if code == http.StatusSwitchingProtocols {
				return nil, errors.New("the server switched protocols")
			}
			continue // an interim response: the real one follows
		}
		b := &c.body
		*b = h1Body{br: c.br, keepAlive: keepAlive}
		switch {
		case code == http.StatusNoContent || code == http.StatusNotModified:
			b.done = true
		case chunked:
			b.chunked = true
		case length >= 0:
			b.n = length
			b.done = length == 0
		default:
			b.n = -1 // until the server closes the connection
			b.keepAlive = false
		}
		resp.body = b
		return resp, nil
	}
}

func clipBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// h1Body reads a response body: Content-Length, chunked, or until close.
type h1Body struct {
	br        *bufio.Reader
	chunked   bool
	n         int64 // bytes left in the body (or the current chunk); -1: until close
	crlf      bool  // a chunk's data ended; its CRLF is still to be read
	done      bool  // read to the end
	keepAlive bool
	err       error
}

// length is the declared length of the rest of the body, or -1.
func (b *h1Body) length() int64 {
	if b.done {
		return 0
	}
	if b.chunked {
		return -1
	}
	return b.n
}

// endBuffered ends a chunked body at a chunk boundary when what is left of
// it, the last chunk and an empty trailer, is all that is buffered, as it
// is after about 3 in 4 calls here: then the connection goes back to the
// pool done, and its next request does not read it, or set a read
// deadline, first. False, with nothing consumed, when anything else is
// buffered (finish reads it).
func (b *h1Body) endBuffered() bool {
	if b.done || !b.chunked || b.n != 0 || b.err != nil {
		return b.done
	}
	const end = "\r\n0\r\n\r\n" // the CRLF that ends a chunk's data, then the last chunk
	want := end[2:]
	if b.crlf {
		want = end
	}
	if b.br.Buffered() != len(want) {
		return false
	}
	if p, _ := b.br.Peek(len(want)); string(p) != want {
		return false
	}
	_, _ = b.br.Discard(len(want))
	b.crlf = false
	b.done = true
	return true
}

func (b *h1Body) reusable() bool { return b.done && b.keepAlive && b.err == nil }

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.chunked && b.n == 0 {
		if err := b.nextChunk(); err != nil {
			b.err = err
			return 0, err
		}
		if b.done {
			return 0, io.EOF
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if b.n >= 0 && int64(len(p)) > b.n {
		p = p[:b.n]
	}
	return b.advance(b.br.Read(p))
}

// advance accounts for n bytes of the body taken from br, and for the error
// that came with them; it returns what Read does.
func (b *h1Body) advance(n int, err error) (int, error) {
	if b.n >= 0 {
		b.n -= int64(n)
		if b.n == 0 && !b.chunked {
			b.done = true
		}
		if b.n == 0 && b.chunked {
			b.crlf = true
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) && b.n < 0 {
			b.done = true
			return n, io.EOF
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
	}
	if n > 0 {
		return n, nil
	}
	return n, err
}

// nextChunk reads the next chunk's size line (and the trailer after the
// last chunk).
func (b *h1Body) nextChunk() error {
	if b.crlf {
		line, err := readLine(b.br)
		if err != nil {
			return chunkErr(err)
		}
		if len(line) != 0 {
			return errors.New("malformed chunked encoding: data after a chunk")
		}
		b.crlf = false
	}
	line, err := readLine(b.br)
	if err != nil {
		return chunkErr(err)
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 15 {
		return fmt.Errorf("malformed chunk size %q", clipBytes(line, 32))
	}
	n, err := strconv.ParseInt(string(line), 16, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("malformed chunk size %q", clipBytes(line, 32))
	}
	if n > 0 {
		b.n = n
		return nil
	}
	for { // trailer
		line, err := readLine(b.br)
		if err != nil {
			return chunkErr(err)
		}
		if len(line) == 0 {
			b.done = true
			return nil
		}
	}
}

func chunkErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// finish reads what is left of the body (at most limit bytes) so that the
// connection can be reused; false when the body did not end cleanly. It
// discards from the buffer rather than copying out of it.
func (b *h1Body) finish(limit int64) bool {
	for n := int64(0); n < limit && !b.done && b.err == nil; {
		if b.chunked && b.n == 0 {
			if err := b.nextChunk(); err != nil {
				b.err = err
			}
			continue
		}
		step := limit - n
		if b.n >= 0 && b.n < step {
			step = b.n
		}
		m, err := b.advance(b.br.Discard(int(min(step, 64<<10))))
		n += int64(m)
		if m == 0 && err == nil {
			break
		}
	}
	if b.chunked && b.n == 0 && !b.done && b.err == nil {
		// Reach the end of an exhausted chunked body.
		if err := b.nextChunk(); err != nil {
			b.err = err
		}
	}
	return b.reusable()
}
