package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/configfile"
)

// importFlags are the flags of `mmctl import`.
type importFlags struct {
	namespace      string
	noPrefix       bool
	prefixByServer bool // deprecated: prefixing by server name is the default
	endpoint       string
	dryRun         bool
	from           string
}

func newImportCommand(a *app) *cobra.Command {
	f := &importFlags{}
	cmd := &cobra.Command{
		Use:   "import [FILE|-] [--namespace NAME [--no-prefix]] [--endpoint NAME] [--dry-run]",
		Short: "Register the servers of a Claude Desktop, Cursor or Windsurf mcpServers JSON",
		Long: `Register every server of an existing client config (the "mcpServers" JSON of
Claude Desktop, Cursor, Windsurf and others). Environment variables and
headers become secrets: the tokens move from laptops to the gateway.

With --namespace, the servers are also grouped into a namespace, each
server's tools prefixed with its name (github__create_issue) so that names
never collide; --no-prefix keeps a single server's tool names as they are.
With --endpoint, that namespace is exposed (an --endpoint without --namespace
uses a namespace of the same name). Everything is applied in one revision.

Without FILE, mmctl looks where Claude Desktop, Cursor, Windsurf and VS Code
keep their config on this system (--from picks one of them) and imports the
one it finds.`,
		Example: `  mmctl import --dry-run
  mmctl import --from cursor --namespace desktop --endpoint desktop
  mmctl import ~/.cursor/mcp.json --dry-run`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("import takes one FILE (or - for stdin), got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return []string{"json"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if f.noPrefix && f.namespace == "" && f.endpoint == "" {
				return usageErrorf("--no-prefix needs --namespace NAME or --endpoint NAME")
			}
			if len(args) == 0 {
				found, err := findClientConfig(f.from)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "importing %s\n", found)
				args = []string{found}
			} else if f.from != "" {
				return usageErrorf("--from goes without FILE: it picks which client's config to look for")
			}
			name := args[0]
			var (
				data []byte
				err  error
			)
			if name == "-" {
				name = "stdin"
				data, err = io.ReadAll(a.stdin)
			} else {
				data, err = os.ReadFile(name)
			}
			if err != nil {
				return runtimeError{fmt.Errorf("read %s: %w", name, unwrapPathError(err))}
			}
			servers, notes, err := configfile.ParseMCPServers(data)
			if err != nil {
				return runtimeError{fmt.Errorf("%s: %w", name, err)}
			}
			for _, n := range notes {
				fmt.Fprintf(a.stderr, "note: %s\n", n)
			}
			if len(servers) == 0 {
				return runtimeError{fmt.Errorf("%s: no servers found under \"mcpServers\"", name)}
			}
			if f.noPrefix && len(servers) > 1 {
				// The control plane allows one unprefixed member per
				// namespace: the tools of two could collide.
				return usageErrorf("%s holds %d servers: in one namespace they need prefixes so their tool names cannot collide; drop --no-prefix", name, len(servers))
			}
			resources := f.resources(servers)
			if err := a.apply(ctx, resources, f.dryRun); err != nil {
				return err
			}
			if f.endpoint != "" && !f.dryRun && a.output == outputTable {
				fmt.Fprintf(a.stderr, "next: give people access with mmctl create apikey NAME --endpoint %s\n", f.endpoint)
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.namespace, "namespace", "", "also group the servers into this namespace")
	fl.BoolVar(&f.noPrefix, "no-prefix", false, "keep the tool names of a single server unprefixed in the namespace")
	fl.BoolVar(&f.prefixByServer, "prefix-by-server", false, "prefix each server's tools with its name (the default)")
	_ = fl.MarkDeprecated("prefix-by-server", "prefixing by server name is now the default; use --no-prefix to turn it off")
	fl.StringVar(&f.endpoint, "endpoint", "", "also expose the namespace at this endpoint")
	fl.BoolVar(&f.dryRun, "dry-run", false, "check and show the changes without committing them")
	fl.StringVar(&f.from, "from", "", "without FILE: the client whose config to import: claude, cursor, windsurf or vscode")
	return cmd
}

