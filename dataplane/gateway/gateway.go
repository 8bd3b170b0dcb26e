// Package gateway is the data plane's client-facing side: it serves the MCP
// endpoints (/metamcp/{endpoint}/mcp for Streamable HTTP at every revision,
// /metamcp/{endpoint}/sse for 2024-11-05 clients), authenticates callers,
// and aggregates the tools, prompts and resources of an endpoint's upstream
// servers into one MCP server. On the request path it reads only the JSON-RPC
// envelope and the one name it must rewrite; everything else passes through
// as raw bytes.
package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/auth"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/session"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/toolreport"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Defaults for zero Options fields.
const (
	DefaultMaxBodyBytes   = 4 << 20
	DefaultListTimeout    = upstream.DefaultListTimeout
	DefaultCallTimeout    = upstream.DefaultCallTimeout
	DefaultSessionIdleTTL = 30 * time.Minute
	// DefaultListWait is Options.ListWait's default.
	DefaultListWait = 2 * time.Second
	// SSEKeepAlive is the interval of keep-alive comments on SSE streams.
	SSEKeepAlive = 15 * time.Second
)

// Upstreams hands out upstream sessions: the upstream pool as the gateway
// uses it. *upstream.Pool implements it.
type Upstreams interface {
	// Session returns a live session with server. clientID identifies the
	// downstream session; per_client servers get one upstream session per
	// clientID, shared servers ignore it.
	Session(ctx context.Context, server, clientID string) (upstream.Session, error)
	// CloseClient ends the per_client upstream sessions of a downstream session.
	CloseClient(clientID string)
}

// Options configure a Gateway.
type Options struct {
	// Config is the snapshot being served (a *configcache.Cache); read once per request.
	Config interface{ Current() *snapshot.Compiled }
	// Pool makes the upstream session pool (an *upstream.Pool) once New has
	// made what it reports to: events receives what upstreams send outside
	// client calls (upstream.PoolOptions.Events). Nil: no upstreams.
	Pool   func(events upstream.Events) Upstreams
	Logger *slog.Logger
	// AllowedHosts lists the Host header values accepted (DNS rebinding
	// protection), without port; "*" accepts any. Loopback names (localhost,
	// 127.0.0.1, ::1) are always accepted.
	AllowedHosts []string
	// AllowedOrigins lists the Origin values accepted from browsers (for
	// example "https://app.example.com"); "*" accepts any. Requests without
	// an Origin header, and same-origin requests, are always accepted.
	AllowedOrigins []string
	// MaxBodyBytes bounds a request body (DefaultMaxBodyBytes when 0).
	MaxBodyBytes int64
	// DefaultListTimeout and DefaultCallTimeout apply to servers that set none.
	DefaultListTimeout, DefaultCallTimeout time.Duration
	// ListWait bounds how long initialize and a list operation wait for
	// one upstream (DefaultListWait when zero): a slower one is left out,
	// and its part reaches listening clients later through list_changed.
	ListWait time.Duration
	// Calls receives a record of every request the gateway serves, refused
	// ones included (record.go); the data plane's audit trail drains it.
	// Sends never block: when the channel is full the record is dropped and
	// counted (DroppedCalls).
	Calls chan<- *metamcpv1.CallRecord
	// NodeID is set on call records.
	NodeID string
	// SessionIdleTTL ends downstream sessions unused for this long (DefaultSessionIdleTTL when 0).
	SessionIdleTTL time.Duration
	// Sessions creates and opens session ids (when nil: session.NewSealed
	// with the snapshot's session keys).
	Sessions session.Store
	// Version is the serverInfo.version the gateway announces.
	Version string
	// Bus carries session-addressed messages between replicas (a local,
	// in-process bus when nil; the gateway closes only that one).
	Bus sessionbus.Bus
	// Tokens verifies OAuth access tokens for endpoints with auth.jwt (a
	// registry of the gateway's own, closed with it, when nil).
	Tokens *auth.Verifiers
	// TrustedProxies are the addresses of the reverse proxies and load
	// balancers in front: only from them are X-Forwarded-For (the client's
	// address, for the audit trail, rate limits and the failed-login
	// throttle), X-Forwarded-Proto and X-Forwarded-Host (the URL clients
	// use, for OAuth metadata and token audiences) believed.
	TrustedProxies []netip.Prefix
	// PublicURL, when set, is the scheme and host clients use to reach the
	// data plane (for example https://mcp.example.com); it wins over what
	// requests and proxies say.
	PublicURL string
	// AuthFailuresPerMinute is how many failed authentications one client
	// address may make per minute before it gets 429s (see authThrottle);
	// 0 means DefaultAuthFailuresPerMinute and a negative value turns the
	// throttle off.
	AuthFailuresPerMinute int
	// ToolReport receives the complete tool lists the gateway serves, which
	// the data plane reports to the control plane for `mmctl auth can-i`
	// (nothing is reported when nil).
	ToolReport *toolreport.Report
	// Limiter enforces the snapshot's rate-limit policies (none when nil).
	Limiter *ratelimit.Limiter
}

