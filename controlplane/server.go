// Package controlplane assembles the control plane's gRPC server: the admin
// API and the sync API on one port, behind token authentication and request
// logging, with optional (mutual) TLS.
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // registers the gzip compressor for clients that ask for it
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/syncserver"
)

// DefaultListen is the control plane's default gRPC address.
const DefaultListen = "127.0.0.1:12009"

// MaxMessageSize bounds one gRPC message either way: snapshots and exports of
// large configs are big.
const MaxMessageSize = 64 << 20

// DefaultShutdownTimeout is how long Serve waits for calls to finish when its
// context is done before it closes the rest (sync streams never finish).
const DefaultShutdownTimeout = 10 * time.Second

// Options configure a Server. Only what is marked required is.
type Options struct {
	// Listen is the address ListenAndServe binds (DefaultListen when empty).
	Listen string
	// TLSCertFile and TLSKeyFile (PEM) turn TLS on; both or neither.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile (PEM) requires client certificates signed by that CA
	// (mutual TLS); needs TLSCertFile.
	ClientCAFile string
	// AdminTokenHash is the SHA-256 (auth.HashToken) of the bootstrap admin
	// token; none when empty. Admin tokens in the store work either way.
	AdminTokenHash []byte
	// Logger receives structured logs; nothing is logged when nil.
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful stop (DefaultShutdownTimeout when 0).
	ShutdownTimeout time.Duration
	// AuditRetention is how long call records are kept; older ones are
	// deleted periodically. Zero keeps them forever.
	AuditRetention time.Duration
	// RateLimits reaches the data planes' rate-limit buckets, for
	// `mmctl ratelimit status` and `reset` (unavailable when its Store is nil).
	RateLimits admin.RateLimits
	// SyncTokenHash, when set, is the SHA-256 of a bootstrap sync token,
	// accepted beside the store's sync tokens (auth.BootstrapSyncName).
	SyncTokenHash []byte
	// Metrics, when set, count admin calls, sync streams and snapshot
	// pushes (see NewMetrics).
	Metrics *Metrics
}

// Server is the control plane's gRPC server.
type Server struct {
	opts   Options
	log    *slog.Logger
	grpc   *grpc.Server
	admin  *admin.Service
	authn  *auth.Authenticator
	sync   *syncserver.Server
	health *health.Server
	tls    bool
	st     store.Store

	mu   sync.Mutex
	addr net.Addr
}

// New builds a Server on st, sealing secrets with sealer.
func New(st store.Store, sealer *secret.Sealer, opts Options) (*Server, error) {
	if st == nil || sealer == nil {
		return nil, errors.New("control plane: a store and a sealer are required")
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:   opts,
		log:    logger,
		admin:  admin.New(st, sealer, logger.With("component", "admin")),
		authn:  auth.New(st, opts.AdminTokenHash, logger.With("component", "auth")),
		health: health.NewServer(),
	}
	s.admin.SetRateLimits(opts.RateLimits)
	s.authn.SetSyncTokenHash(opts.SyncTokenHash)

	unary := []grpc.UnaryServerInterceptor{s.authn.UnaryInterceptor(), s.logUnary}
	streams := []grpc.StreamServerInterceptor{s.authn.StreamInterceptor(), s.logStream}
	if m := opts.Metrics; m != nil {
		// First in the chain: refused calls count too.
		unary = append([]grpc.UnaryServerInterceptor{m.unary}, unary...)
		streams = append([]grpc.StreamServerInterceptor{m.stream}, streams...)
	}
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(streams...),
		// Data planes keep sync streams open for days and ping to keep
		// idle links (and the load balancers on them) alive.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	creds, err := serverCredentials(opts)
	if err != nil {
		return nil, err
	}
	if creds != nil {
		serverOpts = append(serverOpts, grpc.Creds(creds))
		s.tls = true
	}
	s.grpc = grpc.NewServer(serverOpts...)
	s.sync = syncserver.New(s.admin, st, syncserver.Options{
		Logger:      logger.With("component", "sync"),
		Reauthorize: s.authn.ReauthorizeAt,
		OnRecords:   s.admin.CallRecordsStored,
		Observer:    observer(opts.Metrics),
	})
	s.admin.SetListedTools(s.sync)
	s.st = st
	metamcpv1.RegisterAdminServiceServer(s.grpc, s.admin)
	metamcpv1.RegisterSyncServiceServer(s.grpc, s.sync)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s, nil
}

