package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/controlplane/store/postgres"
	"github.com/metamcp/metamcp/dataplane"
	"github.com/metamcp/metamcp/pkg/gcra"
	"github.com/metamcp/metamcp/pkg/version"
)

// Environment variables read directly rather than through a flag mirror:
// secrets belong in the environment or a file, never in argv.
const (
	envAdminToken = "METAMCP_ADMIN_TOKEN"
	envSecretKey  = "METAMCP_SECRET_KEY"
)

// defaultControlPlaneListen is the control plane's gRPC address (admin and
// sync on one port).
const defaultControlPlaneListen = controlplane.DefaultListen

// makeSecretHint tells a user how to make a random secret.
const makeSecretHint = "head -c 32 /dev/urandom | base64"

type controlPlaneFlags struct {
	listen         string
	databaseURL    string
	adminTokenFile string
	secretKeyFile  string
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
	auditRetention time.Duration
	redisURL       string
	redisPrefix    string
	metricsListen  string
	syncTokenFile  string
}

func newControlPlaneCommand(lf *logFlags) *cobra.Command {
	f := &controlPlaneFlags{}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane (admin and sync gRPC API) on Postgres",
		Long: `Run the control plane: it keeps the config in Postgres, serves the admin API
that mmctl speaks and the sync API that data planes connect to, both on one
gRPC port. Database migrations run at start.

Secrets come from the environment or files, never from flags:
  ` + envSecretKey + `   32-byte key that encrypts secrets at rest (base64 or 64 hex
                       chars), or --secret-key-file. Make one: ` + makeSecretHint + `
  ` + envAdminToken + `  bootstrap admin token for mmctl, or --admin-token-file.
                       Needed until admin tokens exist in the store (mmctl create token).
  ` + envBootstrapSyncToken + `  optional: a sync token data planes may use from the
                       start (give them the same as METAMCP_SYNC_TOKEN), beside those
                       mmctl creates; or --bootstrap-sync-token-file. Kept only as a hash.

Several control planes may run against one database.`,
		Example: `  export METAMCP_DATABASE_URL='postgres://metamcp:PASSWORD@localhost:5432/metamcp'
  export METAMCP_SECRET_KEY="$(` + makeSecretHint + `)"
  export METAMCP_ADMIN_TOKEN="$(` + makeSecretHint + `)"
  metamcp controlplane --listen 127.0.0.1:12009`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := lf.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runControlPlane(ctx, logger, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", defaultControlPlaneListen, "address of the gRPC API (admin and sync); port 0 picks a free port")
	fl.StringVar(&f.databaseURL, "database-url", "", "Postgres connection URL, e.g. postgres://USER:PASSWORD@HOST:5432/DB (required)")
	fl.StringVar(&f.redisURL, "redis-url", "", "the data planes' Redis, for mmctl ratelimit status and reset (standalone, Sentinel with master_name=, Cluster with cluster=true; rediss:// for TLS); empty: those commands are unavailable; keep a password out of argv by setting the variable instead")
	fl.StringVar(&f.redisPrefix, "redis-prefix", dataplane.DefaultRedisPrefix, "the data planes' --redis-prefix")
	fl.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the bootstrap admin token (alternative: set "+envAdminToken+")")
	fl.StringVar(&f.secretKeyFile, "secret-key-file", "", "file holding the key that encrypts secrets at rest (alternative: set "+envSecretKey+")")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate file (PEM); serve TLS when set, with --tls-key")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fl.StringVar(&f.syncTokenFile, "bootstrap-sync-token-file", "", "file holding a sync token data planes may use from the start, beside those made with mmctl (alternative: set "+envBootstrapSyncToken+"); kept only as a hash")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "address serving Prometheus metrics at /metrics over HTTP, e.g. 0.0.0.0:9091 (default: off; the gRPC port serves no HTTP)")
	fl.StringVar(&f.tlsClientCA, "tls-client-ca", "", "CA file (PEM) to require and verify client certificates (mutual TLS)")
	f.auditRetention = defaultAuditRetention
	fl.Var(daysDuration{&f.auditRetention}, "audit-retention", "how long call records (the audit trail) are kept, in days (90d) or as a duration (36h); older ones are deleted periodically; 0 keeps them forever")
	return cmd
}

func (f *controlPlaneFlags) validate() error {
	if f.databaseURL == "" {
		return usageError{errors.New("no database: pass --database-url or set METAMCP_DATABASE_URL " +
			"(e.g. postgres://metamcp:PASSWORD@localhost:5432/metamcp); for a local try without Postgres run `metamcp dev`")}
	}
	return validateTLSFlags(f.tlsCert, f.tlsKey, f.tlsClientCA)
}

func validateTLSFlags(cert, key, clientCA string) error {
	if (cert == "") != (key == "") {
		return usageError{errors.New("--tls-cert and --tls-key go together: pass both or neither")}
	}
	if clientCA != "" && cert == "" {
		return usageError{errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only over TLS")}
	}
	return nil
}

func runControlPlane(ctx context.Context, logger *slog.Logger, f *controlPlaneFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	// Cheap checks first, so a misconfigured deployment fails before it
	// touches the database.
	key, err := loadSecretKey(os.Getenv(envSecretKey), f.secretKeyFile)
	if err != nil {
		return err
	}
	sealer, err := secret.New(key)
	if err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	adminToken, err := loadAdminToken(logger, os.Getenv(envAdminToken), f.adminTokenFile)
	if err != nil {
		return err
	}
	syncToken, err := loadBootstrapSyncToken(logger, os.Getenv(envBootstrapSyncToken), f.syncTokenFile)
	if err != nil {
		return err
	}
	var syncTokenHash []byte
	if syncToken != "" {
		syncTokenHash = auth.HashToken(syncToken)
		logger.Info("data planes may sync with the bootstrap sync token", "principal", auth.BootstrapSyncName)
	}

	logger.Info("starting control plane", "version", version.String())
	st, err := postgres.Open(ctx, f.databaseURL, postgres.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("open database: %w (check --database-url / METAMCP_DATABASE_URL and that Postgres is running)", err)
	}
	defer closeStore(logger, st)

	var adminTokenHash []byte
	if adminToken != "" {
		adminTokenHash = auth.HashToken(adminToken)
	} else {
		ok, err := hasAdminTokens(ctx, st)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no admin token: set %s or pass --admin-token-file "+
				"(make one with `%s`); it is needed until admin tokens exist in the store (mmctl create token NAME --scope admin)",
				envAdminToken, makeSecretHint)
		}
		logger.Info("no bootstrap admin token; admin tokens from the store are accepted")
	}

	var limits admin.RateLimits
	if f.redisURL != "" {
		rdb, err := gcra.NewRedisClient(f.redisURL, "metamcp-controlplane")
		if err != nil {
			return usageError{fmt.Errorf("--redis-url: %w", err)}
		}
		defer rdb.Close()
		limits = admin.RateLimits{Store: gcra.NewRedis(rdb), Prefix: f.redisPrefix, Backend: "redis"}
	}
	var metrics *controlplane.Metrics
	if f.metricsListen != "" {
		metrics = controlplane.NewMetrics()
		var lc net.ListenConfig
		stop, err := serveMetrics(ctx, &lc, f.metricsListen, promhttp.HandlerFor(metrics.Registry(), promhttp.HandlerOpts{}), logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return serveControlPlane(ctx, logger, st, sealer, controlplane.Options{
		Listen:         f.listen,
		TLSCertFile:    f.tlsCert,
		TLSKeyFile:     f.tlsKey,
		ClientCAFile:   f.tlsClientCA,
		AdminTokenHash: adminTokenHash,
		Logger:         logger,
		AuditRetention: f.auditRetention,
		RateLimits:     limits,
		Metrics:        metrics,
		SyncTokenHash:  syncTokenHash,
	}, nil)
}

// serveControlPlane listens on opts.Listen and serves the control plane until
// ctx is done. onListening, when set, is called with the bound address before
// serving starts (`metamcp dev` prints its banner there).
func serveControlPlane(ctx context.Context, logger *slog.Logger, st store.Store, sealer *secret.Sealer,
	opts controlplane.Options, onListening func(addr string),
) error {
	// Serve warns by itself when it listens beyond loopback without TLS.
	srv, err := controlplane.New(st, sealer, opts)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another metamcp running? pick another address with --listen)", opts.Listen, err)
	}
	addr := lis.Addr().String()
	logger.Info("control plane listening", "addr", addr, "tls", opts.TLSCertFile != "")
	if onListening != nil {
		onListening(addr)
	}
	// Serve returns nil after a graceful stop (ctx done).
	if err := srv.Serve(ctx, lis); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	logger.Info("control plane stopped")
	return nil
}

