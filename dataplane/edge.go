package dataplane

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/metamcp/metamcp/dataplane/gateway"
)

// The client port's HTTP server is Go's net/http, with the settings below.
// Defaults for zero HTTPOptions fields:
const (
	// DefaultReadHeaderTimeout bounds reading a request head. A connection
	// that sends nothing is closed after it too, which is what frees the
	// file descriptors of idle connections opened and never used.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds reading one request's body, counted from
	// the end of its head: a 4 MiB body at 1 Mbit/s takes about 34 s.
	DefaultBodyTimeout = time.Minute
	// DefaultIdleTimeout closes a keep-alive connection with no request for
	// this long; longer than load balancers' own (60-75 s), so that they,
	// not the data plane, end the connections they keep.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultWriteTimeout bounds writing an answer that is not a stream
	// (an event stream has no deadline: it lasts as long as it lasts).
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxHeaderBytes bounds a request head: MCP clients send a few
	// hundred bytes, a JWT a few KiB.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConns bounds the client connections open at once; further
	// ones wait in the listen backlog until one closes.
	DefaultMaxConns = 10000
	// DefaultBodyBudget bounds the request bodies held in memory at once,
	// across all requests: 64 bodies of the gateway's 4 MiB limit.
	DefaultBodyBudget = 256 << 20
	// DefaultMaxRequestBody is the largest request body the gateway reads:
	// what a body of unknown length reserves of the budget.
	DefaultMaxRequestBody = gateway.DefaultMaxBodyBytes
)

// HTTPOptions configure the client port's HTTP server.
type HTTPOptions struct {
	// ReadHeaderTimeout bounds reading a request head, and the wait for the
	// first request of a new connection (DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's body, from the end of its
	// head (DefaultBodyTimeout).
	BodyTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long
	// (DefaultIdleTimeout).
	IdleTimeout time.Duration
	// WriteTimeout bounds writing an answer that is not an event stream,
	// from its first byte (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request head (DefaultMaxHeaderBytes).
	MaxHeaderBytes int
	// MaxConns bounds the connections served at once (DefaultMaxConns).
	MaxConns int
	// BodyBudget bounds the bytes of request bodies held at once across
	// all requests (DefaultBodyBudget); a request that would go beyond it
	// is answered 503 at once. A body of known length reserves its length,
	// one of unknown length DefaultMaxRequestBody.
	BodyBudget int64
	// TLSCert and TLSKey, both set, serve the client port over TLS (and
	// HTTP/2) with this certificate, read again when the files change.
	TLSCert, TLSKey string
	// H2C also serves HTTP/2 without TLS, with prior knowledge (the h2c of
	// load balancers such as Envoy or a GCP backend service); ignored with
	// TLS, which offers HTTP/2 through ALPN.
	H2C bool
}

