package httpserver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxScratch bounds the write buffer a connection keeps between responses:
// one large response must not pin its size on every idle connection.
const maxScratch = 8 << 10

// keepScratch keeps b's array for the next response, unless it grew large.
func (c *conn) keepScratch(b []byte) {
	if cap(b) > maxScratch {
		c.wbuf = nil
		return
	}
	c.wbuf = b[:0]
}

// flushThreshold is how much body a response buffers before it is sent:
// below it, a response the handler never flushes goes out with its head in
// one write and a Content-Length; above it, it is streamed in chunks.
const flushThreshold = 64 << 10

// errHandlerDone is returned by writes after the handler returned.
var errHandlerDone = errors.New("httpserver: write after the handler returned")

// response is the http.ResponseWriter of the lean loop. It implements
// http.Flusher, and the methods http.ResponseController looks for.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // the status is fixed
	headSent    bool // the head went out: the body is being streamed
	chunked     bool
	handlerDone bool
	detached    bool // Detach completed the response while the handler ran
	closeAfter  bool
	buf         []byte // body not sent yet
	err         error  // the first write error
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
)

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.handlerDone || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out at once; the final one follows.
		w.sendInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *response) Write(p []byte) (int, error) {
	if w.handlerDone {
		return 0, errHandlerDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= flushThreshold {
		if err := w.FlushError(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush sends what was written so far (http.Flusher).
func (w *response) Flush() { _ = w.FlushError() }

// FlushError sends what was written so far: the head first, with chunked
// transfer coding for the body to follow.
func (w *response) FlushError() error {
	if w.handlerDone {
		return errHandlerDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	b := w.c.wbuf[:0]
	if !w.headSent {
		w.chunked = bodyAllowed(w.status)
		b = w.appendHead(b, -1)
		w.headSent = true
	}
	if w.chunked && len(w.buf) > 0 {
		b = appendChunk(b, w.buf)
	}
	w.buf = w.buf[:0]
	err := w.send(b)
	w.c.keepScratch(b)
	return err
}

// SetWriteDeadline sets the connection's write deadline (http.ResponseController).
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.nc.SetWriteDeadline(t) }

// SetReadDeadline sets the connection's read deadline (http.ResponseController).
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.idleUntil = time.Time{}
	return w.c.nc.SetReadDeadline(t)
}

// finish completes the response after the handler returned.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	defer func() { w.handlerDone = true }()
	if w.err != nil {
		return
	}
	b := w.c.wbuf[:0]
	switch {
	case !w.headSent:
		n := len(w.buf)
		if !bodyAllowed(w.status) {
			n = -1
		}
		b = w.appendHead(b, n)
		b = append(b, w.buf...)
	case w.chunked:
		if len(w.buf) > 0 {
			b = appendChunk(b, w.buf)
		}
		b = append(b, "0\r\n\r\n"...)
	}
	_ = w.send(b)
	w.c.keepScratch(b)
}

// send writes b to the connection; a failure ends the request and the connection.
func (w *response) send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := w.c.nc.Write(b); err != nil {
		w.err = fmt.Errorf("write the response: %w", err)
		w.closeAfter = true
		w.c.mu.Lock()
		if w.c.cancelReq != nil {
			w.c.cancelReq.Cancel()
		}
		w.c.mu.Unlock()
		return w.err
	}
	return nil
}

// appendHead appends the status line and headers. contentLength is the
// body's length, or -1 for a streamed or absent body.
func (w *response) appendHead(b []byte, contentLength int) []byte {
	h := w.header
	if v := h["Connection"]; len(v) > 0 && strings.EqualFold(v[0], "close") {
		w.closeAfter = true
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(w.status)...)
	b = append(b, "\r\n"...)
	for k, vs := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue // the server's to set
		}
		if !validToken(k) {
			continue
		}
		for _, v := range vs {
			b = appendHeader(b, k, v)
		}
	}
	if _, ok := h["Date"]; !ok {
		b = append(b, "Date: "...)
		b = append(b, httpDate()...)
		b = append(b, "\r\n"...)
	}
	if _, ok := h["Content-Type"]; !ok && bodyAllowed(w.status) && len(w.buf) > 0 {
		b = appendHeader(b, "Content-Type", http.DetectContentType(w.buf))
	}
	switch {
	case contentLength >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(contentLength), 10)
		b = append(b, "\r\n"...)
	case w.chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.closeAfter || w.c.s.shutdown.Load() {
		w.closeAfter = true
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// sendInformational writes a 1xx head with the headers set so far.
func (w *response) sendInformational(code int) {
	if w.err != nil {
		return
	}
	b := w.c.wbuf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	for k, vs := range w.header {
		for _, v := range vs {
			b = appendHeader(b, k, v)
		}
	}
	b = append(b, "\r\n"...)
	_ = w.send(b)
	w.c.keepScratch(b)
}

// appendHeader appends "k: v" with CR and LF in v turned into spaces, so a
// value cannot start a header or body of its own.
func appendHeader(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	for i := range len(v) {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, "\r\n"...)
}

func appendChunk(b, data []byte) []byte {
	b = strconv.AppendInt(b, int64(len(data)), 16)
	b = append(b, "\r\n"...)
	b = append(b, data...)
	return append(b, "\r\n"...)
}

// bodyAllowed reports whether a response with status may carry a body.
func bodyAllowed(status int) bool {
	informational := status >= 100 && status <= 199
	return !informational && status != http.StatusNoContent && status != http.StatusNotModified
}

// dateCache holds the Date header value of the current second.
type dateCache struct {
	unix int64
	text string
}

var lastDate atomic.Pointer[dateCache]

// httpDate returns the current time in the format of the Date header,
// formatted once a second.
func httpDate() string {
	now := time.Now()
	if d := lastDate.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &dateCache{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	lastDate.Store(d)
	return d.text
}