// Gateway serves MCP clients. Create it with New; stop it with Close.
type Gateway struct {
	opts     Options
	log      *slog.Logger
	info     []byte // the gateway's Implementation object (serverInfo)
	infoMeta []byte // a result _meta holding it, for stateless responses
	sessions session.Store
	routes   routeCache
	// names remembers name collisions and long names lists found (names.go).
	names   nameNotes
	dropped atomic.Int64
	// authFailures throttles failed authentications per client address.
	authFailures *authThrottle
	// ownTokens: Options.Tokens is the gateway's own, closed with it.
	ownTokens bool

	ctx    context.Context // cancelled by Close; parent of SSE streams and their requests
	cancel context.CancelFunc
	wg     sync.WaitGroup

	bus    sessionbus.Bus
	ownBus bool
	// pool is Options.Pool as the gateway uses it: behind sessionUpstreams
	// when sessions are sealed (rehydrate.go).
	pool Upstreams
	// endedReady is closed once watchEnded first subscribed (tests wait on it).
	endedReady      chan struct{}
	endedSubscribed sync.Once
	// replica names this gateway in the requestStates of its bridged
	// calls, so that another replica carries their retries here
	// (bridgebus.go); retriesReady is closed once watchRetries first
	// subscribed (tests wait on it).
	replica           string
	retriesReady      chan struct{}
	retriesSubscribed sync.Once

	// state is what the gateway keeps about connected clients beyond their
	// sessions (list baselines, resource subscriptions, listen streams,
	// calls waiting for input).
	state clientState
	// relays are the calls in flight and the sessions' log levels, for
	// what crosses between clients and upstreams (events.go).
	relays relayState

	// mcpHandler serves /metamcp/{endpoint}/mcp (Register, Routes).
	mcpHandler http.Handler

	mu      sync.Mutex
	sse     map[string]*sseStream
	streams map[string]*localStream // open standalone streams by session id
}

