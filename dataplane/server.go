// Package dataplane assembles a data plane: the sync client that keeps its
// config in step with the control plane, the snapshot cache it serves from,
// the upstream session pool, the MCP gateway, and the HTTP server with health
// and readiness checks.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/audit"
	"github.com/metamcp/metamcp/dataplane/configcache"
	"github.com/metamcp/metamcp/dataplane/gateway"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/dataplane/redisconn"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/dataplane/telemetry"
	"github.com/metamcp/metamcp/dataplane/toolreport"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/gcra"
)

// DefaultListen is the data plane's default HTTP address.
const DefaultListen = "127.0.0.1:12008"

// Options configure a Server.
type Options struct {
	// Sync says how to reach the control plane. Its NodeID is required.
	Sync syncclient.Options
	// CacheFile keeps the last good snapshot ("" keeps none).
	CacheFile string
	// StdioAllow lists the patterns of the stdio commands (and their
	// arguments) this data plane may run (configcache.ParseStdioPolicy); a
	// server with any other is left out. None: no stdio server runs, unless
	// StdioAllowAny.
	StdioAllow []string
	// StdioAllowEnv names the variables of configcache.LoaderEnv a stdio
	// server may set (globs); any other of them leaves the server out.
	StdioAllowEnv []string
	// StdioAllowAny runs every stdio server as configured (metamcp dev).
	StdioAllowAny bool
	// Pool configures the upstream session pool (its Logger is set by New).
	Pool upstream.PoolOptions
	// AllowedHosts and AllowedOrigins are the gateway's Host and Origin allow
	// lists (DNS rebinding protection); loopback hosts are always allowed.
	AllowedHosts, AllowedOrigins []string
	// SessionIdleTTL ends client sessions unused for this long (the
	// gateway's default, 30m, when 0).
	SessionIdleTTL time.Duration
	// ListWait bounds how long initialize and list operations wait for one
	// upstream (gateway.DefaultListWait when zero).
	ListWait time.Duration
	// ShutdownTimeout bounds the graceful HTTP stop (10s): how long calls
	// in flight may run on once the listener is closed.
	ShutdownTimeout time.Duration
	// DrainDelay is how long the data plane keeps serving, with /readyz
	// answering 503, between the stop signal and closing its listener, so
	// that load balancers stop sending it requests first (0: none).
	DrainDelay time.Duration
	// HTTP configures the client port's server (net/http): its timeouts,
	// limits, TLS and HTTP/2.
	HTTP HTTPOptions
	// Redis is the Redis the replicas share; without it sessions cannot span
	// replicas for server-to-client messages, and rate limits count per
	// replica.
	Redis RedisOptions
	// RateLimit configures the rate limiter.
	RateLimit RateLimitOptions
	// TrustedProxies, PublicURL and AuthFailuresPerMinute are the gateway's
	// (see gateway.Options).
	TrustedProxies        []netip.Prefix
	PublicURL             string
	AuthFailuresPerMinute int
	// Audit says where call records wait for the control plane.
	Audit AuditOptions
	// Telemetry says what the data plane tells its operators: metrics,
	// the access log.
	Telemetry TelemetryOptions
	Logger    *slog.Logger
}

// AuditOptions configure the call-record spool.
type AuditOptions struct {
	// SpoolDir keeps call records until the control plane has stored them
	// (default: "audit-spool" beside CacheFile; a temporary directory,
	// removed at the end, without either).
	SpoolDir string
	// SpoolMaxBytes bounds the spool (audit.DefaultMaxBytes when 0); beyond
	// it the oldest records are dropped and counted.
	SpoolMaxBytes int64
}

// RateLimitOptions configure the data plane's rate limiter.
type RateLimitOptions struct {
	// Timeout bounds one call's wait for Redis (ratelimit.DefaultTimeout
	// when 0): past it the policies' failure modes decide.
	Timeout time.Duration
	// Store, when set, is where buckets are counted instead of Redis (the
	// in-process store `metamcp dev` shares with its control plane).
	Store gcra.Store
}

