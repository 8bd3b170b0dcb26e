package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/metamcp/metamcp/dataplane"
	"github.com/metamcp/metamcp/dataplane/configcache"
	"github.com/metamcp/metamcp/dataplane/gateway"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/dataplane/telemetry"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/internal/gctune"
	"github.com/metamcp/metamcp/pkg/version"
)

// envSyncToken holds the data plane's sync token (secrets stay out of argv).
const envSyncToken = "METAMCP_SYNC_TOKEN"

type dataPlaneFlags struct {
	listen        string
	advertise     string
	controlPlane  string
	syncTokenFile string
	nodeID        string
	cacheFile     string
	stdioAllow    []string
	stdioAllowEnv []string
	allowedHosts  []string
	allowedOrigin []string
	tls           bool
	tlsCA         string
	tlsServerName string
	idleTTL       time.Duration
	listWait      time.Duration
	http          httpFlags
	maxRespMiB    int
	debugListen   string
	redisURL      string
	redisPrefix   string
	limitTimeout  time.Duration
	gcHeadroomMiB int

	trustedProxies []string
	publicURL      string
	authFailures   int
	auditSpoolDir  string
	auditSpoolMiB  int

	metricsListen string
	accessLog     string
	drainDelay    time.Duration
	drainTimeout  time.Duration
	otlpEndpoint  string
	traceRatio    float64

	upstream upstream.HTTPOptions
}

