package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func newCreateCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create KIND NAME [flags]",
		Short: "Create a resource from flags",
		Long: `Create one resource from flags. To create or update many at once from a
file, use mmctl apply -f.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("create needs a kind: server, namespace, endpoint, ratelimit, apikey or token")
			}
			return usageErrorf("unknown kind %q: create server, namespace, endpoint, ratelimit, apikey or token", args[0])
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.AddCommand(
		newCreateServerCommand(a),
		newCreateNamespaceCommand(a),
		newCreateEndpointCommand(a),
		newCreateRateLimitCommand(a),
		newCreateApiKeyCommand(a),
		newCreateTokenCommand(a),
	)
	return cmd
}

// nameArg checks for exactly one NAME argument.
func nameArg(kindName string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return usageErrorf("%s needs a NAME: mmctl create %s NAME [flags]", cmd.CommandPath(), kindName)
		case len(args) > 1:
			return usageErrorf("%s takes one NAME, got %d arguments: %s", cmd.CommandPath(), len(args), strings.Join(args, " "))
		}
		return nil
	}
}

// printCreated prints a created resource: `server/github created (revision 3)`
// in a table, the resource itself for -o json|yaml.
// createResource makes one config resource through create and prints it as
// created. apiKind is the API's kind name, cliKind the word mmctl users type.
func createResource[T interface {
	proto.Message
	GetRevision() int64
}](ctx context.Context, a *app, apiKind, cliKind, name string, create func(context.Context, metamcpv1.AdminServiceClient) (T, error)) error {
	c, err := a.admin()
	if err != nil {
		return err
	}
	created, err := create(ctx, c)
	if st, ok := grpcStatus(err); ok && st.Code() == codes.AlreadyExists {
		return runtimeError{fmt.Errorf("%s %q already exists: change it with mmctl edit %s %s, or with mmctl apply -f FILE", cliKind, name, cliKind, name)}
	}
	if err != nil {
		return about(fmt.Sprintf("%s %q", cliKind, name), fmt.Errorf("create %s %q: %w", cliKind, name, err))
	}
	return a.printCreated(kindByAPIKind(apiKind), created, created.GetRevision())
}

func (a *app) printCreated(k *kind, m proto.Message, rev int64) error {
	redact(m)
	switch a.output {
	case outputJSON:
		return writeJSON(a.stdout, m)
	case outputYAML:
		if k.config {
			return writeConfigYAML(a.stdout, []proto.Message{m})
		}
		return writeYAML(a.stdout, m)
	}
	if rev > 0 {
		_, err := fmt.Fprintf(a.stdout, "%s/%s created (revision %d)\n", k.name, k.nameOf(m), rev)
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "%s/%s created\n", k.name, k.nameOf(m))
	return err
}

// serverFlags are the flags of `mmctl create server`.
type serverFlags struct {
	stdio, command, cwd       string
	args                      []string
	url, transport            string
	env, secretEnv            []string
	secretEnvFile             []string
	header, secretHeader      []string
	secretHeaderFile          []string
	bearerTokenFile           string
	bearerTokenStdin          bool
	sessionMode, description  string
	callTimeout, initTimeout  time.Duration
	listTimeout, idleTTL      time.Duration
	maxProcesses, maxSessions int32
	listMaxAge                time.Duration
	volatile                  bool
}

func newCreateServerCommand(a *app) *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:     "server NAME (--stdio \"CMD ARGS\" | --command CMD [--arg A]... | --url URL) [flags]",
		Aliases: []string{"servers", "srv"},
		Short:   "Register an upstream MCP server",
		Long: `Register an upstream MCP server: a local process speaking MCP on stdio
(--stdio or --command), or a remote one over Streamable HTTP or SSE (--url).