// TelemetryOptions configure the data plane's metrics and access log.
type TelemetryOptions struct {
	// Metrics turns the Prometheus metrics on (Server.Metrics).
	Metrics bool
	// MetricsOnClientPort serves them at /metrics on the client port too.
	MetricsOnClientPort bool
	// MaxToolLabels caps the distinct tool label values
	// (telemetry.DefaultMaxTools when 0).
	MaxToolLabels int
	// AccessLog says which requests AccessLogger records.
	AccessLog    telemetry.AccessLog
	AccessLogger *slog.Logger
	// Tracer, when set, traces MCP requests (see telemetry.NewTracing).
	Tracer trace.Tracer
}

// DefaultRedisPrefix starts every Redis key and channel of a data plane.
const DefaultRedisPrefix = "metamcp:"

// RedisOptions say which Redis the data plane uses.
type RedisOptions struct {
	// URL is a redis:// or rediss:// URL; "" runs without Redis (an
	// in-process session bus).
	URL string
	// Prefix starts every key and channel (DefaultRedisPrefix when ""), so
	// deployments sharing one Redis stay apart.
	Prefix string
}

// callBuffer is how many call records wait for the audit trail's batcher,
// which takes them as they come and writes them to its spool; beyond it the
// gateway drops records (and counts them) rather than slow a client down.
const callBuffer = 16384

// Server is one data plane.
type Server struct {
	opts  Options
	log   *slog.Logger
	cache *configcache.Cache
	sync  *syncclient.Client
	pool  *upstream.Pool
	gw    *gateway.Gateway
	tools *toolreport.Report
	mux   *http.ServeMux
	certs *certReloader // the client port's TLS certificate; nil without TLS
	// handler is mux behind the gateway's fast route (Gateway.Routes).
	handler http.Handler

	bus      sessionbus.Bus
	redis    redis.UniversalClient // nil without Redis
	redisBus *sessionbus.Redis     // nil without Redis
	// redisProbe is /readyz's bounded ping of Redis, at most one at a time
	// and one per redisProbeEvery: a subscription can look up while Redis
	// no longer answers (a frozen process keeps its sockets open).
	redisProbe struct {
		sync.Mutex
		at  time.Time
		err error
	}

	trail        *audit.Trail
	calls        chan *metamcpv1.CallRecord
	trailConn    *grpc.ClientConn
	tmpSpool     string // removed at the end of Serve when set
	limiter      *ratelimit.Limiter
	limiterRedis redis.UniversalClient // the limiter's own client; nil without Redis
	metrics      *telemetry.Metrics    // nil when off
	// draining is set once Serve's context is done: /readyz answers 503.
	draining atomic.Bool

	mu   sync.Mutex
	addr net.Addr
}