// clientConfigs are where desktop MCP clients keep their mcpServers config on
// this system, in the order mmctl import looks.
func clientConfigs() []struct{ client, path string } {
	home, _ := os.UserHomeDir()
	cfg, _ := os.UserConfigDir()
	var out []struct{ client, path string }
	add := func(client string, base string, parts ...string) {
		if base != "" {
			out = append(out, struct{ client, path string }{client, filepath.Join(append([]string{base}, parts...)...)})
		}
	}
	add("claude", cfg, "Claude", "claude_desktop_config.json")
	add("cursor", home, ".cursor", "mcp.json")
	add("windsurf", home, ".codeium", "windsurf", "mcp_config.json")
	add("vscode", cfg, "Code", "User", "mcp.json")
	add("vscode", ".", ".vscode", "mcp.json")
	return out
}

// findClientConfig finds the one client config to import: of the client
// from names, or of any client when from is empty.
func findClientConfig(from string) (string, error) {
	from = normalize(from)
	switch from {
	case "", "claude", "cursor", "windsurf", "vscode":
	case "claude_desktop", "claudedesktop":
		from = "claude"
	case "code", "vs_code":
		from = "vscode"
	default:
		return "", usageErrorf("invalid --from %q: use claude, cursor, windsurf or vscode", from)
	}
	var looked, found []string
	for _, c := range clientConfigs() {
		if from != "" && c.client != from {
			continue
		}
		looked = append(looked, c.path)
		if info, err := os.Stat(c.path); err == nil && !info.IsDir() {
			found = append(found, c.path)
		}
	}
	switch len(found) {
	case 0:
		return "", runtimeError{fmt.Errorf("no client config found; looked at:\n  %s\npass the file: mmctl import FILE", strings.Join(looked, "\n  "))}
	case 1:
		return found[0], nil
	}
	return "", usageErrorf("several client configs found; pick one with --from, or pass the file:\n  %s", strings.Join(found, "\n  "))
}

// resources is the bundle to apply: the servers, then the namespace and the
// endpoint when asked for.
func (f *importFlags) resources(servers []*metamcpv1.Server) []*metamcpv1.Resource {
	var out []*metamcpv1.Resource
	for _, s := range servers {
		out = append(out, &metamcpv1.Resource{Kind: &metamcpv1.Resource_Server{Server: s}})
	}
	ns := f.namespace
	if ns == "" {
		ns = f.endpoint
	}
	if ns != "" {
		n := &metamcpv1.Namespace{Name: ns}
		for _, s := range servers {
			m := &metamcpv1.NamespaceMember{Server: s.GetName()}
			if f.noPrefix {
				m.Prefix = proto.String("")
			}
			n.Members = append(n.Members, m)
		}
		out = append(out, &metamcpv1.Resource{Kind: &metamcpv1.Resource_Namespace{Namespace: n}})
	}
	if f.endpoint != "" {
		out = append(out, &metamcpv1.Resource{Kind: &metamcpv1.Resource_Endpoint{Endpoint: &metamcpv1.Endpoint{
			Name: f.endpoint, Namespace: ns,
		}}})
	}
	return out
}

func newRevisionCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revision",
		Short: "Print the control plane's current config revision",
		Long: `Print the control plane's current config revision: a number that goes up by
one with every committed change. Compare it with mmctl get dataplanes.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.GetRevision(ctx, &metamcpv1.GetRevisionRequest{})
			if err != nil {
				return fmt.Errorf("get revision: %w", err)
			}
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, resp)
			case outputYAML:
				return writeYAML(a.stdout, resp)
			}
			_, err = fmt.Fprintln(a.stdout, resp.GetRevision())
			return err
		}),
	}
}