Secret values (--secret-env, --secret-header, the bearer token) are encrypted
at rest and never shown again. Values in argv are visible to other users of
this machine: prefer --secret-env KEY (no value), which takes the value of
$KEY from mmctl's environment, --secret-env-file KEY=PATH and
--secret-header-file NAME=PATH, which read it from a file, and
--bearer-token-file or --bearer-token-stdin.`,
		Example: `  mmctl create server github --stdio "npx -y @modelcontextprotocol/server-github" --secret-env GITHUB_PERSONAL_ACCESS_TOKEN
  mmctl create server fs --command npx --arg -y --arg @modelcontextprotocol/server-filesystem --arg /srv/docs --session-mode per_client
  mmctl create server sentry --url https://mcp.sentry.dev/mcp --bearer-token-file ~/.sentry-token
  mmctl create server legacy --url http://10.0.0.5:8080/sse --transport sse --secret-header X-Api-Key=...`,
		Args: nameArg("server"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			s, err := f.build(a, args[0])
			if err != nil {
				return err
			}
			return createResource(ctx, a, "Server", "server", args[0], func(ctx context.Context, c metamcpv1.AdminServiceClient) (*metamcpv1.Server, error) {
				return c.CreateServer(ctx, &metamcpv1.CreateServerRequest{Server: s})
			})
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.stdio, "stdio", "", `command line of a stdio server, split like a shell does ("npx -y pkg")`)
	fl.StringVar(&f.command, "command", "", "program of a stdio server (with --arg for each argument)")
	fl.StringArrayVar(&f.args, "arg", nil, "an argument of the stdio command (repeatable; appended after --stdio's)")
	fl.StringVar(&f.cwd, "cwd", "", "working directory of the stdio process (the data plane's when empty)")
	fl.StringArrayVar(&f.env, "env", nil, "environment variable KEY=VALUE of the stdio process, stored in plain text (repeatable)")
	fl.StringArrayVar(&f.secretEnv, "secret-env", nil, "secret environment variable KEY=VALUE, or KEY to take $KEY from mmctl's environment (repeatable)")
	fl.StringArrayVar(&f.secretEnvFile, "secret-env-file", nil, "secret environment variable KEY=PATH, its value read from the file PATH (repeatable)")
	fl.StringVar(&f.url, "url", "", "MCP URL of a remote server (http or https)")
	fl.StringVar(&f.transport, "transport", "streamable_http", "transport of a --url server: streamable_http or sse")
	fl.StringArrayVar(&f.header, "header", nil, "HTTP header KEY=VALUE sent to a --url server, stored in plain text (repeatable)")
	fl.StringArrayVar(&f.secretHeader, "secret-header", nil, "secret HTTP header KEY=VALUE sent to a --url server (repeatable)")
	fl.StringArrayVar(&f.secretHeaderFile, "secret-header-file", nil, "secret HTTP header NAME=PATH, its value read from the file PATH (repeatable)")
	fl.StringVar(&f.bearerTokenFile, "bearer-token-file", "", "file holding the bearer token for a --url server (sent as Authorization: Bearer)")
	fl.BoolVar(&f.bearerTokenStdin, "bearer-token-stdin", false, "read the bearer token for a --url server from stdin")
	fl.StringVar(&f.sessionMode, "session-mode", "shared", "upstream sessions: shared (one per data plane) or per_client (one per client session)")
	fl.DurationVar(&f.callTimeout, "call-timeout", 0, "limit on one tool call, prompt or resource read (0: the data plane's default)")
	fl.DurationVar(&f.initTimeout, "init-timeout", 0, "limit on connecting and MCP initialize (0: the data plane's default)")
	fl.DurationVar(&f.listTimeout, "list-timeout", 0, "limit on one list operation (0: the data plane's default)")
	fl.Int32Var(&f.maxProcesses, "max-processes", 0, "live stdio processes per data plane (0: the data plane's default)")
	fl.Int32Var(&f.maxSessions, "max-sessions", 0, "live upstream sessions per data plane (0: the data plane's default)")
	fl.DurationVar(&f.idleTTL, "idle-ttl", 0, "close an unused session or process after this long (0: the data plane's default)")
	fl.DurationVar(&f.listMaxAge, "list-max-age", 0, "how long data planes keep lists the server cannot announce changes of (0: the data plane's default, 1m)")
	fl.BoolVar(&f.volatile, "volatile", false, "the server's lists change without notice: never keep them")
	fl.StringVar(&f.description, "description", "", "what the server is for")
	return cmd
}