// New builds a data plane. It serves the cached snapshot, if any, at once.
// Call Serve next: the gateway and the upstream pool New starts belong to it,
// and it releases them when it returns.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	httpOpts, err := opts.HTTP.withDefaults()
	if err != nil {
		return nil, err
	}
	opts.HTTP = httpOpts
	var certs *certReloader
	if opts.HTTP.TLSCert != "" {
		if certs, err = newCertReloader(opts.HTTP.TLSCert, opts.HTTP.TLSKey, opts.Logger.With("component", "tls")); err != nil {
			return nil, err
		}
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	var checks []configcache.Check
	if !opts.StdioAllowAny {
		policy, err := configcache.ParseStdioPolicy(opts.StdioAllow, opts.StdioAllowEnv)
		if err != nil {
			return nil, err
		}
		checks = append(checks, policy.Check())
	}
	cache := configcache.New(opts.CacheFile, opts.Logger.With("component", "config"), checks...)
	loaded, err := cache.LoadFile()
	if err != nil {
		// A bad cache must not keep the data plane down: the control plane
		// will send a fresh snapshot.
		opts.Logger.Warn("ignoring the snapshot cache", "path", opts.CacheFile, "err", err)
	} else if loaded {
		rev, _ := cache.Revision()
		opts.Logger.Info("serving the cached snapshot until the control plane answers", "path", opts.CacheFile, "revision", rev)
	}
	rdb, bus, redisBus, err := openRedis(opts)
	if err != nil {
		return nil, err
	}
	limiter, limiterRedis, err := openLimiter(opts)
	if err != nil {
		_ = bus.Close()
		if rdb != nil {
			_ = rdb.Close()
		}
		return nil, err
	}
	calls := make(chan *metamcpv1.CallRecord, callBuffer)
	// The metrics are made below, once what they read exists; snapshots
	// are applied and upstreams connected only once Serve runs.
	var metrics *telemetry.Metrics
	poolOpts := opts.Pool
	poolOpts.Logger = opts.Logger.With("component", "upstream")
	if opts.Telemetry.Metrics && poolOpts.ObserveConnect == nil {
		poolOpts.ObserveConnect = func(server, phase string, d time.Duration, err error) {
			metrics.UpstreamConnect(server, phase, d, err)
		}
	}
	// The gateway makes the pool (gateway.Options.Pool), giving it the
	// events it reports to.
	var pool *upstream.Pool
	syncOpts := opts.Sync
	syncOpts.Logger = opts.Logger.With("component", "sync")
	if syncOpts.Fleet == nil {
		syncOpts.Fleet = func(f *metamcpv1.Fleet) { limiter.SetLiveDataPlanes(int(f.GetLiveDataPlanes())) }
	}
	// The gateway is created below, before the sync client runs (Serve).
	var gw *gateway.Gateway
	if syncOpts.Status == nil {
		syncOpts.Status = func() ([]*metamcpv1.UpstreamStatus, int64) {
			return pool.Status(), int64(gw.Sessions())
		}
	}
	// The gateway records the tool lists it serves; the sync client reports
	// them for `mmctl auth can-i`.
	tools := toolreport.New()
	if syncOpts.Tools == nil {
		syncOpts.Tools = tools.Changed
	}
	if syncOpts.Collisions == nil {
		syncOpts.Collisions = func() []*metamcpv1.NameCollision {
			var out []*metamcpv1.NameCollision
			for _, c := range gw.Collisions() {
				out = append(out, &metamcpv1.NameCollision{Endpoint: c.Endpoint, Namespace: c.Namespace, Kind: c.Kind, Name: c.Name, KeptServer: c.Kept, DroppedServer: c.Dropped})
			}
			return out
		}
	}
	if opts.Telemetry.Metrics && syncOpts.Applied == nil {
		syncOpts.Applied = func(a *metamcpv1.Ack) { metrics.Applied(a) }
	}
	client, err := syncclient.New(cache, syncOpts)
	var (
		trail     *audit.Trail
		trailConn *grpc.ClientConn
		tmpSpool  string
	)
	if err == nil {
		trail, trailConn, tmpSpool, err = openTrail(opts, syncOpts, func() int64 { return gw.DroppedCalls() })
	}
	if err != nil {
		_ = bus.Close()
		if rdb != nil {
			_ = rdb.Close()
		}
		if limiterRedis != nil {
			_ = limiterRedis.Close()
		}
		return nil, err
	}
	gw = gateway.New(gateway.Options{
		Config: cache,
		Pool: func(events upstream.Events) gateway.Upstreams {
			poolOpts.Events = events
			pool = upstream.NewPool(poolOpts)
			return pool
		},
		Logger:         opts.Logger.With("component", "gateway"),
		AllowedHosts:   opts.AllowedHosts,
		AllowedOrigins: opts.AllowedOrigins,
		Calls:          calls,
		SessionIdleTTL: opts.SessionIdleTTL,
		ListWait:       opts.ListWait,
		NodeID:         syncOpts.NodeID,
		Version:        syncOpts.Version,
		Bus:            bus,

		TrustedProxies:        opts.TrustedProxies,
		PublicURL:             opts.PublicURL,
		AuthFailuresPerMinute: opts.AuthFailuresPerMinute,
		ToolReport:            tools,
		Limiter:               limiter,
	})
	s := &Server{opts: opts, log: opts.Logger, cache: cache, certs: certs, sync: client, pool: pool, gw: gw, tools: tools, mux: http.NewServeMux(),
		bus: bus, redis: rdb, redisBus: redisBus, trail: trail, calls: calls, trailConn: trailConn, tmpSpool: tmpSpool,
		limiter: limiter, limiterRedis: limiterRedis}
	if opts.Telemetry.Metrics {
		metrics = s.newMetrics()
		s.metrics = metrics
	}
	gw.Register(s.mux)
	tel := telemetry.New(telemetry.Options{Metrics: metrics, AccessLog: opts.Telemetry.AccessLog, Logger: opts.Telemetry.AccessLogger, Tracer: opts.Telemetry.Tracer})
	s.handler = tel.Wrap(gw.Routes(s.mux))
	if metrics != nil && opts.Telemetry.MetricsOnClientPort {
		s.mux.Handle("GET /metrics", MetricsHandler(metrics))
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s, nil
}

// newMetrics makes the data plane's metrics.
func (s *Server) newMetrics() *telemetry.Metrics {
	src := telemetry.Sources{
		Upstreams:      s.pool.Status,
		ClientSessions: s.gw.Sessions,
		Revision:       func() int64 { rev, _ := s.cache.Revision(); return rev },
		SnapshotBuilt: func() time.Time {
			if cur := s.cache.Current(); cur != nil {
				return cur.BuildTime
			}
			return time.Time{}
		},
		SyncConnected: s.sync.Connected,
		Audit: func() telemetry.AuditStats {
			a := s.trail.Stats()
			return telemetry.AuditStats{Pending: a.Pending, SpoolBytes: a.SpoolBytes, Dropped: a.Dropped, Sent: a.Sent, Connected: a.Connected}
		},
	}
	if s.redisBus != nil {
		src.Redis = s.redisBus.Err
	}
	if s.limiter != nil {
		src.RateLimit = func() telemetry.RateLimitStats {
			r := s.limiter.Stats()
			return telemetry.RateLimitStats{Checks: r.Checks, Refused: r.Refused, ShadowRefused: r.ShadowRefused, Unavailable: r.Unavailable,
				Local: r.Local, Failures: r.Failures, Healthy: s.limiter.Healthy(), LiveDataPlanes: s.limiter.LiveDataPlanes()}
		}
	}
	return telemetry.NewMetrics(src, s.opts.Telemetry.MaxToolLabels)
}

// Metrics returns the data plane's metrics (nil when off), for a
// separate metrics listener.
func (s *Server) Metrics() *telemetry.Metrics { return s.metrics }

// MetricsHandler serves m in Prometheus' formats.
func MetricsHandler(m *telemetry.Metrics) http.Handler {
	return promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{})
}