// withDefaults returns o with its zero fields set to the defaults, or an
// error naming a negative one.
func (o HTTPOptions) withDefaults() (HTTPOptions, error) {
	for _, d := range []struct {
		name string
		v    int64
	}{
		{"read header timeout", int64(o.ReadHeaderTimeout)},
		{"body timeout", int64(o.BodyTimeout)},
		{"idle timeout", int64(o.IdleTimeout)},
		{"write timeout", int64(o.WriteTimeout)},
		{"max header bytes", int64(o.MaxHeaderBytes)},
		{"max conns", int64(o.MaxConns)},
		{"body budget", o.BodyBudget},
	} {
		if d.v < 0 {
			return o, fmt.Errorf("HTTP server: %s %d is negative", d.name, d.v)
		}
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return o, errors.New("HTTP server: a TLS certificate needs its key and a key its certificate (set both or neither)")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.BodyTimeout, DefaultBodyTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.BodyBudget == 0 {
		o.BodyBudget = DefaultBodyBudget
	}
	return o, nil
}

// newHTTPServer returns the client port's server for h. certs is the TLS
// certificate's reloader (nil without TLS).
func newHTTPServer(h http.Handler, o HTTPOptions, certs *certReloader, log *slog.Logger) *http.Server {
	hs := &http.Server{
		Handler:           &edgeHandler{next: h, opts: o},
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	hs.Protocols.SetHTTP1(true)
	if certs != nil {
		hs.Protocols.SetHTTP2(true)
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	} else if o.H2C {
		hs.Protocols.SetUnencryptedHTTP2(true)
	}
	return hs
}

// edgeListener is what the client port's server accepts from: at most n
// connections at once (further ones wait in the listen backlog), and
// every accept error but the listener's closing reported as temporary.
// net/http waits and retries after a temporary error (out of file
// descriptors, say) and returns on any other, which would end the data
// plane: a failure to accept one connection (ENOBUFS, ENOMEM, a firewall's
// EPERM) must not.
func edgeListener(l net.Listener, n int) net.Listener {
	return retryListener{netutil.LimitListener(l, n)}
}

// retryListener reports accept errors as temporary (see edgeListener).
type retryListener struct{ net.Listener }

func (l retryListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return nil, temporaryError{err}
	}
	return c, err
}

// temporaryError is a net.Error that net/http retries after.
type temporaryError struct{ error }

func (temporaryError) Timeout() bool { return false }

// Temporary is what net/http's Serve asks (deprecated for other uses).
func (temporaryError) Temporary() bool { return true }

func (e temporaryError) Unwrap() error { return e.error }

// edgeHandler applies what net/http has no server setting for: the body
// deadline, the write deadline of answers that are not streams, and the
// budget of request bodies held at once.
type edgeHandler struct {
	next http.Handler
	opts HTTPOptions
	// held is the bytes of request bodies reserved by requests running.
	held atomic.Int64
}

func (e *edgeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// net/http reads a body sent with both Content-Length and
		// Transfer-Encoding as chunked and drops Content-Length, leaving no
		// trace of it (RFC 9112 6.3). A proxy in front that went by
		// Content-Length would take what follows the chunks for the next
		// request on the connection (request smuggling): the connection
		// ends with this request, so nothing that follows is served.
		w.Header().Set("Connection", "close")
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		n := r.ContentLength
		if n < 0 || n > DefaultMaxRequestBody {
			// Unknown length: what the gateway may read at most. A
			// longer known one is refused before it is read (413).
			n = DefaultMaxRequestBody
		}
		if e.held.Add(n) > e.opts.BodyBudget {
			e.held.Add(-n)
			writeOverBudget(w, rc, e.opts.WriteTimeout)
			return
		}
		defer e.held.Add(-n)
		// The body must come within BodyTimeout. Once it has, the
		// deadline goes: net/http's read that watches for the client
		// going away would take it for the client gone, and end the
		// request's context while the call runs.
		_ = rc.SetReadDeadline(time.Now().Add(e.opts.BodyTimeout))
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
	}
	e.next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: rc, timeout: e.opts.WriteTimeout}, r)
}

// writeOverBudget answers a request whose body the budget cannot hold.
func writeOverBudget(w http.ResponseWriter, rc *http.ResponseController, timeout time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", "1")
	// The body was not read: the connection is not reused.
	h.Set("Connection", "close")
	setWriteDeadline(rc, h, timeout)
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"the data plane holds as many request bodies as its memory budget allows (--http-body-budget); retry shortly"}}`))
}

// deadlineBody clears the body's read deadline once the body is read whole.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// Only at the end: after a failed read (the deadline passed) the
	// deadline must stay, or net/http's discarding of the rest of the body
	// would wait for it without one.
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// deadlineWriter sets the write deadline of an answer that is not an event
// stream when its head is written.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	wrote   bool
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.head(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.head(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *deadlineWriter) head(code int) {
	if w.wrote || code < 200 {
		return // 1xx heads are followed by the real one
	}
	w.wrote = true
	setWriteDeadline(w.rc, w.Header(), w.timeout)
}

// setWriteDeadline bounds the writing of an answer by timeout, unless it
// is an event stream: that one gets no deadline, and must not keep one an
// earlier answer on the connection set (net/http resets none between
// requests when its own WriteTimeout is off).
func setWriteDeadline(rc *http.ResponseController, h http.Header, timeout time.Duration) {
	if strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") {
		_ = rc.SetWriteDeadline(time.Time{})
		return
	}
	_ = rc.SetWriteDeadline(time.Now().Add(timeout))
}

// Flush implements http.Flusher, which the gateway's SSE streams use.
func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *deadlineWriter) FlushError() error {
	if !w.wrote {
		w.head(http.StatusOK)
	}
	return w.rc.Flush()
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