// build turns the flags into a Server, checking what the command line alone
// can tell.
func (f *serverFlags) build(a *app, name string) (*metamcpv1.Server, error) {
	s := &metamcpv1.Server{Name: name, Description: f.description}
	var err error
	if s.SessionMode, err = parseSessionMode(f.sessionMode); err != nil {
		return nil, err
	}
	transports := 0
	for _, set := range []bool{f.stdio != "", f.command != "", f.url != ""} {
		if set {
			transports++
		}
	}
	switch {
	case transports == 0:
		return nil, usageErrorf("create server needs a transport: --stdio \"CMD ARGS\", --command CMD or --url URL")
	case transports > 1:
		return nil, usageErrorf("--stdio, --command and --url exclude each other: pass one")
	}
	if f.url != "" {
		if len(f.args) > 0 || f.cwd != "" || len(f.env) > 0 || len(f.secretEnv) > 0 || len(f.secretEnvFile) > 0 {
			return nil, usageErrorf("--arg, --cwd, --env, --secret-env and --secret-env-file are for stdio servers, not --url")
		}
		h := &metamcpv1.HTTPTransport{Url: f.url, Headers: map[string]*metamcpv1.Value{}}
		if err := parseValues("header", f.header, false, nil, h.Headers); err != nil {
			return nil, err
		}
		if err := parseValues("secret-header", f.secretHeader, true, nil, h.Headers); err != nil {
			return nil, err
		}
		if err := parseFileValues("secret-header-file", f.secretHeaderFile, h.Headers); err != nil {
			return nil, err
		}
		if len(h.Headers) == 0 {
			h.Headers = nil
		}
		token, err := f.bearerToken(a.stdin)
		if err != nil {
			return nil, err
		}
		if token != "" {
			h.BearerToken = &metamcpv1.Value{Value: token, Secret: true}
		}
		switch normalize(f.transport) {
		case "streamable_http", "http", "streamable":
			s.Transport = &metamcpv1.Server_StreamableHttp{StreamableHttp: h}
		case "sse":
			s.Transport = &metamcpv1.Server_Sse{Sse: h}
		default:
			return nil, usageErrorf("invalid --transport %q: use streamable_http or sse", f.transport)
		}
	} else {
		if len(f.header) > 0 || len(f.secretHeader) > 0 || len(f.secretHeaderFile) > 0 || f.bearerTokenFile != "" || f.bearerTokenStdin {
			return nil, usageErrorf("--header, --secret-header and the bearer token are for --url servers, not stdio")
		}
		st := &metamcpv1.StdioTransport{Command: f.command, Cwd: f.cwd, Env: map[string]*metamcpv1.Value{}}
		if f.stdio != "" {
			words, err := splitCommandLine(f.stdio)
			if err != nil {
				return nil, usageErrorf("invalid --stdio %q: %v", f.stdio, err)
			}
			if len(words) == 0 {
				return nil, usageErrorf("--stdio is empty: pass the command line, e.g. --stdio \"npx -y pkg\"")
			}
			st.Command, st.Args = words[0], words[1:]
		}
		st.Args = append(st.Args, f.args...)
		if err := parseValues("env", f.env, false, nil, st.Env); err != nil {
			return nil, err
		}
		if err := parseValues("secret-env", f.secretEnv, true, os.LookupEnv, st.Env); err != nil {
			return nil, err
		}
		if err := parseFileValues("secret-env-file", f.secretEnvFile, st.Env); err != nil {
			return nil, err
		}
		if len(st.Env) == 0 {
			st.Env = nil
		}
		s.Transport = &metamcpv1.Server_Stdio{Stdio: st}
	}

	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"call-timeout", f.callTimeout}, {"init-timeout", f.initTimeout}, {"list-timeout", f.listTimeout}, {"idle-ttl", f.idleTTL}, {"list-max-age", f.listMaxAge}} {
		if d.v < 0 {
			return nil, usageErrorf("invalid --%s %s: must not be negative", d.flag, d.v)
		}
	}
	if f.maxProcesses < 0 || f.maxSessions < 0 {
		return nil, usageErrorf("--max-processes and --max-sessions must not be negative")
	}
	if f.callTimeout > 0 || f.initTimeout > 0 || f.listTimeout > 0 {
		s.Timeouts = &metamcpv1.Timeouts{
			Initialize: optionalDuration(f.initTimeout),
			Call:       optionalDuration(f.callTimeout),
			List:       optionalDuration(f.listTimeout),
		}
	}
	if f.volatile && f.listMaxAge > 0 {
		return nil, usageErrorf("--volatile and --list-max-age exclude each other: a volatile server's lists are never kept")
	}
	s.ListMaxAge, s.Volatile = optionalDuration(f.listMaxAge), f.volatile
	if f.maxProcesses > 0 || f.maxSessions > 0 || f.idleTTL > 0 {
		s.Limits = &metamcpv1.Limits{MaxProcesses: f.maxProcesses, MaxSessions: f.maxSessions, IdleTtl: optionalDuration(f.idleTTL)}
	}
	return s, nil
}