// loadSecretKey loads the key that encrypts secrets at rest from the
// environment value or the file.
func loadSecretKey(envValue, file string) ([]byte, error) {
	if envValue == "" && file == "" {
		return nil, fmt.Errorf("no secret key: set %s to a 32-byte key (base64 or 64 hex chars; make one with `%s`) "+
			"or pass --secret-key-file; keep it safe: stored secrets cannot be read without it", envSecretKey, makeSecretHint)
	}
	if envValue != "" && file != "" {
		return nil, usageError{fmt.Errorf("both %s and --secret-key-file are set: use one", envSecretKey)}
	}
	key, err := secret.LoadKey(envValue, file)
	if err != nil {
		// LoadKey's error names the source (variable or file).
		return nil, fmt.Errorf("%w (the key is 32 bytes, written as base64 or 64 hex chars; make one with `%s`)",
			err, makeSecretHint)
	}
	return key, nil
}

// minAdminTokenLen is the shortest bootstrap admin token accepted without a
// warning.
const minAdminTokenLen = 16

// loadAdminToken returns the bootstrap admin token from the environment value
// or the file, or "" when neither is set.
func loadAdminToken(logger *slog.Logger, envValue, file string) (string, error) {
	if envValue != "" && file != "" {
		return "", usageError{fmt.Errorf("both %s and --admin-token-file are set: use one", envAdminToken)}
	}
	token := strings.TrimSpace(envValue)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read admin token: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("admin token file %s is empty: write a token into it (make one with `%s`)", file, makeSecretHint)
		}
	}
	if token != "" && len(token) < minAdminTokenLen {
		logger.Warn("the bootstrap admin token is short and easy to guess; use a random one", "length", len(token), "suggestion", makeSecretHint)
	}
	return token, nil
}

