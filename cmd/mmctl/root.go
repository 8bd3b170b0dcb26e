package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"sigs.k8s.io/yaml"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/envflag"
)

// defaultAddr is the control plane's gRPC address when nothing else is set.
const defaultAddr = "127.0.0.1:12009"

// Output formats accepted by -o.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// app is one run of mmctl: its streams, its global options and its lazily
// opened connection to the control plane.
type app struct {
	// collisions are the data planes whose name collisions describe
	// namespace shows (collisionsErr: why they are unknown).
	collisions    []*metamcpv1.DataPlane
	collisionsErr error

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	now    func() time.Time

	// Global options, after flags, environment and config file are merged.
	addr       string
	token      string
	tls        bool
	tlsCA      string
	configPath string
	output     string
	timeout    time.Duration

	conn   *grpc.ClientConn
	client metamcpv1.AdminServiceClient
	// warned holds the warnings already printed, so a warning that comes both
	// as response metadata and in a response body is printed once.
	warned map[string]bool
	// started is set when a command's own code begins to run; an error before
	// that is a command-line mistake (exit code 2).
	started bool
}

// globalFlags are mirrored into METAMCP_* environment variables. Flags of
// single commands (--url, --namespace, --dry-run, ...) are not: a stray
// METAMCP_NAMESPACE in a shell must not silently change what `create endpoint`
// creates.
var globalFlags = map[string]bool{
	"addr": true, "token": true, "tls": true, "tls-ca": true,
	"config": true, "output": true, "timeout": true,
}

// newRootCommand builds the whole command tree for one run.
func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "mmctl",
		Short: "mmctl controls a MetaMCP gateway",
		Long: `mmctl is the admin CLI of MetaMCP, the gateway in front of your MCP servers.
It talks to the control plane's admin API (gRPC).

Resources:
  servers      upstream MCP servers (stdio, SSE or Streamable HTTP)
  namespaces   sets of servers exposed together, each with a tool-name prefix
  endpoints    a namespace served at /metamcp/{endpoint}/mcp, with auth and rate limits
  ratelimits   rate-limit policies (rate per period, burst, keyed by user, key, IP)
  apikeys      keys that let a person or bot call endpoints
  tokens       control-plane tokens (admin for mmctl, sync for data planes)
  dataplanes   data planes that have connected, and the revision each one runs

mmctl logs shows the audit trail: who called which tool, when, with what outcome.

Connection settings come from flags, then the environment (METAMCP_ADDR,
METAMCP_TOKEN, ...), then the config file (keys: addr, token, tls, tlsCA).`,
		Example: `  export METAMCP_TOKEN=...   # the control plane's admin token
  mmctl create server github --stdio "npx -y @modelcontextprotocol/server-github" --secret-env GITHUB_PERSONAL_ACCESS_TOKEN
  mmctl create namespace dev --server github:gh
  mmctl create endpoint dev --namespace dev
  mmctl create apikey alice --endpoint dev
  mmctl get servers
  mmctl apply -f metamcp.yaml
  mmctl export > metamcp.yaml`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", defaultAddr, "control plane address (host:port)")
	pf.StringVar(&a.token, "token", "", "admin token (prefer the environment variable: argv is visible to other users)")
	pf.BoolVar(&a.tls, "tls", false, "connect with TLS (implied by --tls-ca)")
	pf.StringVar(&a.tlsCA, "tls-ca", "", "CA certificate file (PEM) that signs the control plane's certificate; the system roots when empty")
	pf.StringVar(&a.configPath, "config", defaultConfigPath(a.getenv), "config file with addr, token, tls, tlsCA (optional)")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table, json or yaml")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for the control plane")

	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%v", err)
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return a.prepare(cmd)
	}

	root.AddCommand(
		newGetCommand(a),
		newDescribeCommand(a),
		newCreateCommand(a),
		newDeleteCommand(a),
		newRevokeCommand(a),
		newRotateCommand(a),
		newRestartCommand(a),
		newRateLimitCommand(a),
		newApplyCommand(a),
		newEditCommand(a),
		newExportCommand(a),
		newImportCommand(a),
		newRevisionCommand(a),
		newLogsCommand(a),
		newVersionCommand(a),
		newAuthCommand(a),
	)

	var skip []string
	var walk func(c *cobra.Command)
	seen := map[string]bool{}
	walk = func(c *cobra.Command) {
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if !globalFlags[f.Name] && !seen[f.Name] {
				seen[f.Name] = true
				skip = append(skip, f.Name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	envflag.Bind(root, skip...)
	return root
}

// defaultConfigPath is $XDG_CONFIG_HOME/metamcp/mmctl.yaml, else
// ~/.config/metamcp/mmctl.yaml.
func defaultConfigPath(getenv func(string) string) string {
	if dir := getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "metamcp", "mmctl.yaml")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".config", "metamcp", "mmctl.yaml")
	}
	return ""
}