// bearerToken reads the bearer token from its file or stdin.
func (f *serverFlags) bearerToken(stdin io.Reader) (string, error) {
	if f.bearerTokenFile != "" && f.bearerTokenStdin {
		return "", usageErrorf("--bearer-token-file and --bearer-token-stdin exclude each other")
	}
	var (
		data []byte
		err  error
		from string
	)
	switch {
	case f.bearerTokenFile != "":
		from = f.bearerTokenFile
		data, err = os.ReadFile(f.bearerTokenFile)
	case f.bearerTokenStdin:
		from = "stdin"
		data, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	default:
		return "", nil
	}
	if err != nil {
		return "", runtimeError{fmt.Errorf("read bearer token: %w", err)}
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", usageErrorf("the bearer token from %s is empty", from)
	}
	if strings.ContainsAny(token, "\r\n") {
		return "", usageErrorf("the bearer token from %s spans several lines: put only the token in it", from)
	}
	return token, nil
}

func optionalDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func newCreateNamespaceCommand(a *app) *cobra.Command {
	var (
		servers     []string
		separator   string
		description string
	)
	cmd := &cobra.Command{
		Use:     "namespace NAME --server SERVER[:PREFIX]... [flags]",
		Aliases: []string{"namespaces", "ns"},
		Short:   "Group servers into a namespace",
		Long: `Group servers into a namespace. Each server's tools and prompts appear with a
prefix and the separator: --server github:gh exposes github's create_issue as
gh__create_issue. --server github uses the server's name as the prefix;
--server github: uses no prefix (fine while no names collide).`,
		Example: `  mmctl create namespace team --server github:gh --server fs:fs --server sentry`,
		Args:    nameArg("namespace"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			ns := &metamcpv1.Namespace{Name: args[0], Description: description, Separator: separator}
			for _, spec := range servers {
				m, err := parseMember(spec)
				if err != nil {
					return err
				}
				ns.Members = append(ns.Members, m)
			}
			return createResource(ctx, a, "Namespace", "namespace", args[0], func(ctx context.Context, c metamcpv1.AdminServiceClient) (*metamcpv1.Namespace, error) {
				return c.CreateNamespace(ctx, &metamcpv1.CreateNamespaceRequest{Namespace: ns})
			})
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&servers, "server", nil, "a member server: SERVER (prefix: its name), SERVER:PREFIX, or SERVER: (no prefix) (repeatable)")
	fl.StringVar(&separator, "separator", "__", "between prefix and tool name")
	fl.StringVar(&description, "description", "", "what the namespace is for")
	return cmd
}

func newCreateEndpointCommand(a *app) *cobra.Command {
	var (
		namespace, description string
		anonymous              bool
		rateLimits             []string
		jwtIssuer, jwksURL     string
		jwtAudiences           []string
		jwtPrincipalClaim      string
		jwtScopes              []string
		jwtGroupsClaim         string
		jwtOnly                bool
		queryKey               bool
		noSSE, noStreamable    bool
	)
	cmd := &cobra.Command{
		Use:     "endpoint NAME --namespace NS [flags]",
		Aliases: []string{"endpoints", "ep"},
		Short:   "Expose a namespace at /metamcp/NAME/mcp",
		Long: `Expose a namespace to MCP clients at /metamcp/NAME/mcp (Streamable HTTP) and
/metamcp/NAME/sse (SSE). Callers need an API key scoped to the endpoint
(mmctl create apikey), or an OAuth access token (a JWT) from the identity
provider when --jwt-issuer is set, unless --anonymous.

A token's aud must be the endpoint's URL as clients use it
(https://HOST/metamcp/NAME/mcp, or /sse), or one of --jwt-audience. Clients
find the issuer in the endpoint's metadata at
/.well-known/oauth-protected-resource/metamcp/NAME/mcp.`,
		Example: `  mmctl create endpoint team --namespace team --rate-limit per-user
  mmctl create endpoint prod --namespace team --jwt-issuer https://login.example.com --jwt-scope mcp --jwt-groups-claim groups --jwt-only`,
		Args: nameArg("endpoint"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if namespace == "" {
				return usageErrorf("create endpoint needs --namespace NS: the namespace it serves")
			}
			ep := &metamcpv1.Endpoint{Name: args[0], Description: description, Namespace: namespace, RateLimits: rateLimits}
			if anonymous && jwtIssuer != "" {
				return usageErrorf("--anonymous and --jwt-issuer exclude each other")
			}
			if jwtIssuer == "" && (jwksURL != "" || len(jwtAudiences) > 0 || jwtPrincipalClaim != "" || len(jwtScopes) > 0 || jwtGroupsClaim != "" || jwtOnly) {
				return usageErrorf("the --jwt-* flags need --jwt-issuer")
			}
			if anonymous && queryKey {
				return usageErrorf("--anonymous and --allow-query-api-key exclude each other: an anonymous endpoint takes no key")
			}
			if anonymous || jwtIssuer != "" || queryKey {
				ep.Auth = &metamcpv1.EndpointAuth{Anonymous: anonymous, DisableApiKeys: jwtOnly, AllowQueryApiKey: queryKey}
				if jwtIssuer != "" {
					ep.Auth.Jwt = &metamcpv1.JWTAuth{Issuer: jwtIssuer, Audiences: jwtAudiences, JwksUrl: jwksURL,
						PrincipalClaim: jwtPrincipalClaim, RequiredScopes: jwtScopes, GroupsClaim: jwtGroupsClaim}
				}
			}
			if noSSE || noStreamable {
				ep.Transports = &metamcpv1.Transports{DisableSse: noSSE, DisableStreamableHttp: noStreamable}
			}
			return createResource(ctx, a, "Endpoint", "endpoint", args[0], func(ctx context.Context, c metamcpv1.AdminServiceClient) (*metamcpv1.Endpoint, error) {
				return c.CreateEndpoint(ctx, &metamcpv1.CreateEndpointRequest{Endpoint: ep})
			})
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&namespace, "namespace", "", "the namespace served (required)")
	fl.BoolVar(&anonymous, "anonymous", false, "no authentication at all: for local trials only")
	fl.StringArrayVar(&rateLimits, "rate-limit", nil, "a rate-limit policy applied to calls through the endpoint (repeatable)")
	fl.StringVar(&jwtIssuer, "jwt-issuer", "", "also accept JWT access tokens from this issuer (OAuth 2.1 / OIDC)")
	fl.StringArrayVar(&jwtAudiences, "jwt-audience", nil, "an accepted JWT audience besides the endpoint's own URL (repeatable)")
	fl.StringVar(&jwksURL, "jwks-url", "", "where the issuer's signing keys are (discovered from the issuer when empty)")
	fl.StringVar(&jwtPrincipalClaim, "jwt-principal-claim", "", "the JWT claim naming the caller (sub when empty)")
	fl.StringArrayVar(&jwtScopes, "jwt-scope", nil, "a scope JWTs must carry (repeatable); a token without it gets 403 insufficient_scope")
	fl.StringVar(&jwtGroupsClaim, "jwt-groups-claim", "", "the JWT claim listing the caller's groups, for access rules (none when empty)")
	fl.BoolVar(&queryKey, "allow-query-api-key", false, "also accept an API key as ?api_key=mm_... in the URL, for SSE-only clients that cannot send headers (URLs end up in logs: off by default)")
	fl.BoolVar(&jwtOnly, "jwt-only", false, "accept only JWT access tokens, no API keys (needs --jwt-issuer)")
	fl.BoolVar(&noSSE, "disable-sse", false, "turn off /metamcp/NAME/sse (2024-11-05 clients)")
	fl.BoolVar(&noStreamable, "disable-streamable-http", false, "turn off /metamcp/NAME/mcp")
	fl.StringVar(&description, "description", "", "what the endpoint is for")
	return cmd
}

func newCreateRateLimitCommand(a *app) *cobra.Command {
	var (
		rate, burst               int64
		per                       time.Duration
		key, onFailure            string
		server, tool, description string
		shadow, everyRequest      bool
	)
	cmd := &cobra.Command{
		Use:     "ratelimit NAME --rate N [--per DURATION] [flags]",
		Aliases: []string{"ratelimits", "ratelimitpolicy", "rl"},
		Short:   "Create a rate-limit policy",
		Long: `Create a rate-limit policy: at most --rate calls per --per, bursts up to
--burst, counted per --key across every data plane (in Redis). Attach it to
endpoints with mmctl create endpoint --rate-limit NAME.`,
		Example: `  mmctl create ratelimit per-user --rate 60 --per 1m --key principal
  mmctl create ratelimit slow-writes --rate 1 --per 1m --server github --tool 'gh__create_*' --on-redis-failure closed
  mmctl create ratelimit try-it --rate 10 --per 1m --shadow`,
		Args: nameArg("ratelimit"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("rate") {
				return usageErrorf("create ratelimit needs --rate N: calls allowed per --per")
			}
			if rate < 1 {
				return usageErrorf("invalid --rate %d: at least 1", rate)
			}
			if cmd.Flags().Changed("burst") && burst < 1 {
				return usageErrorf("invalid --burst %d: at least 1 (leave it out for the same as --rate)", burst)
			}
			if per <= 0 {
				return usageErrorf("invalid --per %s: must be positive", per)
			}
			p := &metamcpv1.RateLimitPolicy{Name: args[0], Description: description, Server: server, Tool: tool,
				Rate: rate, Period: durationpb.New(per), Shadow: shadow, EveryRequest: everyRequest}
			if cmd.Flags().Changed("burst") {
				p.Burst = &burst
			}
			var err error
			if p.Key, err = parseRateLimitKey(key); err != nil {
				return err
			}
			if p.OnRedisFailure, err = parseFailureMode(onFailure); err != nil {
				return err
			}
			return createResource(ctx, a, "RateLimitPolicy", "ratelimit", args[0], func(ctx context.Context, c metamcpv1.AdminServiceClient) (*metamcpv1.RateLimitPolicy, error) {
				return c.CreateRateLimitPolicy(ctx, &metamcpv1.CreateRateLimitPolicyRequest{RateLimitPolicy: p})
			})
		}),
	}
	fl := cmd.Flags()
	fl.Int64Var(&rate, "rate", 0, "calls allowed per period, at least 1 (required)")
	fl.DurationVar(&per, "per", time.Minute, "the period")
	fl.Int64Var(&burst, "burst", 0, "calls allowed at once, at least 1 (when left out: the same as --rate)")
	fl.BoolVar(&shadow, "shadow", false, "count and record the calls the policy would refuse, and refuse none")
	fl.BoolVar(&everyRequest, "every-request", false, "count every request to the endpoint, not only tools/call")
	fl.StringVar(&key, "key", "principal", "whose calls share a bucket: principal, api_key, client_ip or global")
	fl.StringVar(&server, "server", "", "limit only calls to this server's tools (every server when empty)")
	fl.StringVar(&tool, "tool", "", "limit only tools whose exposed (prefixed) name matches this glob")
	fl.StringVar(&onFailure, "on-redis-failure", "open", "while Redis is unreachable: open (allow), closed (refuse) or local (count per data plane)")
	fl.StringVar(&description, "description", "", "what the policy is for")
	return cmd
}

func newCreateApiKeyCommand(a *app) *cobra.Command {
	var (
		endpoints              []string
		principal, description string
		expires                string
	)
	cmd := &cobra.Command{
		Use:     "apikey NAME --endpoint EP... [flags]",
		Aliases: []string{"apikeys", "key"},
		Short:   "Create an API key (shown once)",
		Long: `Create an API key that lets a person or bot call endpoints. The key is
printed once and cannot be shown again: only its hash is stored. With -o json
the output is {"apiKey": {...}, "key": "mm_..."}.`,
		Example: `  mmctl create apikey bob --endpoint team --endpoint prod --expires 90d
  KEY=$(mmctl create apikey ci-bot --endpoint '*' -o json | jq -r .key)`,
		Args: nameArg("apikey"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if len(endpoints) == 0 {
				return usageErrorf("create apikey needs --endpoint EP (repeatable; '*' for every endpoint)")
			}
			exp, err := parseExpiry(expires, a.now())
			if err != nil {
				return err
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.CreateApiKey(ctx, &metamcpv1.CreateApiKeyRequest{ApiKey: &metamcpv1.ApiKey{
				Name: args[0], Description: description, Principal: principal, Endpoints: endpoints, ExpireTime: exp,
			}})
			if err != nil {
				return about(fmt.Sprintf("apikey %q", args[0]), fmt.Errorf("create apikey %q: %w", args[0], err))
			}
			redact(resp.GetApiKey())
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, resp)
			case outputYAML:
				return writeYAML(a.stdout, resp)
			}
			if rev := resp.GetApiKey().GetRevision(); rev > 0 {
				fmt.Fprintf(a.stdout, "apikey/%s created (revision %d)\n", args[0], rev)
			} else {
				fmt.Fprintf(a.stdout, "apikey/%s created\n", args[0])
			}
			fmt.Fprintf(a.stdout, "key: %s\n", resp.GetKey())
			fmt.Fprintln(a.stdout, "Store this key now: it is not shown again.")
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&endpoints, "endpoint", nil, "an endpoint the key may call, '*' for all (repeatable, required)")
	fl.StringVar(&principal, "principal", "", "who the key belongs to, for rate limits and the audit trail (the key's name when empty)")
	fl.StringVar(&expires, "expires", "", "expiry: a duration (720h, 90d) or an RFC 3339 time (never when empty)")
	fl.StringVar(&description, "description", "", "what the key is for")
	return cmd
}

func newCreateTokenCommand(a *app) *cobra.Command {
	var scope, expires, description string
	cmd := &cobra.Command{
		Use:     "token NAME --scope admin|sync [flags]",
		Aliases: []string{"tokens"},
		Short:   "Create a control-plane token (shown once)",
		Long: `Create a token for the control plane's API: scope admin for mmctl, scope sync
for a data plane. The token is printed once and cannot be shown again. With
-o json the output is {"token": {...}, "secret": "mmt_..."}.`,
		Example: `  mmctl create token dp-eu-1 --scope sync
  mmctl create token ci --scope admin --expires 30d`,
		Args: nameArg("token"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			sc, err := parseTokenScope(scope)
			if err != nil {
				return err
			}
			exp, err := parseExpiry(expires, a.now())
			if err != nil {
				return err
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.CreateToken(ctx, &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{
				Name: args[0], Description: description, Scope: sc, ExpireTime: exp,
			}})
			if err != nil {
				return about(fmt.Sprintf("token %q", args[0]), fmt.Errorf("create token %q: %w", args[0], err))
			}
			redact(resp.GetToken())
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, resp)
			case outputYAML:
				return writeYAML(a.stdout, resp)
			}
			fmt.Fprintf(a.stdout, "token/%s created\n", args[0])
			fmt.Fprintf(a.stdout, "token: %s\n", resp.GetSecret())
			fmt.Fprintln(a.stdout, "Store this token now: it is not shown again.")
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&scope, "scope", "", "admin (the admin API, for mmctl) or sync (for a data plane) (required)")
	fl.StringVar(&expires, "expires", "", "expiry: a duration (720h, 90d) or an RFC 3339 time (never when empty)")
	fl.StringVar(&description, "description", "", "what the token is for")
	return cmd
}