// New returns a Gateway and starts its idle-session sweeper.
func New(opts Options) *Gateway {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.DefaultListTimeout <= 0 {
		opts.DefaultListTimeout = DefaultListTimeout
	}
	if opts.DefaultCallTimeout <= 0 {
		opts.DefaultCallTimeout = DefaultCallTimeout
	}
	if opts.ListWait <= 0 {
		opts.ListWait = DefaultListWait
	}
	if opts.SessionIdleTTL <= 0 {
		opts.SessionIdleTTL = DefaultSessionIdleTTL
	}
	if opts.AuthFailuresPerMinute == 0 {
		opts.AuthFailuresPerMinute = DefaultAuthFailuresPerMinute
	}
	opts.PublicURL = strings.TrimSuffix(opts.PublicURL, "/")
	if opts.Sessions == nil {
		opts.Sessions = session.NewMemory()
		if opts.Config != nil {
			cfg := opts.Config
			keys := func() *metamcpv1.SessionKeys {
				if cur := cfg.Current(); cur != nil {
					return cur.Config.GetSessionKeys()
				}
				return nil
			}
			if s, err := session.NewSealed(keys); err == nil {
				opts.Sessions = s
			}
		}
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{
		opts:         opts,
		log:          opts.Logger,
		sessions:     opts.Sessions,
		authFailures: newAuthThrottle(opts.AuthFailuresPerMinute),
		ctx:          ctx,
		cancel:       cancel,
		sse:          make(map[string]*sseStream),
		streams:      make(map[string]*localStream),
		bus:          opts.Bus,
	}
	g.info = serverInfo(opts.Version)
	g.infoMeta = serverInfoMeta(g.info)
	g.endedReady = make(chan struct{})
	g.replica, g.retriesReady = newToken(), make(chan struct{})
	g.mcpHandler = g.guard(http.HandlerFunc(g.serveMCP))
	if opts.Pool != nil {
		g.pool = withSessionUpstreams(opts.Pool(g.upstreamEvents()), opts.Sessions, opts.Config)
	}
	if g.bus == nil {
		g.bus, g.ownBus = sessionbus.NewLocal(), true
	}
	if g.opts.Tokens == nil {
		g.opts.Tokens, g.ownTokens = auth.NewVerifiers(auth.Options{Logger: opts.Logger.With("component", "jwt")}), true
	}
	g.wg.Add(4)
	go g.sweep()
	go g.watchCancels()
	go g.watchEnded()
	go g.watchRetries()
	return g
}

// Register mounts the gateway's routes on mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.Handle("/metamcp/{endpoint}/mcp", g.mcpHandler)
	mux.Handle("/metamcp/{endpoint}/sse", g.guard(http.HandlerFunc(g.serveSSE)))
	mux.Handle("/metamcp/{endpoint}/message", g.guard(http.HandlerFunc(g.serveMessage)))
	mux.Handle("GET /.well-known/oauth-protected-resource/metamcp/{endpoint}/mcp", g.guard(http.HandlerFunc(g.serveResourceMetadata)))
	mux.Handle("GET /.well-known/oauth-protected-resource/metamcp/{endpoint}/sse", g.guard(http.HandlerFunc(g.serveResourceMetadata)))
}

// Handler returns an http.Handler serving only the gateway's routes.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	g.Register(mux)
	return g.Routes(mux)
}