// ToolReport is where the gateway records the tool lists it serves, for
// `mmctl auth can-i`.
func (s *Server) ToolReport() *toolreport.Report { return s.tools }

// openTrail opens the call-record spool and a connection of its own to the
// control plane for the record stream.
func openTrail(opts Options, syncOpts syncclient.Options, dropped func() int64) (*audit.Trail, *grpc.ClientConn, string, error) {
	dir, tmp := opts.Audit.SpoolDir, ""
	if dir == "" && opts.CacheFile != "" {
		dir = filepath.Join(filepath.Dir(opts.CacheFile), "audit-spool")
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "metamcp-audit-spool-")
		if err != nil {
			return nil, nil, "", fmt.Errorf("audit spool: %w", err)
		}
		dir, tmp = d, d
	}
	conn, err := syncclient.Dial(syncOpts)
	if err != nil {
		return nil, nil, "", err
	}
	trail, err := audit.Open(audit.Options{
		Dir:      dir,
		MaxBytes: opts.Audit.SpoolMaxBytes,
		NodeID:   syncOpts.NodeID,
		Conn:     conn,
		Dropped:  dropped,
		Logger:   opts.Logger.With("component", "audit"),
	})
	if err != nil {
		_ = conn.Close()
		if tmp != "" {
			_ = os.RemoveAll(tmp)
		}
		return nil, nil, "", fmt.Errorf("%w (check --audit-spool-dir)", err)
	}
	return trail, conn, tmp, nil
}

