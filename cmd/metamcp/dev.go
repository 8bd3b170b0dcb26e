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
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store/sqlite"
	"github.com/metamcp/metamcp/pkg/version"
)

// Files kept in the dev data directory.
const (
	devStoreFile      = "metamcp.db"
	devSecretKeyFile  = "secret.key"
	devAdminTokenFile = "admin-token"
)

type devFlags struct {
	dataDir string
	listen  string
}

func newDevCommand(lf *logFlags, stdout io.Writer) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run MetaMCP in one process with local state (no Postgres, no Redis)",
		Long: `Run MetaMCP in one process for a first try or for development: the control
plane on an embedded SQLite store kept in --data-dir, with a secret key and an
admin token generated on the first run and kept there too. State persists
between runs; delete the directory to start over.

The admin token is stored in clear text in DATA_DIR/admin-token. That is fine
for a laptop and wrong for a shared machine: use 'metamcp controlplane' there.`,
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
	fl.StringVar(&f.dataDir, "data-dir", ".metamcp", "directory for the store, the secret key and the admin token (created 0700)")
	fl.StringVar(&f.listen, "listen", defaultControlPlaneListen, "address of the control plane's gRPC API; port 0 picks a free port")
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

	logger.Info("starting metamcp dev", "version", version.String(), "data_dir", dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, devStoreFile), sqlite.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("open dev store in %s: %w", dir, err)
	}
	defer closeStore(logger, st)

	// Data plane: the next release starts it here, joined to the control
	// plane over a real loopback gRPC sync stream (not by calling across),
	// with an in-process rate limiter, and the banner then prints the MCP
	// endpoint URL and client config. Until then dev runs the control plane
	// only.

	return serveControlPlane(ctx, logger, st, sealer, controlplane.Options{
		Listen:         f.listen,
		AdminTokenHash: auth.HashToken(token),
		Logger:         logger,
	}, func(addr string) {
		if err := printDevBanner(stdout, devBanner{
			DataDir: dir,
			Addr:    addr,
			Token:   token,
			Version: version.String(),
		}); err != nil {
			logger.Warn("print banner", "err", err)
		}
	})
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
}

var devBannerTemplate = template.Must(template.New("banner").Parse(`
MetaMCP dev mode is ready (metamcp {{.Version}}).

  State:          {{.DataDir}}  (SQLite store, secret key; delete it to start over)
  Control plane:  {{.Addr}}  (gRPC admin API, for mmctl)
  Admin token:    {{.Token}}
                  dev only: kept in clear text in {{.DataDir}}/admin-token

Next, in another terminal:

  export METAMCP_ADDR={{.Addr}} METAMCP_TOKEN={{.Token}}
  mmctl get servers
  mmctl import ~/Library/Application\ Support/Claude/claude_desktop_config.json

Stop with Ctrl-C; state is kept for the next run.

`))

func printDevBanner(w io.Writer, b devBanner) error {
	return devBannerTemplate.Execute(w, b)
}
