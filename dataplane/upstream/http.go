package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// errSessionExpired is a refusal of a Streamable HTTP session: the upstream
// forgot it (restart, expiry). The specification says 404; some servers
// (the TypeScript SDK's examples, server-everything among them) answer 400
// "No valid session ID" instead, which refusedSession recognises. The session
// is dead; the pool opens a new one, and the request, which the upstream never
// ran, may be sent again on it.
var errSessionExpired = errors.New("the server no longer knows the session (it restarted, or the session expired); reconnecting on next use")

// refusedSession reports whether an answer to a request that carried a
// session id refuses the session itself: 404, or 400 whose body talks of the
// session (e.g. "Bad Request: No valid session ID provided"). A 400 about
// anything else is the request's own error.
func refusedSession(status int, body []byte) bool {
	switch status {
	case http.StatusNotFound:
		return true
	case http.StatusBadRequest:
		return bytes.Contains(bytes.ToLower(body), []byte("session"))
	}
	return false
}

// DefaultMaxResponseBytes bounds one message from an upstream (an HTTP
// response body, an SSE event, a line of a stdio server) when
// PoolOptions.MaxResponseBytes is 0.
const DefaultMaxResponseBytes = 64 << 20

// ResponseTooLargeError is what reading an upstream message larger than
// the pool's MaxResponseBytes fails with.
type ResponseTooLargeError struct{ Limit int64 }

func (e *ResponseTooLargeError) Error() string {
	return fmt.Sprintf("a message larger than the %d bytes the data plane accepts from an upstream (--upstream-max-response)", e.Limit)
}

// HTTPOptions tune the one net/http Transport that carries every request to
// Streamable HTTP and SSE upstreams (each server has its own, so that a
// changed definition drops its idle connections alone). Zero values take the
// defaults below.
type HTTPOptions struct {
	// MaxIdleConnsPerHost bounds the keep-alive connections kept idle per
	// upstream host (DefaultMaxIdleConnsPerHost).
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes a keep-alive connection idle for this long
	// (DefaultIdleConnTimeout). An upstream that closes one sooner is
	// noticed by the Transport, which then dials a new one.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response's head once the
	// request is written; 0 (the default) leaves that to each request's
	// own timeout (the server's call, list or initialize timeout), because
	// an upstream answering with JSON sends its head only when the tool
	// has finished.
	ResponseHeaderTimeout time.Duration
	// TLSClientConfig, when set, replaces the default TLS configuration
	// (the system's roots), e.g. to trust a private CA.
	TLSClientConfig *tls.Config
}

// Defaults of HTTPOptions.
const (
	DefaultMaxIdleConnsPerHost = 256
	DefaultIdleConnTimeout     = 30 * time.Second
)

