package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/admin"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
	"github.com/metamcp/metamcp/dataplane"
	"github.com/metamcp/metamcp/dataplane/syncclient"
	"github.com/metamcp/metamcp/pkg/gcra"
	"github.com/metamcp/metamcp/pkg/version"
)

// Files kept in the dev data directory.
const (
	devStoreFile      = "metamcp.db"
	devSecretKeyFile  = "secret.key"
	devAdminTokenFile = "admin-token"
	devSyncTokenFile  = "sync-token"
	devAPIKeyFile     = "api-key"
	devSnapshotFile   = "snapshot.pb"
)

// What `metamcp dev` seeds on its first run.
const (
	devServer     = "demo"
	devNamespace  = "default"
	devEndpoint   = "default"
	devAPIKeyName = "dev"
	devSyncToken  = "dev-dataplane"
	devNodeID     = "dev"
)

type devFlags struct {
	dataDir        string
	listen         string
	httpListen     string
	allowedHosts   []string
	auditRetention time.Duration
	http           httpFlags
}

func newDevCommand(lf *logFlags, stdout io.Writer) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run MetaMCP in one process with local state (no Postgres, no Redis)",
		Long: `Run MetaMCP in one process for a first try or for development: the control
plane on an embedded SQLite store kept in --data-dir, and a data plane joined
to it over a real gRPC sync stream on loopback, exactly as separate processes
would be.

The first run creates a secret key, an admin token, a sync token for the data
plane, and a working setup: the server "demo" (this binary's built-in demo MCP
server, so it works offline), the namespace and endpoint "default" and the API
key "dev" for it. State persists between runs; delete the directory to start
over.

The admin token and the API key are stored in clear text in the data
directory. That is fine for a laptop and wrong for a shared machine: use
'metamcp controlplane' and 'metamcp dataplane' there.

Its data plane runs any stdio command a server names, with any environment
(whoever holds the admin token runs programs as you); 'metamcp dataplane'
runs only the commands its --stdio-allow allows.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := lf.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDev(ctx, logger, stdout, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", ".metamcp", "directory for the store, the secret key and the tokens (created 0700)")
	fl.StringVar(&f.listen, "listen", defaultControlPlaneListen, "address of the control plane's gRPC API; port 0 picks a free port")
	fl.StringVar(&f.httpListen, "http-listen", dataplane.DefaultListen, "address of the data plane's HTTP server for MCP clients; port 0 picks a free port")
	f.http.register(fl)
	fl.StringSliceVar(&f.allowedHosts, "allowed-hosts", nil, "host names clients may use to reach the data plane, comma separated; \"*\" allows any (default: loopback names and the --http-listen host; protects against DNS rebinding)")
	f.auditRetention = defaultAuditRetention
	fl.Var(daysDuration{&f.auditRetention}, "audit-retention", "how long call records (the audit trail) are kept, in days (90d) or as a duration (36h); 0 keeps them forever")
	return cmd
}

func runDev(ctx context.Context, logger *slog.Logger, stdout io.Writer, f *devFlags) error {
	dir, err := ensureDataDir(f.dataDir)
	if err != nil {
		return err
	}
	key, err := secret.LoadOrCreateKeyFile(filepath.Join(dir, devSecretKeyFile))
	if err != nil {
		return fmt.Errorf("dev secret key: %w", err)
	}
	sealer, err := secret.New(key)
	if err != nil {
		return fmt.Errorf("dev secret key %s: %w (delete it to make a new one; stored secrets are then lost)",
			filepath.Join(dir, devSecretKeyFile), err)
	}
	token, err := loadOrCreateDevToken(filepath.Join(dir, devAdminTokenFile))
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary for the demo server: %w", err)
	}

	// The data plane's port first: when it is busy, nothing has started yet.
	var lc net.ListenConfig
	httpLis, err := lc.Listen(ctx, "tcp", f.httpListen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another metamcp dev running? pick another address with --http-listen)", f.httpListen, err)
	}
	defer httpLis.Close() // Serve closes it too; this covers the early returns

	logger.Info("starting metamcp dev", "version", version.String(), "data_dir", dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, devStoreFile), sqlite.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("open dev store in %s: %w", dir, err)
	}
	defer closeStore(logger, st)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	// stop ends what runs so far after a failed setup.
	stop := func(err error) error {
		cancel()
		return errors.Join(err, g.Wait())
	}
	cpAddr := make(chan string, 1)
	// Rate limits count in this process, in one store both planes use.
	limits := gcra.NewMemory()
	g.Go(func() error {
		return serveControlPlane(gctx, logger, st, sealer, controlplane.Options{
			Listen:         f.listen,
			AdminTokenHash: auth.HashToken(token),
			Logger:         logger,
			AuditRetention: f.auditRetention,
			RateLimits:     admin.RateLimits{Store: limits, Prefix: dataplane.DefaultRedisPrefix, Backend: "in-process"},
		}, func(addr string) { cpAddr <- addr })
	})
	var addr string
	select {
	case addr = <-cpAddr:
	case <-gctx.Done():
		return g.Wait()
	}

	// Everything else joins the control plane the way separate processes
	// would: over its gRPC API on loopback.
	state, err := setUpDev(gctx, logger, addr, token, dir, exe)
	if err != nil {
		return stop(err)
	}
	httpOpts, err := f.http.options()
	if err != nil {
		return stop(err)
	}
	dp, err := dataplane.New(dataplane.Options{
		HTTP: httpOpts,
		Sync: syncclient.Options{
			Addr:     addr,
			Token:    state.syncToken,
			NodeID:   devNodeID,
			Hostname: hostname(),
			Version:  version.String(),
			Address:  httpLis.Addr().String(),
		},
		CacheFile:    filepath.Join(dir, devSnapshotFile),
		AllowedHosts: allowedHosts(f.allowedHosts, httpLis.Addr().String(), f.httpListen),
		// Dev mode runs what its owner configures, as before the stdio
		// policy existed; the banner says so.
		StdioAllowAny: true,
		// No Redis: the data plane counts rate limits in process, in the
		// store the control plane reads for mmctl ratelimit.
		RateLimit: dataplane.RateLimitOptions{Store: limits},
		Logger:    logger.With("plane", "data"),
		// The data plane's metrics, at /metrics on its port.
		Telemetry: dataplane.TelemetryOptions{Metrics: true, MetricsOnClientPort: true},
	})
	if err != nil {
		return stop(fmt.Errorf("data plane: %w", err))
	}
	g.Go(func() error { return dp.Serve(gctx, httpLis) })

	waitReady(gctx, logger, dp)
	if gctx.Err() == nil {
		scheme := "http://"
		if httpOpts.TLSCert != "" {
			scheme = "https://"
		}
		base := scheme + httpLis.Addr().String()
		if err := printDevBanner(stdout, devBanner{
			DataDir: dir,
			Addr:    addr,
			Token:   token,
			Version: version.String(),
			HTTP:    base,
			URL:     base + "/metamcp/" + devEndpoint + "/mcp",
			APIKey:  state.apiKey,
			Seeded:  state.seeded,
			Mmctl:   mmctlHint(),
		}); err != nil {
			logger.Warn("print banner", "err", err)
		}
	}
	return g.Wait()
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// waitReady waits, bounded, until the data plane serves a config, so the
// banner is printed when clients can connect.
func waitReady(ctx context.Context, logger *slog.Logger, dp *dataplane.Server) {
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		changed := dp.Cache().Changed()
		if dp.Cache().Ready() {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-deadline.C:
			logger.Warn("the data plane has no config yet after 15s; it keeps trying (see the sync errors above)")
			return
		}
	}
}

// devState is what setUpDev found or made.
type devState struct {
	syncToken string
	// apiKey is the dev API key kept in the data dir, "" when there is none.
	apiKey string
	// seeded is true on the run that seeded the store.
	seeded bool
}

// setUpDev seeds an empty store (the demo server, namespace, endpoint and
// API key) and makes sure the data plane has a sync token, through the admin
// API at addr.
func setUpDev(ctx context.Context, logger *slog.Logger, addr, adminToken, dir, exe string) (*devState, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to the dev control plane at %s: %w", addr, err)
	}
	defer conn.Close()
	admin := metamcpv1.NewAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken), 30*time.Second)
	defer cancel()

	state := &devState{}
	empty, err := devStoreEmpty(ctx, admin)
	if err != nil {
		return nil, err
	}
	if empty {
		if err := seedDev(ctx, admin, dir, exe); err != nil {
			return nil, err
		}
		state.seeded = true
		logger.Info("seeded the dev store", "server", devServer, "namespace", devNamespace, "endpoint", devEndpoint, "api_key", devAPIKeyName)
	} else if err := refreshDemoCommand(ctx, logger, admin, exe); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, devAPIKeyFile)); err == nil {
		state.apiKey = strings.TrimSpace(string(b))
	}
	state.syncToken, err = devSyncTokenFor(ctx, admin, filepath.Join(dir, devSyncTokenFile))
	if err != nil {
		return nil, err
	}
	return state, nil
}

// devStoreEmpty reports whether the store has no servers, namespaces or
// endpoints: a first run (or a store someone emptied on purpose, which then
// gets the demo setup again).
func devStoreEmpty(ctx context.Context, admin metamcpv1.AdminServiceClient) (bool, error) {
	servers, err := admin.ListServers(ctx, &metamcpv1.ListServersRequest{})
	if err != nil {
		return false, fmt.Errorf("list servers: %w", err)
	}
	namespaces, err := admin.ListNamespaces(ctx, &metamcpv1.ListNamespacesRequest{})
	if err != nil {
		return false, fmt.Errorf("list namespaces: %w", err)
	}
	endpoints, err := admin.ListEndpoints(ctx, &metamcpv1.ListEndpointsRequest{})
	if err != nil {
		return false, fmt.Errorf("list endpoints: %w", err)
	}
	return len(servers.GetServers()) == 0 && len(namespaces.GetNamespaces()) == 0 && len(endpoints.GetEndpoints()) == 0, nil
}

// seedDev creates the demo server, namespace and endpoint in one apply, then
// the API key, whose secret is kept in the data dir because it is shown once.
func seedDev(ctx context.Context, admin metamcpv1.AdminServiceClient, dir, exe string) error {
	_, err := admin.Apply(ctx, &metamcpv1.ApplyRequest{Resources: []*metamcpv1.Resource{
		{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{
			Name:        devServer,
			Description: "The demo MCP server built into metamcp (echo, add, now, random_number)",
			Transport:   &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: exe, Args: []string{"demo-server"}}},
		}}},
		{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{
			Name:        devNamespace,
			Description: "Created by metamcp dev",
			Members:     []*metamcpv1.NamespaceMember{{Server: devServer}},
		}}},
		{Kind: &metamcpv1.Resource_Endpoint{Endpoint: &metamcpv1.Endpoint{
			Name:        devEndpoint,
			Description: "Created by metamcp dev",
			Namespace:   devNamespace,
		}}},
	}})
	if err != nil {
		return fmt.Errorf("seed the dev store: %w", err)
	}
	resp, err := admin.CreateApiKey(ctx, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{
		Name:        devAPIKeyName,
		Description: "Created by metamcp dev; the key is kept in the data dir",
		Endpoints:   []string{devEndpoint},
	}})
	if status.Code(err) == codes.AlreadyExists {
		// A key from an earlier seeding survived; its secret is in the data
		// dir if it was not deleted.
		return nil
	}
	if err != nil {
		return fmt.Errorf("create the dev API key: %w", err)
	}
	if err := writeSecretFile(filepath.Join(dir, devAPIKeyFile), resp.GetKey()); err != nil {
		return fmt.Errorf("keep the dev API key: %w", err)
	}
	return nil
}

// refreshDemoCommand points the seeded demo server at this binary when the
// binary it named is gone (a moved checkout, a go run temp file).
func refreshDemoCommand(ctx context.Context, logger *slog.Logger, admin metamcpv1.AdminServiceClient, exe string) error {
	srv, err := admin.GetServer(ctx, &metamcpv1.GetServerRequest{Name: devServer})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get server %q: %w", devServer, err)
	}
	stdio := srv.GetStdio()
	if stdio == nil || !slices.Equal(stdio.GetArgs(), []string{"demo-server"}) || stdio.GetCommand() == exe {
		return nil
	}
	if _, err := os.Stat(stdio.GetCommand()); err == nil {
		return nil
	}
	stdio.Command = exe
	if _, err := admin.UpdateServer(ctx, &metamcpv1.UpdateServerRequest{Server: srv}); err != nil {
		return fmt.Errorf("point server %q at %s: %w", devServer, exe, err)
	}
	logger.Info("the demo server's binary moved; it now runs this one", "server", devServer, "command", exe)
	return nil
}

// devSyncTokenFor returns the data plane's sync token kept at path, creating
// one through the admin API on the first run.
func devSyncTokenFor(ctx context.Context, admin metamcpv1.AdminServiceClient, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read the dev sync token: %w", err)
	}
	name := devSyncToken
	for attempt := 0; ; attempt++ {
		resp, err := admin.CreateToken(ctx, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{
			Name:        name,
			Description: "The metamcp dev data plane's sync token; kept in the data dir",
			Scope:       metamcpv1.TokenScope_TOKEN_SCOPE_SYNC,
		}})
		if status.Code(err) == codes.AlreadyExists && attempt < 3 {
			// The file was deleted but the token is still there: make another.
			raw := make([]byte, 3)
			_, _ = rand.Read(raw)
			name = devSyncToken + "-" + hex.EncodeToString(raw)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create the dev sync token: %w", err)
		}
		if err := writeSecretFile(path, resp.GetSecret()); err != nil {
			return "", fmt.Errorf("keep the dev sync token: %w", err)
		}
		return resp.GetSecret(), nil
	}
}

// writeSecretFile writes value to path, readable by its owner only.
func writeSecretFile(path, value string) error {
	return os.WriteFile(path, []byte(value+"\n"), 0o600)
}

// ensureDataDir creates dir (0700) when it does not exist and returns its
// absolute path. An existing directory is used as it is.
func ensureDataDir(dir string) (string, error) {
	if dir == "" {
		return "", usageError{errors.New("--data-dir must not be empty")}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return "", fmt.Errorf("create data dir: %w", err)
		}
	case err != nil:
		return "", fmt.Errorf("data dir: %w", err)
	case !fi.IsDir():
		return "", fmt.Errorf("data dir %s exists and is not a directory: pass another --data-dir", abs)
	}
	return abs, nil
}

// devTokenPrefix marks admin tokens that metamcp dev made.
const devTokenPrefix = "mmt_dev_"

// loadOrCreateDevToken reads the dev admin token from path, creating the file
// (0600) with a fresh random token on the first run.
func loadOrCreateDevToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		token := strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("dev admin token file %s is empty: delete it and a new token is made", path)
		}
		return token, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read dev admin token: %w", err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate dev admin token: %w", err)
	}
	token := devTokenPrefix + hex.EncodeToString(raw)
	// O_EXCL: two dev processes starting at once must not hand out different
	// tokens for one store.
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadOrCreateDevToken(path)
	}
	if err != nil {
		return "", fmt.Errorf("create dev admin token: %w", err)
	}
	if _, err := fh.WriteString(token + "\n"); err != nil {
		_ = fh.Close()
		_ = os.Remove(path)
		return "", fmt.Errorf("write dev admin token: %w", err)
	}
	if err := fh.Close(); err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("write dev admin token: %w", err)
	}
	return token, nil
}

// devBanner is what `metamcp dev` tells a person once it is ready.
type devBanner struct {
	DataDir string
	Addr    string
	Token   string
	Version string
	// HTTP is the data plane's base URL; URL is the default endpoint's.
	HTTP, URL string
	// APIKey is the dev key kept in the data dir, "" when there is none.
	APIKey string
	// Seeded is true on the run that created the demo setup.
	Seeded bool
	// Mmctl says how to put mmctl on PATH, "" when it is there already.
	Mmctl string
}

// mmctlHint says how to put mmctl on PATH: the directory of this binary
// when mmctl was built next to it, else how to build it; "" when mmctl is
// on PATH already.
func mmctlHint() string {
	if _, err := exec.LookPath("mmctl"); err == nil {
		return ""
	}
	if self, err := os.Executable(); err == nil {
		dir := filepath.Dir(self)
		if runtime.GOOS == "windows" {
			if _, err := os.Stat(filepath.Join(dir, "mmctl.exe")); err == nil {
				return fmt.Sprintf("$env:PATH = \"%s;$env:PATH\"   # mmctl is next to metamcp", dir)
			}
		} else if _, err := os.Stat(filepath.Join(dir, "mmctl")); err == nil {
			return fmt.Sprintf("export PATH=\"%s:$PATH\"   # mmctl is next to metamcp", dir)
		}
	}
	return "go build -o bin/ ./cmd/mmctl && export PATH=\"$PWD/bin:$PATH\"   # mmctl is not on PATH"
}

var devBannerTemplate = template.Must(template.New("banner").Parse(`
MetaMCP dev mode is ready (metamcp {{.Version}}).

  State:          {{.DataDir}}  (SQLite store, secret key, tokens; delete it to start over)
  MCP endpoint:   {{.URL}}
  API key:        {{if .APIKey}}{{.APIKey}}
                  dev only: kept in clear text in {{.DataDir}}/api-key{{else}}none kept: make one with
                  mmctl create apikey me --endpoint default{{end}}
  Data plane:     {{.HTTP}}  (MCP endpoints; {{.HTTP}}/readyz says which config it serves)
  Control plane:  {{.Addr}}  (gRPC admin API, for mmctl)
  Admin token:    {{.Token}}
                  dev only: kept in clear text in {{.DataDir}}/admin-token
  Stdio servers:  any command runs (dev only: metamcp dataplane runs only
                  what its --stdio-allow allows)
{{- if .Seeded}}