// openRedis creates the data plane's one Redis client (which the session bus,
// and later the shared rate limits, use) and the session bus over it; without
// a URL the bus is in-process. A Redis that does not answer at start is
// logged and retried: the data plane serves anyway.
func openRedis(opts Options) (redis.UniversalClient, sessionbus.Bus, *sessionbus.Redis, error) {
	if opts.Redis.URL == "" {
		opts.Logger.Info("no Redis (--redis-url): the session bus is in-process; fine for one data plane, but behind a load balancer a session's streams, sampling and elicitation answers and cancellations work only while all its requests reach this replica")
		return nil, sessionbus.NewLocal(), nil, nil
	}
	prefix := opts.Redis.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	log := opts.Logger.With("component", "redis")
	redisconn.SetLogger(log)
	var rdb redis.UniversalClient
	var err error
	if gcra.MultiNode(opts.Redis.URL) {
		// Sentinel or Cluster: the client the rate limiter uses too.
		rdb, err = gcra.NewRedisClient(opts.Redis.URL, "metamcp-dataplane:"+opts.Sync.NodeID)
	} else {
		rdb, err = redisconn.New(opts.Redis.URL, "metamcp-dataplane:"+opts.Sync.NodeID)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w (check --redis-url)", err)
	}
	addr := redisconn.Redacted(opts.Redis.URL)
	if err := redisconn.Ping(context.Background(), rdb, 2*time.Second); err != nil {
		log.Warn("Redis does not answer; serving anyway, sessions spanning replicas fail until it does (retrying)", "redis", addr, "err", err)
	} else {
		log.Info("connected to Redis", "redis", addr, "prefix", prefix)
	}
	rb := sessionbus.NewRedis(rdb, prefix, opts.Logger.With("component", "sessionbus"))
	return rdb, rb, rb, nil
}

// openLimiter creates the rate limiter: counting in Redis, on a client of
// its own (its timeouts are the limiter's, and a slow session bus never
// holds it up), or in process without Redis.
func openLimiter(opts Options) (*ratelimit.Limiter, redis.UniversalClient, error) {
	prefix := opts.Redis.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	lo := ratelimit.Options{Store: opts.RateLimit.Store, Prefix: prefix, Timeout: opts.RateLimit.Timeout, Logger: opts.Logger.With("component", "ratelimit")}
	if lo.Store != nil || opts.Redis.URL == "" {
		return ratelimit.New(lo), nil, nil
	}
	rdb, err := gcra.NewRedisClient(opts.Redis.URL, "metamcp-ratelimit:"+opts.Sync.NodeID)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (check --redis-url)", err)
	}
	lo.Store = gcra.NewRedis(rdb)
	return ratelimit.New(lo), rdb, nil
}

// Limiter returns the data plane's rate limiter.
func (s *Server) Limiter() *ratelimit.Limiter { return s.limiter }

// Cache returns the config the data plane serves.
func (s *Server) Cache() *configcache.Cache { return s.cache }

