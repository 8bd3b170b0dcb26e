package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/configfile"
)

func TestMain(m *testing.M) {
	// The developer's own settings must not leak into the tests.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "METAMCP_") {
			os.Unsetenv(name)
		}
	}
	os.Exit(m.Run())
}

// assertClean fails when stderr shows raw gRPC text or a Go stack trace.
func assertClean(t *testing.T, r result) {
	t.Helper()
	for _, bad := range []string{"rpc error:", "goroutine ", "panic:", "code = "} {
		if strings.Contains(r.stderr, bad) || strings.Contains(r.stdout, bad) {
			t.Errorf("output contains %q:\nstdout: %s\nstderr: %s", bad, r.stdout, r.stderr)
		}
	}
}

func TestSplitCommandLine(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "npx -y pkg", want: []string{"npx", "-y", "pkg"}},
		{in: "  uvx   mcp-server-git  --repository /srv/repo ", want: []string{"uvx", "mcp-server-git", "--repository", "/srv/repo"}},
		{in: `node "/path with spaces/index.js" 'it''s'`, want: []string{"node", "/path with spaces/index.js", "its"}},
		{in: `echo "a \"quoted\" word" back\ slash`, want: []string{"echo", `a "quoted" word`, "back slash"}},
		{in: `cmd ''`, want: []string{"cmd", ""}},
		{in: `cmd 'unterminated`, err: true},
		{in: `cmd trailing\`, err: true},
		{in: "", want: nil},
	}
	for _, tt := range tests {
		got, err := splitCommandLine(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("splitCommandLine(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitCommandLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestShellJoinRoundTrip(t *testing.T) {
	for _, words := range [][]string{
		{"npx", "-y", "@modelcontextprotocol/server-github"},
		{"node", "/path with spaces/x.js", "it's", ""},
		{"sh", "-c", `echo "$HOME" | tr a b`},
	} {
		got, err := splitCommandLine(shellJoin(words))
		if err != nil || strings.Join(got, "\x00") != strings.Join(words, "\x00") {
			t.Errorf("split(join(%q)) = %q, %v", words, got, err)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{in: "", want: time.Time{}},
		{in: "720h", want: now.Add(720 * time.Hour)},
		{in: "30d", want: now.Add(30 * 24 * time.Hour)},
		{in: "2027-01-31T00:00:00Z", want: time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)},
		{in: "2020-01-01T00:00:00Z", err: true},
		{in: "-5h", err: true},
		{in: "tomorrow", err: true},
	}
	for _, tt := range tests {
		got, err := parseExpiry(tt.in, now)
		if (err != nil) != tt.err {
			t.Errorf("parseExpiry(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if err != nil {
			if !errors.As(err, new(usageError)) {
				t.Errorf("parseExpiry(%q) error %T is not a usage error", tt.in, err)
			}
			continue
		}
		if tt.want.IsZero() != (got == nil) || (got != nil && !got.AsTime().Equal(tt.want)) {
			t.Errorf("parseExpiry(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestLookupKind(t *testing.T) {
	for want, spellings := range map[string][]string{
		"server":    {"server", "servers", "srv", "Server", "SERVERS"},
		"namespace": {"namespace", "namespaces", "ns"},
		"endpoint":  {"endpoint", "endpoints", "ep"},
		"ratelimit": {"ratelimit", "ratelimits", "ratelimitpolicy", "rl", "RateLimitPolicy"},
		"apikey":    {"apikey", "apikeys", "key", "ApiKey"},
		"token":     {"token", "tokens"},
		"dataplane": {"dataplane", "dataplanes", "dp"},
	} {
		for _, s := range spellings {
			k, err := lookupKind(s)
			if err != nil || k.name != want {
				t.Errorf("lookupKind(%q) = %v, %v; want %s", s, k, err, want)
			}
		}
	}
	if _, err := lookupKind("pods"); err == nil || !strings.Contains(err.Error(), "servers, namespaces") {
		t.Errorf("lookupKind(pods) error = %v, want the list of kinds", err)
	}
}

func TestCreateServerFlags(t *testing.T) {
	t.Setenv("MMCTL_TEST_GH_TOKEN", "from-env")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("bearer-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  *metamcpv1.Server
		// usage, when set, is expected in a usage error (exit 2).
		usage string
	}{
		{
			name: "stdio command line with env and secrets",
			args: []string{"github", "--stdio", "npx -y @modelcontextprotocol/server-github", "--env", "LOG=debug",
				"--secret-env", "GITHUB_TOKEN=ghp_x", "--secret-env", "MMCTL_TEST_GH_TOKEN", "--cwd", "/srv",
				"--session-mode", "per-client", "--call-timeout", "90s", "--idle-ttl", "10m", "--max-processes", "4", "--description", "GitHub"},
			want: &metamcpv1.Server{
				Name: "github", Description: "GitHub", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
				Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
					Command: "npx", Args: []string{"-y", "@modelcontextprotocol/server-github"}, Cwd: "/srv",
					Env: map[string]*metamcpv1.Value{
						"LOG":                 {Value: "debug"},
						"GITHUB_TOKEN":        {Value: "ghp_x", Secret: true},
						"MMCTL_TEST_GH_TOKEN": {Value: "from-env", Secret: true},
					},
				}},
				Timeouts: &metamcpv1.Timeouts{Call: durationpb.New(90 * time.Second)},
				Limits:   &metamcpv1.Limits{MaxProcesses: 4, IdleTtl: durationpb.New(10 * time.Minute)},
			},
		},
		{
			name: "command and args",
			args: []string{"fs", "--command", "npx", "--arg", "-y", "--arg", "a b"},
			want: &metamcpv1.Server{Name: "fs", SessionMode: metamcpv1.SessionMode_SESSION_MODE_SHARED,
				Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "npx", Args: []string{"-y", "a b"}}}},
		},
		{
			name: "streamable http with headers and bearer file",
			args: []string{"sentry", "--url", "https://mcp.example.com/mcp", "--header", "X-Org=acme", "--secret-header", "X-Key=k1", "--bearer-token-file", tokenFile},
			want: &metamcpv1.Server{Name: "sentry", SessionMode: metamcpv1.SessionMode_SESSION_MODE_SHARED,
				Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{
					Url:         "https://mcp.example.com/mcp",
					Headers:     map[string]*metamcpv1.Value{"X-Org": {Value: "acme"}, "X-Key": {Value: "k1", Secret: true}},
					BearerToken: &metamcpv1.Value{Value: "bearer-from-file", Secret: true},
				}}},
		},
		{
			name:  "sse with bearer from stdin",
			args:  []string{"old", "--url", "http://127.0.0.1:9/sse", "--transport", "sse", "--bearer-token-stdin"},
			stdin: "tok-stdin\n",
			want: &metamcpv1.Server{Name: "old", SessionMode: metamcpv1.SessionMode_SESSION_MODE_SHARED,
				Transport: &metamcpv1.Server_Sse{Sse: &metamcpv1.HTTPTransport{Url: "http://127.0.0.1:9/sse",
					BearerToken: &metamcpv1.Value{Value: "tok-stdin", Secret: true}}}},
		},
		{name: "no transport", args: []string{"x"}, usage: "needs a transport"},
		{name: "two transports", args: []string{"x", "--stdio", "a", "--url", "http://x"}, usage: "exclude each other"},
		{name: "env on url", args: []string{"x", "--url", "http://x", "--env", "A=b"}, usage: "for stdio servers"},
		{name: "header on stdio", args: []string{"x", "--stdio", "a", "--header", "A=b"}, usage: "for --url servers"},
		{name: "env without =", args: []string{"x", "--stdio", "a", "--env", "NOVALUE"}, usage: "wants KEY=VALUE"},
		{name: "secret env not in environment", args: []string{"x", "--stdio", "a", "--secret-env", "MMCTL_TEST_UNSET_VAR"}, usage: "is not set"},
		{name: "duplicate env", args: []string{"x", "--stdio", "a", "--env", "A=1", "--secret-env", "A=2"}, usage: "more than once"},
		{name: "bad duration", args: []string{"x", "--stdio", "a", "--call-timeout", "5x"}, usage: `invalid argument "5x" for "--call-timeout"`},
		{name: "negative duration", args: []string{"x", "--stdio", "a", "--call-timeout", "-5s"}, usage: "must not be negative"},
		{name: "bad session mode", args: []string{"x", "--stdio", "a", "--session-mode", "pooled"}, usage: "shared or per_client"},
		{name: "bad transport", args: []string{"x", "--url", "http://x", "--transport", "websocket"}, usage: "streamable_http or sse"},
		{name: "unterminated quote", args: []string{"x", "--stdio", "node 'x"}, usage: "unterminated"},
		{name: "missing name", args: []string{"--stdio", "a"}, usage: "needs a NAME"},
		{name: "two names", args: []string{"a", "b", "--stdio", "a"}, usage: "takes one NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAdmin{}
			addr := startFake(t, f)
			r := runMmctl(t, tt.stdin, append([]string{"--addr", addr, "create", "server"}, tt.args...)...)
			assertClean(t, r)
			if tt.usage != "" {
				if r.code != exitUsage || !strings.Contains(r.stderr, tt.usage) {
					t.Fatalf("exit %d, stderr %q; want exit 2 with %q", r.code, r.stderr, tt.usage)
				}
				if f.last() != nil {
					t.Errorf("a usage error still called the control plane: %v", f.last())
				}
				return
			}
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			req, _ := f.last().(*metamcpv1.CreateServerRequest)
			if diff := cmpDiff(tt.want, req.GetServer()); diff != "" {
				t.Errorf("server sent differs (-want +got):\n%s", diff)
			}
			if want := "server/" + tt.want.GetName() + " created (revision 7)\n"; r.stdout != want {
				t.Errorf("stdout = %q, want %q", r.stdout, want)
			}
		})
	}
}

// cmpDiff reports a difference between two messages, or "".
func cmpDiff(want, got proto.Message) string {
	if proto.Equal(want, got) {
		return ""
	}
	return "want: " + protocmpString(want) + "\ngot:  " + protocmpString(got)
}

func protocmpString(m proto.Message) string {
	b, err := marshalJSON(m)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestCreateOtherKinds(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want proto.Message
		out  string
	}{
		{
			name: "namespace members and prefixes",
			args: []string{"create", "ns", "dev", "--server", "github:gh", "--server", "fs", "--server", "db:", "--separator", "."},
			want: &metamcpv1.CreateNamespaceRequest{Namespace: &metamcpv1.Namespace{Name: "dev", Separator: ".", Members: []*metamcpv1.NamespaceMember{
				{Server: "github", Prefix: proto.String("gh")}, {Server: "fs"}, {Server: "db", Prefix: proto.String("")},
			}}},
			out: "namespace/dev created\n",
		},
		{
			name: "endpoint with rate limits and jwt",
			args: []string{"create", "endpoint", "prod", "--namespace", "prod", "--rate-limit", "a", "--rate-limit", "b",
				"--jwt-issuer", "https://idp", "--jwt-audience", "mm", "--disable-sse"},
			want: &metamcpv1.CreateEndpointRequest{Endpoint: &metamcpv1.Endpoint{Name: "prod", Namespace: "prod", RateLimits: []string{"a", "b"},
				Auth:       &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{Issuer: "https://idp", Audiences: []string{"mm"}}},
				Transports: &metamcpv1.Transports{DisableSse: true}}},
			out: "endpoint/prod created\n",
		},
		{
			name: "anonymous endpoint",
			args: []string{"create", "ep", "local", "--namespace", "dev", "--anonymous"},
			want: &metamcpv1.CreateEndpointRequest{Endpoint: &metamcpv1.Endpoint{Name: "local", Namespace: "dev",
				Auth: &metamcpv1.EndpointAuth{Anonymous: true}}},
			out: "endpoint/local created\n",
		},
		{
			name: "rate limit",
			args: []string{"create", "rl", "pages", "--rate", "1", "--per", "1m", "--burst", "2", "--key", "api-key",
				"--server", "notion", "--tool", "notion__create_*", "--on-redis-failure", "local"},
			want: &metamcpv1.CreateRateLimitPolicyRequest{RateLimitPolicy: &metamcpv1.RateLimitPolicy{Name: "pages", Rate: 1, Burst: proto.Int64(2),
				Period: durationpb.New(time.Minute), Key: metamcpv1.RateLimitKey_RATE_LIMIT_KEY_API_KEY, Server: "notion",
				Tool: "notion__create_*", OnRedisFailure: metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_LOCAL}},
			out: "ratelimit/pages created\n",
		},
		{
			name: "token",
			args: []string{"create", "token", "dp1", "--scope", "sync"},
			want: &metamcpv1.CreateTokenRequest{Token: &metamcpv1.Token{Name: "dp1", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}},
			out:  "token/dp1 created\ntoken: mmt_secretsecret\nStore this token now: it is not shown again.\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAdmin{}
			addr := startFake(t, f)
			r := runMmctl(t, "", append([]string{"--addr", addr}, tt.args...)...)
			assertClean(t, r)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			if diff := cmpDiff(tt.want, f.last()); diff != "" {
				t.Errorf("request differs:\n%s", diff)
			}
			if r.stdout != tt.out {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.out)
			}
		})
	}
}

func TestCreateUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"create"}, "create needs a kind"},
		{[]string{"create", "pod", "x"}, `unknown kind "pod"`},
		{[]string{"create", "endpoint", "x"}, "needs --namespace"},
		{[]string{"create", "ratelimit", "x"}, "needs --rate"},
		{[]string{"create", "ratelimit", "x", "--rate", "0"}, "at least 1"},
		{[]string{"create", "ratelimit", "x", "--rate", "1", "--per", "soon"}, `invalid argument "soon" for "--per"`},
		{[]string{"create", "ratelimit", "x", "--rate", "1", "--key", "moon"}, "principal, api_key, client_ip or global"},
		{[]string{"create", "apikey", "x"}, "needs --endpoint"},
		{[]string{"create", "apikey", "x", "--endpoint", "e", "--expires", "later"}, "invalid --expires"},
		{[]string{"create", "token", "x"}, "--scope is required"},
		{[]string{"create", "token", "x", "--scope", "root"}, "admin (for mmctl) or sync"},
		{[]string{"create", "namespace", "x", "--server", ":p"}, "invalid --server"},
		{[]string{"get"}, "needs a kind"},
		{[]string{"get", "pods"}, `unknown kind "pods"`},
		{[]string{"describe", "server"}, "needs a NAME"},
		{[]string{"delete", "token", "t"}, "revoked, not deleted"},
		{[]string{"delete", "dataplane", "d"}, "cannot delete dataplanes"},
		{[]string{"revoke", "server", "s"}, "cannot revoke servers"},
		{[]string{"apply"}, "apply needs -f"},
		{[]string{"import", "a.json", "b.json"}, "import takes one FILE"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"get", "servers", "--nope"}, "unknown flag: --nope"},
		{[]string{"get", "servers", "-o", "xml"}, `invalid --output "xml"`},
		{[]string{"get", "servers", "--timeout", "0s"}, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := &fakeAdmin{}
			addr := startFake(t, f)
			r := runMmctl(t, "", append([]string{"--addr", addr}, tt.args...)...)
			assertClean(t, r)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 with %q", r.code, r.stderr, tt.want)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
				t.Errorf("a usage error took %d lines: %q", n+1, r.stderr)
			}
		})
	}
}

func TestErrorMapping(t *testing.T) {
	badRequest, err := status.New(codes.InvalidArgument, "invalid config: Server \"github\": stdio.command: required").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "Server/github: stdio.command", Description: "required: the program to run"},
			{Field: "Server/github: timeouts.call", Description: "must not be negative"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		err   error
		token string
		want  string
	}{
		{"unauthenticated with token", status.Error(codes.Unauthenticated, "bad token"), "wrong", "error: the control plane refused the token: pass --token or set METAMCP_TOKEN\n"},
		{"unauthenticated without token", status.Error(codes.Unauthenticated, "missing"), "", "error: the control plane needs an admin token: pass --token or set METAMCP_TOKEN\n"},
		{"not found", status.Error(codes.NotFound, `server "x" not found`), "t", "error: server \"x\" not found\n"},
		{"already exists", status.Error(codes.AlreadyExists, `server "x" already exists`), "t", "error: server \"x\" already exists: change it with mmctl edit server x, or with mmctl apply -f FILE\n"},
		{"in use", status.Error(codes.FailedPrecondition, `server "x" is used by namespace "dev": remove it from the namespace first`), "t",
			"error: server \"x\" is used by namespace \"dev\": remove it from the namespace first\n"},
		{"permission", status.Error(codes.PermissionDenied, "token scope sync may not call the admin API"), "t",
			"error: token scope sync may not call the admin API\n"},
		{"kinds in CLI words", status.Error(codes.FailedPrecondition, `cannot delete Server "gh": still used by Namespace "dev", RateLimitPolicy "rl"`), "t",
			"error: cannot delete server \"gh\": still used by namespace \"dev\", ratelimit \"rl\"\n"},
		{"invalid with details", badRequest.Err(), "t",
			"error: invalid server \"x\":\n  Server/github: stdio.command: required: the program to run\n  Server/github: timeouts.call: must not be negative\n"},
		{"invalid without details", status.Error(codes.InvalidArgument, "name must be a DNS label"), "t", "error: invalid server \"x\": name must be a DNS label\n"},
		{"internal", status.Error(codes.Internal, "database is on fire"), "t", "error: the control plane failed: database is on fire (code Internal)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAdmin{err: tt.err}
			addr := startFake(t, f)
			r := runMmctl(t, "", "--addr", addr, "--token", tt.token, "create", "server", "x", "--stdio", "run")
			assertClean(t, r)
			if r.code != exitError || r.stderr != tt.want {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1, stderr:\n%s", r.code, r.stderr, tt.want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	addr := deadAddr(t)
	r := runMmctl(t, "", "--addr", addr, "get", "servers")
	assertClean(t, r)
	want := "error: cannot reach the control plane at " + addr + " (connection refused): is it running? (set --addr or METAMCP_ADDR)\n"
	if r.code != exitError || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestTokenAndWarnings(t *testing.T) {
	f := &fakeAdmin{warning: "server \"x\" has no call timeout"}
	addr := startFake(t, f)
	r := runMmctl(t, "", "--addr", addr, "--token", "s3cret", "create", "server", "x", "--stdio", "run")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stderr != "warning: server \"x\" has no call timeout\n" {
		t.Errorf("stderr = %q", r.stderr)
	}
	if got := f.lastAuth(); got != "Bearer s3cret" {
		t.Errorf("authorization = %q", got)
	}
}

func TestChangeLine(t *testing.T) {
	tests := []struct {
		change *metamcpv1.Change
		want   string
	}{
		{&metamcpv1.Change{Kind: "Server", Name: "github", Action: metamcpv1.ChangeAction_CHANGE_ACTION_CREATED}, "server/github created"},
		{&metamcpv1.Change{Kind: "Namespace", Name: "dev", Action: metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED, Fields: []string{"members", "separator"}},
			"namespace/dev configured (fields: members, separator)"},
		{&metamcpv1.Change{Kind: "Endpoint", Name: "dev", Action: metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED}, "endpoint/dev configured"},
		{&metamcpv1.Change{Kind: "RateLimitPolicy", Name: "per-user", Action: metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED}, "ratelimit/per-user unchanged"},
	}
	for _, tt := range tests {
		if got := changeLine(tt.change); got != tt.want {
			t.Errorf("changeLine(%v) = %q, want %q", tt.change, got, tt.want)
		}
	}
}

func TestTables(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := func(ago time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-ago)) }
	a := &app{now: func() time.Time { return now }}
	tests := []struct {
		kind  string
		items []proto.Message
		resp  proto.Message
		want  string
	}{
		{
			kind: "server",
			items: []proto.Message{
				&metamcpv1.Server{Name: "github", Revision: 3, CreateTime: ts(90 * time.Second), Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
					Command: "npx", Args: []string{"-y", "@modelcontextprotocol/server-github"},
					Env: map[string]*metamcpv1.Value{"GITHUB_TOKEN": {Secret: true, Set: true}}}}},
				&metamcpv1.Server{Name: "sentry", Revision: 12, CreateTime: ts(50 * time.Hour), SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
					Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: "https://mcp.sentry.dev/mcp"}}},
			},
			want: "" +
				"NAME     TRANSPORT         TARGET                                       SESSION-MODE   REVISION   AGE\n" +
				"github   stdio             npx -y @modelcontextprotocol/server-github   shared         3          1m\n" +
				"sentry   streamable_http   https://mcp.sentry.dev/mcp                   per_client     12         2d\n",
		},
		{
			kind: "dataplane",
			resp: &metamcpv1.ListDataPlanesResponse{Revision: 12, StoreId: "bbbbbbbb2222"},
			items: []proto.Message{
				&metamcpv1.DataPlane{NodeId: "dp-1", Address: "10.0.0.1:12008", Version: "v1.0.0", Connected: true, AppliedRevision: 12, LastSeen: ts(2 * time.Second)},
				&metamcpv1.DataPlane{NodeId: "dp-2", Address: "10.0.0.2:12008", Version: "v1.0.0", Connected: true, AppliedRevision: 11, LastSeen: ts(3 * time.Second),
					LastError: "invalid snapshot:\n server x", LastErrorRevision: 12},
				&metamcpv1.DataPlane{NodeId: "dp-3", Connected: false, AppliedRevision: 9, LastSeen: ts(3 * time.Hour)},
				&metamcpv1.DataPlane{NodeId: "dp-4", Connected: true, AppliedRevision: 12, LastSeen: ts(time.Second), ApplyOutcome: metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL,
					RefusedServers: []*metamcpv1.RefusedServer{{Server: "sh", Reason: "stdio command not allowed"}}},
				&metamcpv1.DataPlane{NodeId: "dp-5", Connected: true, AppliedRevision: 11, LastSeen: ts(time.Second), ApplyOutcome: metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY,
					KeysRevision: 12, LastError: "bad", LastErrorRevision: 12},
				&metamcpv1.DataPlane{NodeId: "dp-6", Connected: true, AppliedRevision: 58, LastSeen: ts(time.Second), StoreId: "aaaaaaaa1111"},
				&metamcpv1.DataPlane{NodeId: "dp-7", Connected: true, AppliedRevision: 12, LastSeen: ts(time.Second), StoreId: "bbbbbbbb2222",
					PreviousStoreId: "aaaaaaaa1111", PreviousStoreRevision: 58},
			},
			want: "" +
				"NODE   ADDRESS          VERSION   CONNECTED   REVISION   STATUS                                                                  LAST-SEEN\n" +
				"dp-1   10.0.0.1:12008   v1.0.0    yes         12         ok                                                                      2s ago\n" +
				"dp-2   10.0.0.2:12008   v1.0.0    yes         11         refused: invalid snapshot: server x, stale                              3s ago\n" +
				"dp-3   -                -         no          9          stale                                                                   3h ago\n" +
				"dp-4   -                -         yes         12         partial: sh: stdio command not allowed                                  1s ago\n" +
				"dp-5   -                -         yes         11         refused (keys of 12 applied): bad, stale                                1s ago\n" +
				"dp-6   -                -         yes         58         serves another store's config (store aaaaaaaa)                          1s ago\n" +
				"dp-7   -                -         yes         12         took this store's config over revision 58 of another store (aaaaaaaa)   1s ago\n",
		},
	}
	for _, tt := range tests {
		k, err := lookupKind(tt.kind)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		if err := a.table(k, tt.resp, tt.items).write(&out); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		if got != tt.want {
			t.Errorf("%s table:\n%s\nwant:\n%s", tt.kind, got, tt.want)
		}
	}
}

func TestDescribeNeverShowsSecrets(t *testing.T) {
	s := &metamcpv1.Server{Name: "github", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
		Command: "npx",
		Env: map[string]*metamcpv1.Value{
			"LEAKED":  {Value: "clear-text-secret", Secret: true},
			"SET":     {Secret: true, Set: true},
			"UNSET":   {Secret: true},
			"VISIBLE": {Value: "plain"},
		},
	}}}
	a := &app{now: time.Now}
	redact(s)
	var out strings.Builder
	if err := a.describe(&out, s, nil); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"LEAKED=<set>", "SET=<set>", "UNSET=<not set>", "VISIBLE=plain", "Command:"} {
		if !strings.Contains(got, want) {
			t.Errorf("describe lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "clear-text-secret") {
		t.Errorf("describe shows a secret:\n%s", got)
	}
}

func TestRedact(t *testing.T) {
	m := &metamcpv1.ListServersResponse{Servers: []*metamcpv1.Server{{
		Name: "x",
		Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{
			Headers:     map[string]*metamcpv1.Value{"A": {Value: "hdr-secret", Secret: true, Sealed: []byte("sealed")}, "B": {Value: "plain"}},
			BearerToken: &metamcpv1.Value{Value: "bearer-secret", Secret: true},
		}},
	}}}
	redact(m)
	b, _ := marshalJSON(m)
	for _, bad := range []string{"hdr-secret", "bearer-secret", "c2VhbGVk"} {
		if strings.Contains(string(b), bad) {
			t.Errorf("redacted output contains %q: %s", bad, b)
		}
	}
	if !strings.Contains(string(b), "plain") {
		t.Errorf("redact dropped a plain value: %s", b)
	}
	k := &metamcpv1.CreateApiKeyResponse{ApiKey: &metamcpv1.ApiKey{KeyHash: []byte("h")}, Key: "mm_x"}
	redact(k)
	if k.GetApiKey().GetKeyHash() != nil || k.GetKey() != "mm_x" {
		t.Errorf("redact(apikey) = %v", k)
	}
}

func TestResourcesJSON(t *testing.T) {
	res := []*metamcpv1.Resource{
		{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{Name: "a", Revision: 4,
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "run",
				Env: map[string]*metamcpv1.Value{"T": {Secret: true, Set: true}}}}}}},
		{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{Name: "b"}}},
	}
	j, err := resourcesJSON(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `[
  {
    "apiVersion": "metamcp/v1",
    "kind": "Server",
    "name": "a",
    "stdio": {
      "command": "run",
      "env": {
        "T": {
          "secret": true
        }
      }
    }
  },
  {
    "apiVersion": "metamcp/v1",
    "kind": "Namespace",
    "name": "b"
  }
]
`
	if string(j) != want {
		t.Errorf("resourcesJSON =\n%s\nwant\n%s", j, want)
	}
	back, err := configfile.Parse(strings.NewReader(string(j)))
	if err != nil {
		t.Fatalf("the JSON export does not parse back: %v", err)
	}
	if len(back) != 2 || back[0].GetServer().GetName() != "a" || back[1].GetNamespace().GetName() != "b" {
		t.Errorf("parsed back: %v", back)
	}
}

func TestConnectionSettingsPrecedence(t *testing.T) {
	f := &fakeAdmin{}
	addr := startFake(t, f)
	cfgDir := t.TempDir()
	cfgPath := filepath.Join(cfgDir, "mmctl.yaml")
	write := func(content string) {
		if err := os.WriteFile(cfgPath, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The config file alone.
	write("addr: " + addr + "\ntoken: from-file\n")
	r := runMmctl(t, "", "--config", cfgPath, "revision")
	if r.code != 0 || r.stdout != "42\n" {
		t.Fatalf("config file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := f.lastAuth(); got != "Bearer from-file" {
		t.Errorf("token from the config file: authorization = %q", got)
	}

	// The environment beats the file; the flag beats the environment.
	t.Setenv("METAMCP_TOKEN", "from-env")
	runMmctl(t, "", "--config", cfgPath, "revision")
	if got := f.lastAuth(); got != "Bearer from-env" {
		t.Errorf("token from the environment: authorization = %q", got)
	}
	runMmctl(t, "", "--config", cfgPath, "--token", "from-flag", "revision")
	if got := f.lastAuth(); got != "Bearer from-flag" {
		t.Errorf("token from the flag: authorization = %q", got)
	}

	// METAMCP_ADDR beats the file's addr.
	t.Setenv("METAMCP_ADDR", deadAddr(t))
	r = runMmctl(t, "", "--config", cfgPath, "revision")
	if r.code != exitError || !strings.Contains(r.stderr, "cannot reach") {
		t.Errorf("METAMCP_ADDR ignored: exit %d, stderr %q", r.code, r.stderr)
	}
	os.Unsetenv("METAMCP_ADDR")

	// The default path under XDG_CONFIG_HOME is read when present.
	xdg := t.TempDir()
	if err := os.MkdirAll(filepath.Join(xdg, "metamcp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(xdg, "metamcp", "mmctl.yaml"), []byte("addr: "+addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", xdg)
	var stdout, stderr strings.Builder
	if code := run(t.Context(), []string{"revision"}, strings.NewReader(""), &stdout, &stderr); code != 0 || stdout.String() != "42\n" {
		t.Errorf("config under $XDG_CONFIG_HOME: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}

	// A named file that is missing, and a file with an unknown key, fail.
	r = runMmctl(t, "", "--config", filepath.Join(cfgDir, "missing.yaml"), "revision")
	if r.code != exitError || !strings.Contains(r.stderr, "missing.yaml") {
		t.Errorf("missing config: exit %d, stderr %q", r.code, r.stderr)
	}
	write("host: x\n")
	r = runMmctl(t, "", "--config", cfgPath, "revision")
	if r.code != exitError || !strings.Contains(r.stderr, "known keys: addr, token, tls, tlsCA") {
		t.Errorf("unknown key: exit %d, stderr %q", r.code, r.stderr)
	}
	assertClean(t, r)

	// A config file with a token readable by others draws a warning.
	write("addr: " + addr + "\ntoken: t\n")
	if err := os.Chmod(cfgPath, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("METAMCP_TOKEN")
	r = runMmctl(t, "", "--config", cfgPath, "revision")
	if r.code != 0 || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("world-readable config: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestGetDataPlanesAndJSON(t *testing.T) {
	f := &fakeAdmin{dataPlanes: &metamcpv1.ListDataPlanesResponse{Revision: 5, DataPlanes: []*metamcpv1.DataPlane{
		{NodeId: "dp-1", Address: "127.0.0.1:12008", Connected: true, AppliedRevision: 4},
	}}}
	addr := startFake(t, f)
	r := runMmctl(t, "", "--addr", addr, "get", "dp")
	if r.code != 0 || !strings.Contains(r.stdout, "stale") {
		t.Errorf("get dp: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runMmctl(t, "", "--addr", addr, "get", "dp", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"nodeId": "dp-1"`) || !strings.Contains(r.stdout, `"revision": "5"`) {
		t.Errorf("get dp -o json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runMmctl(t, "", "--addr", addr, "describe", "dp", "dp-1")
	if r.code != 0 || !strings.Contains(r.stdout, "Applied revision:") {
		t.Errorf("describe dp: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runMmctl(t, "", "--addr", addr, "describe", "dp", "dp-9")
	if r.code != exitError || r.stderr != "error: dataplane \"dp-9\" not found\n" {
		t.Errorf("describe missing dp: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCreateApiKeyShowsKeyOnce(t *testing.T) {
	f := &fakeAdmin{}
	addr := startFake(t, f)
	r := runMmctl(t, "", "--addr", addr, "create", "apikey", "alice", "--endpoint", "dev", "--expires", "30d")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := "apikey/alice created\nkey: mm_abcdefghijklmnop\nStore this key now: it is not shown again.\n"
	if r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	req := f.last().(*metamcpv1.CreateApiKeyRequest)
	if exp := req.GetApiKey().GetExpireTime().AsTime(); exp.Before(time.Now().Add(29*24*time.Hour)) || exp.After(time.Now().Add(31*24*time.Hour)) {
		t.Errorf("expiry %v is not 30 days from now", exp)
	}
	r = runMmctl(t, "", "--addr", addr, "create", "apikey", "bob", "--endpoint", "*", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"key": "mm_abcdefghijklmnop"`) || !strings.Contains(r.stdout, `"apiKey": {`) ||
		strings.Contains(r.stdout, "keyHash") {
		t.Errorf("-o json: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestHumanAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 5 * time.Second: "5s", 90 * time.Second: "1m", 3 * time.Hour: "3h",
		47 * time.Hour: "47h", 72 * time.Hour: "3d", 3 * 365 * 24 * time.Hour: "3y",
	} {
		if got := humanAge(d); got != want {
			t.Errorf("humanAge(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestUnescapeHeader(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                        "plain",
		`tool name \u00e9t\u00e9 long`: "tool name été long",
		`bad \u00zz escape`:            `bad \u00zz escape`,
		`short \u12`:                   `short \u12`,
	} {
		if got := unescapeHeader(in); got != want {
			t.Errorf("unescapeHeader(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestApplyCommand(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"10-servers.yaml": "kind: Server\nname: github\nstdio: {command: npx}\n---\nkind: Server\nname: fs\nstdio: {command: npx}\n",
		"20-ns.yml":       "kind: Namespace\nname: dev\nmembers: [{server: github}]\n",
		"30-rl.json":      `{"kind": "RateLimitPolicy", "name": "per-user", "rate": 5}`,
		"notes.txt":       "not config",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The fake also sends the body's warning as metadata: it is printed once.
	f := &fakeAdmin{warning: "tool names may exceed 64 characters"}
	addr := startFake(t, f)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"apply", "-f", dir}, "server/github created\nnamespace/dev configured (fields: members)\nratelimit/per-user unchanged\nrevision 12\n"},
		{[]string{"apply", "-f", dir, "--dry-run"}, "server/github created (dry run)\nnamespace/dev configured (fields: members) (dry run)\n" +
			"ratelimit/per-user unchanged (dry run)\nrevision 12 (dry run)\n"},
	} {
		r := runMmctl(t, "", append([]string{"--addr", addr}, tt.args...)...)
		assertClean(t, r)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("%v: exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", tt.args, r.code, r.stdout, tt.want, r.stderr)
		}
		if r.stderr != "warning: tool names may exceed 64 characters\n" {
			t.Errorf("%v: stderr = %q", tt.args, r.stderr)
		}
		req := f.last().(*metamcpv1.ApplyRequest)
		var got []string
		for _, res := range req.GetResources() {
			kind, name := configfile.KindOf(res)
			got = append(got, kind+"/"+name)
		}
		if want := "Server/github Server/fs Namespace/dev RateLimitPolicy/per-user"; strings.Join(got, " ") != want {
			t.Errorf("resources sent: %v, want %s (files in name order)", got, want)
		}
		if req.GetDryRun() != strings.Contains(tt.want, "dry run") {
			t.Errorf("dry_run = %v", req.GetDryRun())
		}
	}

	// Stdin, and stdin named twice.
	r := runMmctl(t, "kind: Server\nname: x\nstdio: {command: a}\n", "--addr", addr, "apply", "-f", "-")
	if r.code != 0 {
		t.Errorf("apply -f -: %d %s", r.code, r.stderr)
	}
	r = runMmctl(t, "", "--addr", addr, "apply", "-f", "-", "-f", "-")
	if r.code != exitUsage {
		t.Errorf("apply -f - -f -: exit %d, stderr %q", r.code, r.stderr)
	}

	// Problems in files name the file and never reach the control plane.
	before := f.count()
	for content, want := range map[string]string{
		"kind: Server\nname: x\nstdio: {command: a}\nbogus: 1\n": `unknown field "bogus"`,
		"kind: Server\nname: [x\n":                               "invalid YAML",
		"kind: Pod\nname: x\n":                                   `unknown kind "Pod"`,
		"# only a comment\n":                                     "no resources found",
	} {
		path := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runMmctl(t, "", "--addr", addr, "apply", "-f", path)
		assertClean(t, r)
		if r.code != exitError || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, path) {
			t.Errorf("apply of %q: exit %d, stderr %q; want exit 1, the path and %q", content, r.code, r.stderr, want)
		}
	}
	if f.count() != before {
		t.Errorf("invalid files reached the control plane")
	}
}

func TestEmptyListJSON(t *testing.T) {
	f := &fakeAdmin{dataPlanes: &metamcpv1.ListDataPlanesResponse{Revision: 3}}
	addr := startFake(t, f)
	for args, want := range map[string]string{
		"get servers -o json": "{\n  \"servers\": []\n}\n",
		"get dp -o json":      "{\n  \"dataPlanes\": [],\n  \"revision\": \"3\"\n}\n",
	} {
		r := runMmctl(t, "", append([]string{"--addr", addr}, strings.Fields(args)...)...)
		if r.code != 0 || r.stdout != want {
			t.Errorf("%s: exit %d, stdout %q, want %q (stderr %q)", args, r.code, r.stdout, want, r.stderr)
		}
	}
}