Seeded: the server "demo" (the built-in demo MCP server: tools echo, add, now,
random_number, the resource demo://readme, the prompt summarize), the namespace
and endpoint "default", and the API key "dev".
{{- end}}
{{- $key := .APIKey}}{{if not $key}}{{$key = "YOUR_API_KEY"}}{{end}}

Connect a client:

  Claude Code:
    claude mcp add --transport http metamcp {{.URL}} --header "Authorization: Bearer {{$key}}"

  Claude Desktop (claude_desktop_config.json; mcp-remote bridges stdio to HTTP):
    {"mcpServers": {"metamcp": {"command": "npx", "args": ["-y", "mcp-remote", "{{.URL}}", "--header", "Authorization: Bearer {{$key}}"]}}}

  Cursor (~/.cursor/mcp.json):
    {"mcpServers": {"metamcp": {"url": "{{.URL}}", "headers": {"Authorization": "Bearer {{$key}}"}}}}

  Windsurf (~/.codeium/windsurf/mcp_config.json):
    {"mcpServers": {"metamcp": {"serverUrl": "{{.URL}}", "headers": {"Authorization": "Bearer {{$key}}"}}}}

  VS Code (.vscode/mcp.json):
    {"servers": {"metamcp": {"type": "http", "url": "{{.URL}}", "headers": {"Authorization": "Bearer {{$key}}"}}}}

Manage it, in another terminal:
{{if .Mmctl}}
  {{.Mmctl}}{{end}}
  export METAMCP_ADDR={{.Addr}} METAMCP_TOKEN={{.Token}}
  mmctl get servers
  mmctl get dataplanes
  mmctl import      # the servers of your Claude Desktop, Cursor, Windsurf or VS Code config

Stop with Ctrl-C; state is kept for the next run.

`))

func printDevBanner(w io.Writer, b devBanner) error {
	return devBannerTemplate.Execute(w, b)
}