// fileConfig is the content of mmctl's config file.
type fileConfig struct {
	Addr  string `json:"addr"`
	Token string `json:"token"`
	TLS   *bool  `json:"tls"`
	TLSCA string `json:"tlsCA"`
}

// prepare runs before every command, after the environment has been applied
// to unset flags: it fills still unset connection flags from the config file
// and checks the global flags.
func (a *app) prepare(cmd *cobra.Command) error {
	if err := a.loadConfigFile(cmd.Flags()); err != nil {
		return err
	}
	switch a.output {
	case outputTable, outputJSON, outputYAML:
	default:
		return usageErrorf("invalid --output %q: use table, json or yaml", a.output)
	}
	if a.timeout <= 0 {
		return usageErrorf("invalid --timeout %s: must be positive", a.timeout)
	}
	if strings.TrimSpace(a.addr) == "" {
		return usageErrorf("no control plane address: pass --addr HOST:PORT or set METAMCP_ADDR")
	}
	return a.addrFromURL()
}

// loadConfigFile reads the config file and applies its values to the
// connection flags that neither a flag nor the environment set. A missing
// file is fine unless it was named explicitly.
func (a *app) loadConfigFile(flags *pflag.FlagSet) error {
	if a.configPath == "" {
		return nil
	}
	explicit := flags.Changed("config")
	data, err := os.ReadFile(a.configPath)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return runtimeError{fmt.Errorf("read config file: %w", err)}
	}
	var fc fileConfig
	if err := yaml.UnmarshalStrict(data, &fc); err != nil {
		return runtimeError{fmt.Errorf("config file %s: %w (known keys: addr, token, tls, tlsCA)", a.configPath, err)}
	}
	if fc.Token != "" {
		if info, err := os.Stat(a.configPath); err == nil && info.Mode().Perm()&0o077 != 0 {
			a.warn(fmt.Sprintf("config file %s holds a token and is readable by others: chmod 600 it", a.configPath))
		}
	}
	set := func(name, value string) error {
		if value == "" || flags.Lookup(name) == nil || flags.Changed(name) {
			return nil
		}
		if err := flags.Set(name, value); err != nil {
			return runtimeError{fmt.Errorf("config file %s: %s: %w", a.configPath, name, err)}
		}
		return nil
	}
	tlsValue := ""
	if fc.TLS != nil {
		tlsValue = fmt.Sprint(*fc.TLS)
	}
	for _, kv := range [][2]string{{"addr", fc.Addr}, {"token", fc.Token}, {"tls", tlsValue}, {"tls-ca", fc.TLSCA}} {
		if err := set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// warn prints a warning on stderr once per run.
func (a *app) warn(msg string) {
	if a.warned == nil {
		a.warned = map[string]bool{}
	}
	if a.warned[msg] {
		return
	}
	a.warned[msg] = true
	fmt.Fprintf(a.stderr, "warning: %s\n", msg)
}

// begin marks the start of a command's own work (see app.started).
func (a *app) begin() { a.started = true }

// close releases the connection, if one was opened.
func (a *app) close() {
	if a.conn != nil {
		_ = a.conn.Close()
	}
}