// Handler returns the data plane's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the HTTP address Serve listens on, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: shutting down (draining the calls in flight)\n"))
		return
	}
	rev, _ := s.cache.Revision()
	if !s.cache.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: no config yet (waiting for the control plane)\n"))
		return
	}
	state := "connected to the control plane"
	if !s.sync.Connected() {
		state = "control plane unreachable; serving the last good config"
	}
	_, _ = fmt.Fprintf(w, "ready: revision %d (%s)\n", rev, state)
	// What of the snapshot is not served, as the control plane's registry
	// has it too.
	_, refused, keysRev := s.cache.Served()
	for _, r := range refused {
		_, _ = fmt.Fprintf(w, "server %s left out: %s\n", r.GetServer(), r.GetReason())
	}
	if keysRev > 0 {
		_, _ = fmt.Fprintf(w, "api keys and session keys: from revision %d (its config was refused)\n", keysRev)
	}
	// An identity provider that cannot be reached leaves the keys it last
	// published in force, and API keys work regardless: the replica stays
	// ready, and says so.
	for _, st := range s.gw.TokenIssuers() {
		switch {
		case !st.Loaded && st.LastError != "":
			_, _ = fmt.Fprintf(w, "idp %s: no keys yet, tokens are refused (%s)\n", st.Issuer, st.LastError)
		case !st.Loaded:
			_, _ = fmt.Fprintf(w, "idp %s: fetching its keys\n", st.Issuer)
		case st.LastError != "":
			_, _ = fmt.Fprintf(w, "idp %s: degraded, %d keys from %s in force (refresh failed: %s)\n", st.Issuer, st.Keys, st.LastRefresh.UTC().Format(time.RFC3339), st.LastError)
		default:
			_, _ = fmt.Fprintf(w, "idp %s: ok, %d keys (fetched %s)\n", st.Issuer, st.Keys, st.LastRefresh.UTC().Format(time.RFC3339))
		}
	}
	// Redis being down degrades sessions that span replicas but does not
	// make this replica unready: it still serves every request it gets.
	if s.redisBus != nil {
		err := s.redisBus.Err()
		if err == nil {
			err = s.pingRedis()
		}
		if err != nil {
			_, _ = fmt.Fprintf(w, "redis: degraded (%v)\n", err)
		} else {
			_, _ = fmt.Fprintf(w, "redis: ok\n")
		}
	}
	_, _ = fmt.Fprintf(w, "audit: %s\n", s.trail.Stats())
	// The limiter's state: counting in Redis, or following the policies'
	// failure modes while Redis is away (not a reason to be unready).
	_, _ = fmt.Fprintf(w, "ratelimit: %s\n", s.limiter.State())
}

// redisProbeTimeout bounds /readyz's ping of Redis; redisProbeEvery is how
// long its result stands for the next probes.
const (
	redisProbeTimeout = time.Second
	redisProbeEvery   = time.Second
)

// pingRedis pings Redis for /readyz within redisProbeTimeout, or returns the
// result of a ping younger than redisProbeEvery, so a flood of probes makes
// at most one ping per second.
func (s *Server) pingRedis() error {
	p := &s.redisProbe
	p.Lock()
	defer p.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < redisProbeEvery {
		return p.err
	}
	err := redisconn.Ping(context.Background(), s.redis, redisProbeTimeout)
	var nerr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &nerr) && nerr.Timeout()) {
		err = fmt.Errorf("no answer to a ping within %s", redisProbeTimeout)
	}
	p.at, p.err = time.Now(), err
	return err
}

// AuditStats reports the call-record spool.
func (s *Server) AuditStats() audit.Stats { return s.trail.Stats() }