// serverCredentials loads the TLS configuration the options ask for, or
// returns nil for plain TCP.
func serverCredentials(opts Options) (credentials.TransportCredentials, error) {
	if (opts.TLSCertFile == "") != (opts.TLSKeyFile == "") {
		return nil, errors.New("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
	}
	if opts.TLSCertFile == "" {
		if opts.ClientCAFile != "" {
			return nil, errors.New("a client CA needs TLS: pass --tls-cert and --tls-key too")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", opts.TLSCertFile, opts.TLSKeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.ClientCAFile != "" {
		pem, err := os.ReadFile(opts.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA file %s holds no PEM certificate", opts.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(cfg), nil
}

// GRPC returns the underlying gRPC server, to register further services on
// before Serve. They get the same authentication (by method: see
// auth.RequiredScope) and logging.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Admin returns the AdminService; its BuildConfig feeds the sync service.
func (s *Server) Admin() *admin.Service { return s.admin }

// Sync returns the SyncService.
func (s *Server) Sync() *syncserver.Server { return s.sync }

// Auth returns the authenticator; its Reauthorize lets long-lived streams
// notice a revoked token.
func (s *Server) Auth() *auth.Authenticator { return s.authn }

// Addr returns the address Serve listens on, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ListenAndServe listens on Options.Listen and serves until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another control plane running? pick another address with --listen)", s.opts.Listen, err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves gRPC on lis until ctx is done, then stops gracefully: new
// calls are refused, running calls get up to Options.ShutdownTimeout to
// finish, and the rest are cut. It returns nil after such a stop. Serve
// closes lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.mu.Lock()
	s.addr = lis.Addr()
	s.mu.Unlock()
	if w := CheckListen(lis.Addr().String(), s.tls); w != "" {
		s.log.Warn(w)
	}

	// A config written by an older version has no session key yet; every
	// replica tries, under the store's write lock, and one creates it.
	if _, err := s.admin.EnsureSessionKeys(ctx); err != nil {
		_ = lis.Close()
		if ctx.Err() != nil {
			return nil // told to stop while starting: a clean stop, as later
		}
		return fmt.Errorf("%w; check the store and METAMCP_SECRET_KEY", err)
	}

	// The snapshot builder lives as long as Serve; stopping it also ends the
	// sync streams, so that the graceful stop below does not wait on them.
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		if err := s.sync.Run(syncCtx); err != nil {
			s.log.Error("snapshot builder stopped", "err", err)
		}
	}()
	defer func() {
		stopSync()
		<-syncDone
	}()

	if s.opts.AuditRetention > 0 {
		retCtx, stopRet := context.WithCancel(ctx)
		retDone := make(chan struct{})
		go func() {
			defer close(retDone)
			s.enforceRetention(retCtx)
		}()
		defer func() {
			stopRet()
			<-retDone
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(lis) }()

	select {
	case err := <-serveErr:
		if err != nil {
			return fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
		}
		return nil
	case <-ctx.Done():
	}

	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.opts.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.log.Warn("calls still running after the shutdown timeout; closing them", "timeout", s.opts.ShutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
	}
	return nil
}

// RetentionInterval returns how often call records older than retention are
// deleted: a tenth of it, between a second and an hour.
func RetentionInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Second), time.Hour)
}

// enforceRetention deletes call records older than the retention, at start
// and then every RetentionInterval, until ctx is done. Every control-plane
// replica does; a delete that finds nothing costs an index probe.
func (s *Server) enforceRetention(ctx context.Context) {
	every := RetentionInterval(s.opts.AuditRetention)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		cutoff := time.Now().Add(-s.opts.AuditRetention)
		n, err := s.st.DeleteCallRecordsBefore(ctx, cutoff)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("audit retention: delete old call records failed; retrying later", "err", err, "retry_in", every)
		case n > 0:
			s.log.Info("audit retention: deleted old call records", "records", n, "before", cutoff.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckListen returns a warning when addr is reachable from other hosts and
// TLS is off (tokens would cross the network in clear text), or "".
func CheckListen(addr string, tls bool) (warning string) {
	if tls || isLoopback(addr) {
		return ""
	}
	return fmt.Sprintf("listening on %s without TLS: admin tokens cross the network in clear text; pass --tls-cert/--tls-key", addr)
}

// isLoopback reports whether a listen address binds only loopback
// interfaces. An empty host binds every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// logUnary logs every authenticated unary call: method, code, duration and
// principal (never the token). Refused calls are logged by auth.
func (s *Server) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	s.logCall(ctx, info.FullMethod, start, err)
	return resp, err
}

// logStream logs every authenticated stream when it ends.
func (s *Server) logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	s.logCall(ss.Context(), info.FullMethod, start, err)
	return err
}

func (s *Server) logCall(ctx context.Context, method string, start time.Time, err error) {
	st := status.Convert(err)
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", st.Code().String()),
		slog.Duration("duration", time.Since(start)),
	}
	if p, ok := auth.FromContext(ctx); ok && p.Name != "" {
		attrs = append(attrs, slog.String("principal", p.Name))
	}
	level := slog.LevelInfo
	if err != nil {
		attrs = append(attrs, slog.String("error", st.Message()))
		switch st.Code() {
		case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
			level = slog.LevelWarn
		}
	}
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") && err == nil {
		level = slog.LevelDebug
	}
	s.log.LogAttrs(ctx, level, "grpc call", attrs...)
}

// observer is m as a syncserver.Observer, nil when m is.
func observer(m *Metrics) syncserver.Observer {
	if m == nil {
		return nil
	}
	return m
}