// Routes returns next (a ServeMux the gateway Registered on) with a fast
// path in front for the one route every proxied call takes: a request whose
// path is /metamcp/{endpoint}/mcp in canonical form (an endpoint segment
// that is not empty, "." or ".." and needs no unescaping) goes straight to
// the Streamable HTTP handler, without ServeMux's pattern match, which
// allocates per request. Anything else, those paths in other forms
// included, goes to next, which answers it as before.
func (g *Gateway) Routes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect && r.URL.RawPath == "" {
			if _, ok := mcpPathEndpoint(r.URL.Path); ok {
				g.mcpHandler.ServeHTTP(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// mcpPathEndpoint returns the endpoint of a canonical /metamcp/{endpoint}/mcp path.
func mcpPathEndpoint(path string) (string, bool) {
	const prefix, suffix = "/metamcp/", "/mcp"
	if len(path) <= len(prefix)+len(suffix) || path[:len(prefix)] != prefix || path[len(path)-len(suffix):] != suffix {
		return "", false
	}
	name := path[len(prefix) : len(path)-len(suffix)]
	if name == "." || name == ".." || strings.IndexByte(name, '/') >= 0 {
		return "", false
	}
	return name, true
}

// endpointName is the request's {endpoint}: from the ServeMux pattern that
// routed it, or from the path when Routes' fast path did.
func endpointName(r *http.Request) string {
	if name := r.PathValue("endpoint"); name != "" {
		return name
	}
	name, _ := mcpPathEndpoint(r.URL.Path)
	return name
}

// Close ends every downstream session and SSE stream and stops the sweeper.
func (g *Gateway) Close() {
	// Sessions ended from now on live on at the other replicas.
	if u, ok := g.pool.(*sessionUpstreams); ok {
		u.closing.Store(true)
	}
	// Under mu: an SSE stream either joined wg before, or sees the cancel.
	g.mu.Lock()
	g.cancel()
	g.mu.Unlock()
	g.wg.Wait()
	if g.ownBus {
		_ = g.bus.Close()
	}
	if g.ownTokens {
		g.opts.Tokens.Close()
	}
	// A session still serving a request (the HTTP server was not drained)
	// is left to the pool's Close.
	for _, id := range g.sessions.Expired(time.Now().Add(time.Hour)) {
		if g.pool != nil {
			g.pool.CloseClient(id)
		}
	}
}

// Sessions is the number of live downstream sessions (Streamable HTTP and
// SSE) of this gateway, for the data plane's Status.
func (g *Gateway) Sessions() int { return g.sessions.Len() }

// DroppedCalls is the number of call records dropped because Calls was full.
func (g *Gateway) DroppedCalls() int64 { return g.dropped.Load() }

// sweep ends idle sessions until Close.
func (g *Gateway) sweep() {
	defer g.wg.Done()
	every := min(g.opts.SessionIdleTTL/4, time.Minute)
	every = max(every, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			for _, id := range g.sessions.Expired(now.Add(-g.opts.SessionIdleTTL)) {
				g.log.Debug("ending idle session", "session", id)
				g.endSSE(id)
				g.endLocalStream(id)
				g.forgetSessionState(id)
				g.dropIdleClient(id)
				if g.pool != nil {
					g.pool.CloseClient(id)
				}
			}
		}
	}
}

// guard refuses requests whose Host or Origin is not allowed.
func (g *Gateway) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			g.log.Warn("refused request with a Host that is not allowed", "host", r.Host, "remote", r.RemoteAddr)
			writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, "Host "+quote(r.Host)+" is not allowed: add it to the data plane's allowed hosts")
			return
		}
		if origin := headerValue(r.Header, headerOrigin); origin != "" && !g.originAllowed(origin, r.Host) {
			g.log.Warn("refused request with an Origin that is not allowed", "origin", origin, "remote", r.RemoteAddr)
			writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, "Origin "+quote(origin)+" is not allowed: add it to the data plane's allowed origins")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func quote(s string) string { return string(rpc.AppendString(nil, s)) }

// hostOnly strips the port from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

func isLoopbackName(h string) bool {
	h = strings.ToLower(h)
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (g *Gateway) hostAllowed(host string) bool {
	h := strings.ToLower(hostOnly(host))
	if h == "" {
		return false
	}
	if isLoopbackName(h) {
		return true
	}
	for _, a := range g.opts.AllowedHosts {
		a = strings.ToLower(a)
		if a == "*" || a == h || hostOnly(a) == h {
			return true
		}
	}
	return false
}

func (g *Gateway) originAllowed(origin, host string) bool {
	for _, a := range g.opts.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	// Same origin: the browser page came from this very server.
	if i := strings.Index(origin, "://"); i >= 0 {
		oh := origin[i+3:]
		if strings.EqualFold(oh, host) {
			return true
		}
		// A page on a loopback origin talking to a loopback gateway is local.
		if isLoopbackName(hostOnly(oh)) && isLoopbackName(hostOnly(host)) {
			return true
		}
	}
	return false
}

// writeHTTPError answers with status and a JSON-RPC error body (id null).
func writeHTTPError(w http.ResponseWriter, status int, code int64, msg string) {
	writeHTTPErrorID(w, status, nil, &rpc.Error{Code: code, Message: msg})
}

func writeHTTPErrorID(w http.ResponseWriter, status int, id json.RawMessage, e *rpc.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(appendError(make([]byte, 0, 128+len(e.Message)), id, e))
}
