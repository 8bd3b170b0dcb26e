// Package httpserver serves the data plane's HTTP port with a lean
// HTTP/1.1 connection loop for the requests MCP clients make all day (GET,
// POST and DELETE with a Content-Length body or none), and hands every
// connection that sends anything else to a standard net/http server.
//
// Why not net/http alone: on a proxied tools/call net/http's per-request
// machinery (MIME header parsing into a fresh map, a background read
// goroutine, a buffered chunk writer) cost about a fifth of the data plane's
// CPU. This loop reads the head from one buffer, starts no goroutine for a
// request that finishes within WatchAfter, and writes an unflushed response
// with its head in one write. What it does not serve itself (HTTP/1.0,
// chunked or Expect: 100-continue request bodies, Upgrade, HEAD, a malformed
// or oversized head) goes, with the bytes already read, to net/http, which
// keeps the connection from then on: its error answers and edge cases are
// the standard library's.
//
// One thing net/http cannot do: Detach answers a request while its handler
// runs on, and serves the connection's next requests meanwhile (the gateway
// runs a stateless client's call on the request's goroutine and detaches
// it only if the upstream asks the client for input).
package httpserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for zero Server fields.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 5 * time.Minute
	// DefaultWatchAfter is how long a request runs before the server watches
	// its connection for the client going away (which cancels the request's
	// context). Shorter requests never pay for the watch.
	DefaultWatchAfter = 20 * time.Millisecond
)

// headBufferSize bounds the request head served by the lean loop; a longer
// head goes to net/http, which allows up to http.DefaultMaxHeaderBytes.
const headBufferSize = 8 << 10

// maxDrain is how much of a body a handler left unread is read and thrown
// away to keep the connection; beyond it the connection is closed.
const maxDrain = 256 << 10

// Server serves HTTP/1.1 on plain TCP connections. Create it with New.
type Server struct {
	handler           http.Handler
	log               *slog.Logger
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	watchAfter        time.Duration

	// std serves the connections handed off; handoff is its listener.
	std     *http.Server
	handoff *handoffListener

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*conn]struct{}
	onShutdown []func()
	shutdown   atomic.Bool
	stdStarted bool          // std serves the handoff listener (under mu)
	stdDone    chan struct{} // closed when std.Serve returned
	connWG     sync.WaitGroup
}

// Options configure a Server.
type Options struct {
	Handler http.Handler
	Logger  *slog.Logger
	// ReadHeaderTimeout bounds reading a request head once its first byte
	// arrived (DefaultReadHeaderTimeout when 0).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for this
	// long, or up to an eighth longer (DefaultIdleTimeout when 0). A
	// request's body must arrive within it too.
	IdleTimeout time.Duration
	// WatchAfter is how long a request runs before its connection is
	// watched for the client going away (DefaultWatchAfter when 0).
	WatchAfter time.Duration
}

// New returns a Server for opts.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.WatchAfter <= 0 {
		opts.WatchAfter = DefaultWatchAfter
	}
	s := &Server{
		handler:           opts.Handler,
		log:               opts.Logger,
		readHeaderTimeout: opts.ReadHeaderTimeout,
		idleTimeout:       opts.IdleTimeout,
		watchAfter:        opts.WatchAfter,
		listeners:         map[net.Listener]struct{}{},
		conns:             map[*conn]struct{}{},
		stdDone:           make(chan struct{}),
	}
	s.handoff = newHandoffListener()
	s.std = &http.Server{
		Handler:           opts.Handler,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// RegisterOnShutdown registers a function to call when Shutdown starts, as
// http.Server.RegisterOnShutdown: for connections that never end on their
// own (event streams).
func (s *Server) RegisterOnShutdown(f func()) {
	s.mu.Lock()
	s.onShutdown = append(s.onShutdown, f)
	s.mu.Unlock()
}

// Serve accepts connections on l until l fails or the server shuts down,
// and returns http.ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	if !s.stdStarted {
		s.stdStarted = true
		go func() {
			defer close(s.stdDone)
			_ = s.std.Serve(s.handoff)
		}()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		_ = l.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: wait and retry, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.shutdown.Load() {
			s.mu.Unlock()
			_ = nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting connections, closes idle ones, and waits for
// requests in progress to finish or ctx to end, on its own connections and
// on those handed to net/http alike. Functions given to RegisterOnShutdown
// run first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown.Store(true)
	for l := range s.listeners {
		_ = l.Close()
	}
	for _, f := range s.onShutdown {
		go f()
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	s.mu.Unlock()
	// The standard server stops alongside: its listener is the handoff
	// one, which its Shutdown closes.
	stdErr := make(chan error, 1)
	go func() { stdErr <- s.std.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := <-stdErr
	s.waitStd()
	return err
}

// waitStd waits for the standard server's Serve to return, if it started.
func (s *Server) waitStd() {
	s.mu.Lock()
	started := s.stdStarted
	s.mu.Unlock()
	if started {
		<-s.stdDone
	}
}

// Close closes the listeners and every connection at once, and cancels the
// requests in progress.
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdown.Store(true)
	for l := range s.listeners {
		_ = l.Close()
	}
	for c := range s.conns {
		_ = c.nc.Close()
		c.cancelRequest()
	}
	s.mu.Unlock()
	_ = s.handoff.Close()
	err := s.std.Close()
	s.waitStd()
	return err
}

// forget removes a connection that ended or was handed off.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// handoffListener is the net.Listener the standard server accepts handed
// off connections from.
type handoffListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

// give hands c to the standard server; false when it stopped.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// replayConn is a handed-off connection: the bytes the lean loop had read
// come first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// bufferedReplay returns a reader of what br holds, then of nc.
func bufferedReplay(br *bufio.Reader, nc io.Reader) io.Reader {
	n := br.Buffered()
	if n == 0 {
		return nc
	}
	b, _ := br.Peek(n)
	return io.MultiReader(bytes.NewReader(append([]byte(nil), b...)), nc)
}