func newDataPlaneCommand(lf *logFlags) *cobra.Command {
	f := &dataPlaneFlags{}
	cmd := &cobra.Command{
		Use:   "dataplane",
		Short: "Run a data plane: serve MCP clients with the config the control plane streams",
		Long: `Run a data plane. It connects to the control plane's sync API, applies every
config snapshot it receives (validated first; a snapshot it cannot serve is
refused and the previous one kept), keeps the last good snapshot on disk and
serves from it at start when the control plane is unreachable.

Data planes are stateless replicas: run as many as you need behind a load
balancer. Each needs a sync token:
  mmctl create token dp --scope sync
and takes it from ` + envSyncToken + ` or --sync-token-file.

Replicas share a Redis (--redis-url) so that a client session can use any of
them: the server-to-client messages of a session (its GET stream, sampling and
elicitation answers, cancellations) travel between replicas through it, and
rate limits are counted there, once for all replicas. Without Redis a single
data plane works fully (its rate limits count in process); behind a load
balancer, run several only with Redis.

HTTP endpoints: /metamcp/ENDPOINT/mcp (Streamable HTTP) and /metamcp/ENDPOINT/sse
(legacy SSE) for MCP clients, /healthz (the process lives), /readyz (a config
is applied; it also says whether Redis answers, without failing readiness
when it does not). --debug-listen serves Go's profiles (/debug/pprof/) on a separate,
loopback-only address.

Memory: while its live heap is small, the data plane lets the heap grow up to
--gc-headroom (64 MiB) above it between collections, rather than Go's default of
twice the live heap: that costs a few tens of MiB and saves 4-10% of its CPU time
per call. Set GOGC to choose yourself, and GOMEMLIMIT in a memory-limited container.

Stdio servers: a data plane runs only the stdio servers --stdio-allow allows
(none by default), since whoever can change the config could otherwise run any
program on every replica. A pattern is the command, then one glob per argument;
the arguments must be as many unless the last word is "...":
  npx -y @modelcontextprotocol/server-*   npx with -y and one such package only
  uvx mcp-server-time ...                 uvx mcp-server-time with any further arguments
  /opt/mcp/*                              a program of /opt/mcp without arguments
A command without a slash matches only a command looked up in PATH. "*" matches
any characters, "/" and "@" too: "server-*" also matches "server-x@npm:other", so
name packages exactly where that matters. A server that sets a variable changing
what a process loads (LD_*, DYLD_*, NODE_OPTIONS, NPM_CONFIG_*, PYTHONPATH, PATH, ...)
is refused unless --stdio-allow-env names it. A refused server is left out (its
reason is in /readyz and mmctl get dataplanes), the rest is served.`,
		Example: `  export METAMCP_SYNC_TOKEN=mmt_...
  metamcp dataplane --control-plane cp.internal:12009 --tls --listen 0.0.0.0:12008 \
    --stdio-allow 'npx -y @modelcontextprotocol/server-*,uvx mcp-server-time ...'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := lf.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if _, err := configcache.ParseStdioPolicy(f.stdioAllow, f.stdioAllowEnv); err != nil {
				return usageError{err}
			}
			if f.auditSpoolMiB < 1 {
				return usageError{fmt.Errorf("--audit-spool-max %d: want 1 or more MiB", f.auditSpoolMiB)}
			}
			if err := checkUpstreamFlags(f.upstream); err != nil {
				return usageError{err}
			}
			if f.gcHeadroomMiB < 0 {
				return usageError{fmt.Errorf("--gc-headroom %d: want 0 (off) or more MiB", f.gcHeadroomMiB)}
			}
			if t := gctune.Start(uint64(f.gcHeadroomMiB)<<20, os.LookupEnv); t != nil {
				defer t.Stop()
				logger.Debug("GC percent tuned to the live heap", "headroom_mib", f.gcHeadroomMiB, "percent", t.Percent())
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDataPlane(ctx, logger, lf, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", dataplane.DefaultListen, "HTTP address for MCP clients and health checks; port 0 picks a free port")
	fl.StringVar(&f.advertise, "advertise-address", "", "address reported to the control plane (default: the listen address)")
	fl.StringVar(&f.controlPlane, "control-plane", defaultControlPlaneListen, "control plane gRPC address (host:port)")
	fl.StringVar(&f.syncTokenFile, "sync-token-file", "", "file holding the sync token (alternative: set "+envSyncToken+")")
	fl.StringVar(&f.nodeID, "node-id", "", "this replica's stable id in the registry (default: the host name)")
	fl.StringVar(&f.cacheFile, "cache-file", "", "where the last good snapshot is kept (default: USER_CACHE_DIR/metamcp/NODE_ID/snapshot.pb); it holds upstream credentials, so it is written 0600")
	fl.StringSliceVar(&f.stdioAllow, "stdio-allow", nil, "stdio servers this data plane may run, comma separated patterns (default: none); a pattern is the command then its arguments, each a glob (* any characters, ? one), quoted with '' to hold a space, the last one ... for any further arguments: 'npx -y @modelcontextprotocol/server-*,uvx mcp-server-time ...,/opt/mcp/* ...'; a command without / matches only one looked up in PATH; a server it does not allow is left out, the rest served")
	fl.StringSliceVar(&f.stdioAllowEnv, "stdio-allow-env", nil, "variables that change what a process loads (LD_*, DYLD_*, NODE_OPTIONS, NPM_CONFIG_*, PYTHONPATH, PATH, ...) a stdio server may set, comma separated names or globs (default: none); a server setting another is left out")
	fl.StringSliceVar(&f.allowedHosts, "allowed-hosts", nil, "host names clients may use to reach this data plane, comma separated; \"*\" allows any (default: loopback names and the --listen host; protects against DNS rebinding)")
	fl.StringSliceVar(&f.allowedOrigin, "allowed-origins", nil, "browser origins allowed to call MCP endpoints, e.g. https://app.example.com, comma separated; \"*\" allows any (default: none; requests without Origin are always allowed)")
	f.http.register(fl)
	fl.IntVar(&f.maxRespMiB, "upstream-max-response", upstream.DefaultMaxResponseBytes>>20, "MiB one message from an upstream may take (an HTTP response, an SSE event, a line of a stdio server); a larger one fails its call with an error saying so")
	fl.DurationVar(&f.idleTTL, "session-idle-ttl", gateway.DefaultSessionIdleTTL, "end client sessions unused for this long (their per_client upstream sessions too)")
	fl.DurationVar(&f.listWait, "list-wait", gateway.DefaultListWait, "how long initialize and a list operation wait for one upstream: a slower one is left out and its lists reach clients later through list_changed")
	fl.StringVar(&f.debugListen, "debug-listen", "", "loopback address serving Go's /debug/pprof/ (goroutines, heap, CPU profiles), e.g. 127.0.0.1:6060; off when empty")
	fl.StringVar(&f.redisURL, "redis-url", "", "Redis shared by the data-plane replicas, e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS; timeouts as URL parameters such as dial_timeout=2s); empty: no Redis, sessions cannot span replicas; keep a password out of argv by setting the variable instead")
	fl.StringVar(&f.redisPrefix, "redis-prefix", dataplane.DefaultRedisPrefix, "prefix of every Redis key and channel this data plane uses, so deployments sharing one Redis stay apart")
	fl.DurationVar(&f.limitTimeout, "ratelimit-timeout", ratelimit.DefaultTimeout, "longest a call waits for Redis to count it against rate limits; past it, or while Redis is away, each policy follows its on-redis-failure mode (open, closed or local)")
	fl.IntVar(&f.gcHeadroomMiB, "gc-headroom", gctune.DefaultHeadroom>>20, "MiB of heap the garbage collector lets grow above the live heap before it runs, while the live heap is small (GC percent between 100 and 400; 0: Go's default); ignored when GOGC is set")
	fl.StringSliceVar(&f.trustedProxies, "trusted-proxies", nil, "addresses or CIDR ranges of the reverse proxies and load balancers in front, comma separated (e.g. 10.0.0.0/8,127.0.0.1); only their X-Forwarded-For (the client address for audit, rate limits and the failed-login throttle), X-Forwarded-Proto and X-Forwarded-Host are believed (default: none)")
	fl.StringVar(&f.publicURL, "public-url", "", "scheme and host clients use to reach this data plane, e.g. https://mcp.example.com: the base of each endpoint's OAuth resource URL (default: what the request, or a trusted proxy, says)")
	fl.IntVar(&f.authFailures, "auth-failures-per-minute", gateway.DefaultAuthFailuresPerMinute, "failed authentications one client address may make per minute (and at once) before it gets 429 for a while; -1 turns the throttle off")
	fl.StringVar(&f.auditSpoolDir, "audit-spool-dir", "", "where call records wait until the control plane has stored them; they survive a restart (default: audit-spool beside --cache-file)")
	fl.IntVar(&f.auditSpoolMiB, "audit-spool-max", 256, "MiB the audit spool may take on disk; beyond it the oldest records are dropped (and counted in /readyz and the control plane's log)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "address serving Prometheus metrics at /metrics, e.g. 0.0.0.0:9090; empty: /metrics on the --listen port; \"off\": no metrics")
	fl.DurationVar(&f.drainDelay, "drain-delay", 0, "on SIGTERM, how long to keep serving with /readyz answering 503 before closing the listener, so that load balancers stop sending requests first (e.g. 5s on Kubernetes)")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, how long calls in flight may run on once the listener is closed; past it they are cut")
	fl.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "OpenTelemetry collector (OTLP over HTTP) to send a span per MCP request and per upstream call to, e.g. http://otel-collector:4318; empty: no tracing")
	fl.Float64Var(&f.traceRatio, "trace-sample-ratio", 1, "share of the traces started here that are kept, between 0 and 1 (a client's sampling decision is followed)")
	fl.StringVar(&f.accessLog, "access-log", "off", "access log of MCP requests, one line each in the --log-format: off, on, or errors (only requests that failed)")
	fl.BoolVar(&f.tls, "tls", false, "connect to the control plane over TLS (the system CA pool unless --tls-ca)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA file (PEM) that signed the control plane's certificate; implies --tls")
	fl.StringVar(&f.tlsServerName, "tls-server-name", "", "name to verify in the control plane's certificate (default: the host of --control-plane)")
	addUpstreamFlags(fl, &f.upstream)
	return cmd
}

func loadSyncToken(envValue, file string) (string, error) {
	switch {
	case envValue != "" && file != "":
		return "", usageError{fmt.Errorf("both %s and --sync-token-file are set: use one", envSyncToken)}
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read --sync-token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--sync-token-file %s is empty", file)
		}
		return tok, nil
	case envValue != "":
		return strings.TrimSpace(envValue), nil
	}
	return "", usageError{fmt.Errorf("no sync token: create one with `mmctl create token NAME --scope sync` and set %s or --sync-token-file", envSyncToken)}
}

func runDataPlane(ctx context.Context, logger *slog.Logger, lf *logFlags, f *dataPlaneFlags) error {
	token, err := loadSyncToken(os.Getenv(envSyncToken), f.syncTokenFile)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	node := f.nodeID
	if node == "" {
		node = host
	}
	if node == "" {
		return usageError{errors.New("cannot tell the host name: pass --node-id")}
	}
	cacheFile := f.cacheFile
	if cacheFile == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no cache directory (%w): pass --cache-file", err)
		}
		cacheFile = filepath.Join(dir, "metamcp", node, "snapshot.pb")
	}
	var lc net.ListenConfig
	if f.debugListen != "" {
		stopDebug, err := serveDebug(ctx, &lc, f.debugListen, logger)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	lis, err := lc.Listen(ctx, "tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another data plane running? pick another address with --listen)", f.listen, err)
	}
	advertise := f.advertise
	if advertise == "" {
		advertise = lis.Addr().String()
	}
	proxies, err := parseTrustedProxies(f.trustedProxies)
	if err != nil {
		lis.Close()
		return err
	}
	publicURL, err := parsePublicURL(f.publicURL)
	if err != nil {
		lis.Close()
		return err
	}
	if f.drainDelay < 0 || f.drainTimeout <= 0 {
		lis.Close()
		return usageError{fmt.Errorf("--drain-delay %v, --drain-timeout %v: want a delay of 0 or more and a timeout above 0", f.drainDelay, f.drainTimeout)}
	}
	httpOpts, err := f.http.options()
	if err != nil {
		lis.Close()
		return err
	}
	if f.maxRespMiB < 1 {
		lis.Close()
		return usageError{fmt.Errorf("--upstream-max-response %d: want 1 or more MiB", f.maxRespMiB)}
	}
	tel, err := lf.telemetry(f.metricsListen, f.accessLog)
	if err != nil {
		lis.Close()
		return err
	}
	if f.traceRatio <= 0 || f.traceRatio > 1 {
		lis.Close()
		return usageError{fmt.Errorf("--trace-sample-ratio %v: want a share above 0 and at most 1", f.traceRatio)}
	}
	tracing, err := telemetry.NewTracing(telemetry.TracingOptions{Endpoint: f.otlpEndpoint, SampleRatio: f.traceRatio,
		Service: "metamcp-dataplane", Instance: node, Version: version.String()})
	if err != nil {
		lis.Close()
		return usageError{fmt.Errorf("--otlp-endpoint: %w", err)}
	}
	if tracing != nil {
		tel.Tracer = tracing.Tracer()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := tracing.Shutdown(sctx); err != nil {
				logger.Warn("export the last spans", "err", err)
			}
		}()
		logger.Info("tracing MCP requests", "otlp_endpoint", f.otlpEndpoint, "sample_ratio", f.traceRatio)
	}
	srv, err := dataplane.New(dataplane.Options{
		Sync: syncclient.Options{
			Addr:       f.controlPlane,
			Token:      token,
			TLS:        f.tls || f.tlsCA != "",
			CAFile:     f.tlsCA,
			ServerName: f.tlsServerName,
			NodeID:     node,
			Hostname:   host,
			Version:    version.String(),
			Address:    advertise,
		},
		CacheFile:      cacheFile,
		Pool:           upstream.PoolOptions{HTTP: f.upstream, MaxResponseBytes: int64(f.maxRespMiB) << 20},
		StdioAllow:     f.stdioAllow,
		StdioAllowEnv:  f.stdioAllowEnv,
		AllowedHosts:   allowedHosts(f.allowedHosts, lis.Addr().String(), f.listen),
		AllowedOrigins: f.allowedOrigin,
		SessionIdleTTL: f.idleTTL,
		ListWait:       f.listWait,
		HTTP:           httpOpts,
		Redis:          dataplane.RedisOptions{URL: f.redisURL, Prefix: f.redisPrefix},
		Audit:          dataplane.AuditOptions{SpoolDir: f.auditSpoolDir, SpoolMaxBytes: int64(f.auditSpoolMiB) << 20},
		RateLimit:      dataplane.RateLimitOptions{Timeout: f.limitTimeout},
		Logger:         logger,

		TrustedProxies:        proxies,
		PublicURL:             publicURL,
		AuthFailuresPerMinute: f.authFailures,
		Telemetry:             tel,
		DrainDelay:            f.drainDelay,
		ShutdownTimeout:       f.drainTimeout,
	})
	if err != nil {
		lis.Close()
		return err
	}
	if m := srv.Metrics(); m != nil && !tel.MetricsOnClientPort {
		stop, err := serveMetrics(ctx, &lc, f.metricsListen, dataplane.MetricsHandler(m), logger)
		if err != nil {
			lis.Close()
			return err
		}
		defer stop()
	}
	logger.Info("starting data plane", "version", version.String(), "node", node, "control_plane", f.controlPlane, "cache_file", cacheFile)
	return srv.Serve(ctx, lis)
}

// parseTrustedProxies reads --trusted-proxies: addresses or CIDR ranges.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, usageError{fmt.Errorf("--trusted-proxies: %q is neither an address nor a CIDR range (e.g. 10.0.0.0/8 or 127.0.0.1)", s)}
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// parsePublicURL checks --public-url: an http or https URL with a host and
// no path, query or fragment.
func parsePublicURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usageError{fmt.Errorf("--public-url %q: want the scheme and host clients use, e.g. https://mcp.example.com", s)}
	}
	if strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", usageError{fmt.Errorf("--public-url %q: only the scheme and host (and port) are allowed, no path, query or user", s)}
	}
	return u.Scheme + "://" + u.Host, nil
}

// allowedHosts adds the host of the --listen address to the configured list
// when it names one (not a wildcard such as 0.0.0.0 or an empty host).
func allowedHosts(configured []string, bound, listen string) []string {
	out := slices.Clone(configured)
	for _, addr := range []string{listen, bound} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			continue
		}
		if !slices.Contains(out, host) {
			out = append(out, host)
		}
	}
	return out
}

// serveDebug serves /debug/pprof/ on a loopback address until the returned
// stop is called. Profiles reveal internals, so only loopback is allowed.
func serveDebug(ctx context.Context, lc *net.ListenConfig, addr string, logger *slog.Logger) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("invalid --debug-listen %q: %w (use HOST:PORT, e.g. 127.0.0.1:6060)", addr, err)}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, usageError{fmt.Errorf("--debug-listen %q is not a loopback address: profiles expose internals, use 127.0.0.1 or [::1]", addr)}
	}
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --debug-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("debug server stopped", "err", err)
		}
	}()
	logger.Info("debug server listening", "addr", lis.Addr().String())
	return func() {
		_ = hs.Close()
		<-done
	}, nil
}