// newHTTPClient returns the client shared by the sessions of one server:
// keep-alive connections, HTTP/2 to https upstreams that offer it, proxies
// from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), no overall
// timeout (streams are long; each request is bounded by its context), and
// no redirects: an upstream's 3xx is its answer (following it would send
// the call again). The same on every OS: nothing here depends on one.
//
// net/http sends a request again on a kept-alive connection only when it
// may: see newRequest for how a POST is kept from being one of them.
func newHTTPClient(o HTTPOptions) *http.Client {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = DefaultIdleConnTimeout
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0, // no bound across hosts: one server's Transport holds one or two
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		IdleConnTimeout:       o.IdleConnTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if o.TLSClientConfig != nil {
		tr.TLSClientConfig = o.TLSClientConfig.Clone()
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// httpHeaders builds the configured headers (and bearer token) of a server.
func httpHeaders(t *metamcpv1.HTTPTransport) http.Header {
	h := make(http.Header, len(t.GetHeaders())+1)
	for k, v := range t.GetHeaders() {
		h.Set(k, v.GetValue())
	}
	if tok := t.GetBearerToken().GetValue(); tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	return h
}

var (
	hdrAcceptBoth = []string{"application/json, text/event-stream"}
	hdrAcceptSSE  = []string{"text/event-stream"}
	hdrJSON       = []string{"application/json"}
)

// httpTransport speaks Streamable HTTP (2025-03-26 and later): every message
// is a POST; a response comes back as JSON or as an SSE stream on that POST.
type httpTransport struct {
	url string
	// tmpl is a request to url, parsed once: each request is a copy of it
	// (nil when url does not parse).
	tmpl    *http.Request
	client  *http.Client
	headers http.Header
	// maxResponse bounds one message from the server.
	maxResponse int64
	// onMsg handles what the server sends that is not a response: with
	// the Caller of the call on whose response stream it came, or nil
	// (the standalone GET stream).
	onMsg func(Caller, *rpc.Message)
	// listening is set while the standalone event stream is open: the
	// server can announce list changes then (see hearing).
	listening atomic.Bool
	// gap, when set, is called when the event stream ends: what the server
	// sent until it is open again is lost.
	gap func()

	mu        sync.Mutex
	sessionID []string // Mcp-Session-Id, once the server assigned one
	version   []string // MCP-Protocol-Version, after initialize
	// keep leaves the upstream session alive at close (no DELETE): other
	// data planes may use it (see adopt.go).
	keep bool

	log *slog.Logger
	// life ends at close or failure; it bounds the standalone GET stream.
	life     context.Context
	stopLife context.CancelFunc
	listener sync.WaitGroup

	once  sync.Once
	cause error
	fin   chan struct{}
}

func newHTTPTransport(cfg *metamcpv1.Server, client *http.Client, maxResponse int64, log *slog.Logger, onMsg func(Caller, *rpc.Message)) *httpTransport {
	life, stop := context.WithCancel(context.Background())
	headers := httpHeaders(cfg.GetStreamableHttp())
	t := &httpTransport{
		url: cfg.GetStreamableHttp().GetUrl(), client: client, maxResponse: maxResponse,
		headers: headers, onMsg: onMsg, log: log,
		life: life, stopLife: stop, fin: make(chan struct{}),
	}
	// A URL that does not parse leaves tmpl nil: newRequest reports it.
	t.tmpl, _ = http.NewRequest(http.MethodPost, t.url, nil)
	return t
}

// listen keeps the standalone GET stream open, on which the server sends
// what is not an answer to a request (list_changed, resources/updated, and
// requests of its own). A server without one (405) is fine.
func (t *httpTransport) listen() {
	t.listener.Add(1)
	go func() {
		defer t.listener.Done()
		backoff := 500 * time.Millisecond
		for t.life.Err() == nil {
			start := time.Now()
			ok, err := t.listenOnce()
			if !ok {
				t.log.Debug("the server offers no standalone event stream", "err", err)
				return
			}
			if time.Since(start) > 10*time.Second {
				backoff = 500 * time.Millisecond
			}
			timer := time.NewTimer(backoff)
			select {
			case <-t.life.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
}

// listenOnce reads the GET stream until it ends; false when the server has
// none or the session is gone.
func (t *httpTransport) listenOnce() (bool, error) {
	req, err := t.newRequest(t.life, http.MethodGet, nil)
	if err != nil {
		return false, err
	}
	req.Header["Accept"] = hdrAcceptSSE
	resp, err := t.client.Do(req)
	if err != nil {
		return t.life.Err() == nil, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		t.mu.Lock()
		had := t.sessionID != nil
		t.mu.Unlock()
		if had && refusedSession(resp.StatusCode, b) {
			t.fail(errSessionExpired)
			return false, errSessionExpired
		}
		return false, statusErr(resp.Status, resp.Header.Get("Content-Type"), bytes.NewReader(b))
	}
	t.listening.Store(true)
	err = readEvents(resp.Body, t.maxResponse, func(ev *sseEvent) bool {
		if ev.event != "" && ev.event != "message" {
			return true
		}
		msg, err := rpc.Parse(ev.data)
		if err != nil || msg.IsResponse() {
			return true
		}
		t.onMsg(nil, msg)
		return true
	})
	t.listening.Store(false)
	if t.gap != nil {
		t.gap()
	}
	return true, err
}

// hearing reports whether the server can send notifications outside calls
// now: its standalone event stream is open.
func (t *httpTransport) hearing() bool { return t.listening.Load() }

func (t *httpTransport) processes() int        { return 0 }
func (t *httpTransport) done() <-chan struct{} { return t.fin }

func (t *httpTransport) err() error {
	select {
	case <-t.fin:
		return t.cause
	default:
		return nil
	}
}

func (t *httpTransport) fail(cause error) {
	t.once.Do(func() {
		t.cause = cause
		t.stopLife()
		close(t.fin)
	})
}

func (t *httpTransport) negotiated(v string) {
	t.mu.Lock()
	t.version = []string{v}
	t.mu.Unlock()
}

// errBadURL: the server's URL does not parse (not quoted: it may hold a
// credential).
var errBadURL = errors.New("the server's URL does not parse")

// newRequest builds a request to the server. A POST is never sent twice:
// net/http sends a request again on another connection when the one it
// used turns out to be closed
// (Transport.roundTrip and persistConn.shouldRetryRequest; for HTTP/2,
// http2shouldRetryRequest), taking a fresh body from Request.GetBody: over
// HTTP/1.1 when nothing was written, or for any such failure when the
// request counts as replayable, which an Idempotency-Key header makes a POST
// with a GetBody; over HTTP/2 on GOAWAY, REFUSED_STREAM or a PROTOCOL_ERROR
// reset by the server, the last after the server may have run the request.
// A tools/call must run at most once, and a request's body is in net/http's
// buffer before any of it reaches the connection, so "nothing of it was
// read" is the only sure sign that it did not reach the upstream: a POST
// has no GetBody, which leaves net/http one retry, on an HTTP/2 connection
// that could take no new stream before the body was touched.
func (t *httpTransport) newRequest(ctx context.Context, method string, body []byte) (*http.Request, error) {
	if t.tmpl == nil {
		return nil, errBadURL
	}
	// A copy of the template with its own context, method and headers;
	// the URL is shared, which net/http only reads.
	req := t.tmpl.WithContext(ctx)
	req.Method = method
	req.Header = make(http.Header, len(t.headers)+6)
	if body != nil {
		// net/http may read the body after RoundTrip returns, and callers
		// reuse their buffers: the request gets its own copy. A
		// *bytes.Reader lets net/http write the head and the body in one
		// write. GetBody stays nil (see above).
		req.Body = io.NopCloser(bytes.NewReader(bytes.Clone(body)))
		req.ContentLength = int64(len(body))
	}
	for k, v := range t.headers {
		req.Header[k] = v
	}
	if body != nil {
		req.Header["Content-Type"] = hdrJSON
		req.Header["Accept"] = hdrAcceptBoth
	}
	t.mu.Lock()
	if t.sessionID != nil {
		req.Header["Mcp-Session-Id"] = t.sessionID
	}
	if t.version != nil {
		req.Header["Mcp-Protocol-Version"] = t.version
	}
	t.mu.Unlock()
	for k, v := range wireHeadersFrom(ctx) {
		req.Header[k] = v
	}
	if tr := TraceFrom(ctx); tr != nil {
		tr.set(req.Header)
	}
	return req, nil
}

// post sends one message. The caller closes the response body.
func (t *httpTransport) post(ctx context.Context, body []byte) (*http.Response, error) {
	select {
	case <-t.fin:
		return nil, t.cause
	default:
	}
	req, err := t.newRequest(ctx, http.MethodPost, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	// Straight to the Transport: http.Client would only add its redirect
	// loop, and an upstream's redirect is its answer.
	resp, err := t.client.Transport.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// The server is unreachable: this session is as good as dead.
		err = fmt.Errorf("POST %s: %w", redact(t.url), cleanURLError(err))
		t.fail(err)
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		drain(resp)
		t.mu.Lock()
		had := t.sessionID != nil
		t.mu.Unlock()
		if had && refusedSession(resp.StatusCode, b) {
			t.fail(errSessionExpired)
			return nil, errSessionExpired
		}
		return nil, statusErr(resp.Status, resp.Header.Get("Content-Type"), bytes.NewReader(b))
	}
	if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
		t.mu.Lock()
		if t.sessionID == nil {
			t.sessionID = []string{id}
		}
		t.mu.Unlock()
	}
	return resp, nil
}

func (t *httpTransport) send(ctx context.Context, body []byte) error {
	resp, err := t.post(ctx, body) //nolint:bodyclose // finish closes it
	if err != nil {
		return err
	}
	finish(resp)
	return nil
}

func (t *httpTransport) roundTrip(ctx context.Context, id int64, body []byte) (*rpc.Message, error) {
	resp, err := t.post(ctx, body) //nolint:bodyclose // finish closes it
	if err != nil {
		return nil, err
	}
	msg, err := t.readResponse(ctx, id, resp.Header.Get("Content-Type"), resp.Body, resp.ContentLength)
	finish(resp)
	return msg, err
}

// finishWait bounds the wait for the end of a response body once what the
// caller wanted is read: a server sends the end of an event stream right
// after the response event, so it is there by then unless the server holds
// its stream open, and then the connection is given up rather than the
// caller kept waiting.
const finishWait = 100 * time.Millisecond

// finish reads the rest of a response's body (up to 64 KiB, within
// finishWait) and closes it, so that its connection can carry the next
// request; a body that does not end in time closes its connection.
func finish(resp *http.Response) {
	if resp.ContentLength >= 0 && mediaType(resp.Header.Get("Content-Type")) != "text/event-stream" {
		// Its length is known: what is left is there or on the way.
		drain(resp)
		return
	}
	timer := time.AfterFunc(finishWait, func() { _ = resp.Body.Close() })
	drain(resp)
	timer.Stop()
}

// readResponse reads the response to request id from a JSON or SSE body.
func (t *httpTransport) readResponse(ctx context.Context, id int64, contentType string, body io.Reader, length int64) (*rpc.Message, error) {
	switch mediaType(contentType) {
	case "application/json":
		b, err := readAll(body, length, t.maxResponse)
		if err != nil {
			return nil, fmt.Errorf("read response: %w", err)
		}
		msg, err := rpc.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("the server answered with %w", err)
		}
		if got, ok := parseID(msg.ID); !ok || got != id || !msg.IsResponse() {
			return nil, fmt.Errorf("the server answered request %d with message id %s", id, msg.ID)
		}
		return msg, nil
	case "text/event-stream":
		var found *rpc.Message
		err := readEvents(body, t.maxResponse, func(ev *sseEvent) bool {
			if ev.event != "" && ev.event != "message" {
				return true
			}
			msg, err := rpc.Parse(ev.data)
			if err != nil {
				return true
			}
			if msg.IsResponse() {
				if got, ok := parseID(msg.ID); ok && got == id {
					found = msg
					return false
				}
				return true
			}
			// Sent on this call's response stream: related to the call.
			t.onMsg(CallerFrom(ctx), msg)
			return true
		})
		if found != nil {
			return found, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil {
			err = errors.New("the stream ended without a response")
		}
		return nil, fmt.Errorf("read event stream: %w", err)
	default:
		return nil, fmt.Errorf("the server answered with Content-Type %q (want application/json or text/event-stream)", contentType)
	}
}

// close ends the session at the server (DELETE, best effort).
func (t *httpTransport) close() {
	t.mu.Lock()
	sid, keep := t.sessionID, t.keep
	t.mu.Unlock()
	if sid != nil && !keep && t.err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if req, err := t.newRequest(ctx, http.MethodDelete, nil); err == nil {
			if resp, err := t.client.Do(req); err == nil {
				drain(resp)
			}
		}
		cancel()
	}
	t.fail(errClosed)
	t.listener.Wait()
}

func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	_ = resp.Body.Close()
}

// statusError describes a non-2xx answer. A JSON-RPC error in the body (some
// servers answer a bad request with HTTP 400 and one) is returned as it is.
func statusError(resp *http.Response) error {
	return statusErr(resp.Status, resp.Header.Get("Content-Type"), resp.Body)
}

func statusErr(status, contentType string, body io.Reader) error {
	b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	if mediaType(contentType) == "application/json" {
		if m, err := rpc.Parse(b); err == nil && m.Error != nil {
			return m.Error
		}
	}
	if len(b) > 512 {
		b = b[:512]
	}
	msg := strings.TrimSpace(string(b))
	if msg != "" {
		return fmt.Errorf("HTTP %s: %s", status, msg)
	}
	return fmt.Errorf("HTTP %s", status)
}

func cleanURLError(err error) error {
	var uerr interface{ Unwrap() error }
	if errors.As(err, &uerr) {
		if inner := uerr.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// readAll reads a body whose length may be known, bounded by limit.
func readAll(r io.Reader, n, limit int64) ([]byte, error) {
	if n > limit {
		return nil, &ResponseTooLargeError{limit}
	}
	if n >= 0 {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(b)) > limit {
		return nil, &ResponseTooLargeError{limit}
	}
	return b, err
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// sseEvent is one server-sent event.
type sseEvent struct {
	event string
	id    string
	data  []byte
}

// readEvents parses a text/event-stream and calls fn for each event until fn
// returns false or the stream ends (nil at a clean end).
func readEvents(r io.Reader, limit int64, fn func(*sseEvent) bool) error {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	var ev sseEvent
	var data []byte
	hasData := false
	for {
		line, err := readLine(br, limit)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(line) == 0 {
			if hasData {
				ev.data = data
				if !fn(&ev) {
					return nil
				}
			}
			ev = sseEvent{}
			data, hasData = nil, false
			continue
		}
		if line[0] == ':' {
			continue // comment / keep-alive
		}
		name, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(name) {
		case "event":
			ev.event = internOr(value, "message", "endpoint") // the names MCP servers send
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
			if int64(len(data)) > limit {
				return &ResponseTooLargeError{limit}
			}
		case "id":
			ev.id = string(value)
		}
	}
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

// readLine returns one line without its line ending (LF or CRLF); the bytes
// are valid until the next call.
func readLine(br *bufio.Reader, limit int64) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
			if int64(len(long)) > limit {
				return nil, &ResponseTooLargeError{limit}
			}
		}
		line = long
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			return trimEOL(line), nil
		}
		return nil, err
	}
	return trimEOL(line), nil
}

// trimEOL is bytes.TrimRight(line, "\r\n") without building a byte set on
// every call: readLine runs for each line of every response head, chunk and
// event stream.
func trimEOL(line []byte) []byte {
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	return line
}

// mediaType is the media type of a Content-Type value, lower case, without
// parameters; the two every MCP server sends are matched without parsing.
func mediaType(contentType string) string {
	switch contentType {
	case "text/event-stream", "application/json":
		return contentType
	}
	ct, _, _ := mime.ParseMediaType(contentType)
	return ct
}