// envBootstrapSyncToken holds the control plane's bootstrap sync token.
const envBootstrapSyncToken = "METAMCP_BOOTSTRAP_SYNC_TOKEN"

// loadBootstrapSyncToken returns the bootstrap sync token from the
// environment value or the file, or "" when neither is set.
func loadBootstrapSyncToken(logger *slog.Logger, envValue, file string) (string, error) {
	if envValue != "" && file != "" {
		return "", usageError{fmt.Errorf("both %s and --bootstrap-sync-token-file are set: use one", envBootstrapSyncToken)}
	}
	token := strings.TrimSpace(envValue)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read --bootstrap-sync-token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return "", fmt.Errorf("--bootstrap-sync-token-file %s is empty: write a token into it (make one with `%s`)", file, makeSecretHint)
		}
	}
	if token != "" && len(token) < minAdminTokenLen {
		logger.Warn("the bootstrap sync token is short and easy to guess; use a random one", "length", len(token), "suggestion", makeSecretHint)
	}
	return token, nil
}

// hasAdminTokens reports whether the store holds an admin token that is
// neither revoked nor expired. Token records are Token messages in proto wire
// form (the admin service's encoding).
func hasAdminTokens(ctx context.Context, st store.Store) (bool, error) {
	found := false
	now := time.Now()
	err := st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		recs, err := tx.List(ctx, store.KindToken)
		if err != nil {
			return err
		}
		for _, r := range recs {
			var t metamcpv1.Token
			if err := proto.Unmarshal(r.Data, &t); err != nil {
				return fmt.Errorf("decode token %q: %w", r.Name, err)
			}
			if t.GetScope() != metamcpv1.TokenScope_TOKEN_SCOPE_ADMIN || t.GetRevokeTime() != nil {
				continue
			}
			if t.GetExpireTime() != nil && !t.GetExpireTime().AsTime().After(now) {
				continue
			}
			found = true
			return nil
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("look for admin tokens in the store: %w", err)
	}
	return found, nil
}

func closeStore(logger *slog.Logger, st io.Closer) {
	if err := st.Close(); err != nil {
		logger.Warn("close store", "err", err)
	}
}