// Serve runs the sync client and serves HTTP on lis until ctx is done, then
// stops gracefully, closes the gateway and the upstream pool (every stdio
// process killed and reaped). It returns nil after such a stop. Serve is
// called once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	// The audit trail stops last, after the gateway: the records of the
	// last calls reach its spool, and are sent after a restart.
	trailCtx, stopTrail := context.WithCancel(context.WithoutCancel(ctx))
	trailDone := make(chan struct{})
	go func() {
		defer close(trailDone)
		if err := s.trail.Run(trailCtx, s.calls); err != nil {
			s.log.Warn("close the audit spool", "err", err)
		}
	}()
	defer func() {
		stopTrail()
		<-trailDone
		_ = s.trailConn.Close()
		if s.tmpSpool != "" {
			_ = os.RemoveAll(s.tmpSpool)
		}
	}()
	defer func() {
		s.gw.Close()
		if err := s.pool.Close(); err != nil {
			s.log.Warn("close upstream sessions", "err", err)
		}
		if err := s.bus.Close(); err != nil {
			s.log.Warn("close the session bus", "err", err)
		}
		if s.redis != nil {
			if err := s.redis.Close(); err != nil {
				s.log.Warn("close the Redis client", "err", err)
			}
		}
		if s.limiterRedis != nil {
			_ = s.limiterRedis.Close()
		}
	}()
	// The pool follows the config: servers added, changed or removed.
	poolCtx, stopPool := context.WithCancel(ctx)
	poolDone := make(chan struct{})
	go func() {
		defer close(poolDone)
		s.followConfig(poolCtx)
	}()
	defer func() {
		stopPool()
		<-poolDone
	}()

	s.mu.Lock()
	s.addr = lis.Addr()
	s.mu.Unlock()

	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		if err := s.sync.Run(syncCtx); err != nil {
			s.log.Error("sync stopped", "err", err)
		}
	}()
	defer func() {
		stopSync()
		<-syncDone
	}()

	hs := newHTTPServer(s.handler, s.opts.HTTP, s.certs, s.log)
	// SSE streams and session GET streams never end on their own: closing
	// the gateway ends them, so the graceful stop does not wait for them.
	hs.RegisterOnShutdown(s.gw.Close)
	serveErr := make(chan error, 1)
	limited := edgeListener(lis, s.opts.HTTP.MaxConns)
	go func() {
		if s.certs != nil {
			serveErr <- hs.ServeTLS(limited, "", "")
		} else {
			serveErr <- hs.Serve(limited)
		}
	}()
	s.log.Info("data plane listening", "addr", lis.Addr().String(), "tls", s.certs != nil,
		"h2c", s.certs == nil && s.opts.HTTP.H2C, "max_conns", s.opts.HTTP.MaxConns)
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve HTTP on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	// Draining: readiness fails first, so that load balancers stop sending
	// requests here while the listener still takes them; then the listener
	// closes, the SSE and GET streams end (their clients reconnect to
	// another replica), calls in flight run on up to ShutdownTimeout, and
	// only then do the upstreams stop (Serve's deferred calls).
	s.draining.Store(true)
	s.log.Info("draining: /readyz answers 503", "delay", s.opts.DrainDelay, "timeout", s.opts.ShutdownTimeout)
	if s.opts.DrainDelay > 0 {
		t := time.NewTimer(s.opts.DrainDelay)
		select {
		case <-t.C:
		case err := <-serveErr:
			t.Stop()
			return fmt.Errorf("serve HTTP on %s: %w", lis.Addr(), err)
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		s.log.Warn("HTTP requests still running after the shutdown timeout; closing them", "err", err)
		_ = hs.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP on %s: %w", lis.Addr(), err)
	}
	return nil
}

// followConfig hands the servers of every snapshot swapped in to the pool,
// and tells the gateway of the swap, until ctx is done, starting with the
// one being served.
func (s *Server) followConfig(ctx context.Context) {
	for {
		// Take the channel before reading the config: a swap in between
		// closes it, so no snapshot is missed.
		changed := s.cache.Changed()
		if cur := s.cache.Current(); cur != nil {
			s.pool.Update(cur.Servers)
			s.pool.Restarts(cur.Config.GetServerRestarts())
			// Clients whose tools, prompts or resources changed hear of it.
			s.gw.ConfigChanged()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
