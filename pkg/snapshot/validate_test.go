package snapshot

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func secret(v string) *metamcpv1.Value { return &metamcpv1.Value{Value: v, Secret: true} }
func plain(v string) *metamcpv1.Value  { return &metamcpv1.Value{Value: v} }

// validConfig is a config touching every resource kind, with no violation
// and no warning; each test case breaks one thing.
func validConfig() *metamcpv1.Config {
	return &metamcpv1.Config{
		Servers: []*metamcpv1.Server{
			{
				Name:        "github",
				Description: "GitHub tools",
				Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
					Command: "npx",
					Args:    []string{"-y", "@modelcontextprotocol/server-github"},
					Env: map[string]*metamcpv1.Value{
						"GITHUB_TOKEN": secret("ghp_x"),
						"LOG_LEVEL":    plain("debug"),
						"EMPTY":        plain(""),
					},
				}},
				SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
				Timeouts:    &metamcpv1.Timeouts{Call: durationpb.New(time.Minute), Initialize: durationpb.New(0)},
				Limits:      &metamcpv1.Limits{MaxProcesses: 4, IdleTtl: durationpb.New(24 * time.Hour)},
			},
			{
				Name: "remote",
				Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{
					Url:         "https://mcp.example.com/mcp",
					Headers:     map[string]*metamcpv1.Value{"X-Api-Key": secret("k"), "X-Team": plain("a\tb")},
					BearerToken: secret("tok"),
				}},
			},
			{
				Name:      "events",
				Transport: &metamcpv1.Server_Sse{Sse: &metamcpv1.HTTPTransport{Url: "http://127.0.0.1:9000/sse"}},
			},
		},
		Namespaces: []*metamcpv1.Namespace{{
			Name: "dev",
			Members: []*metamcpv1.NamespaceMember{
				{
					Server:     "github",
					AllowTools: []string{"*"},
					DenyTools:  []string{"delete_*", "drop_?able"},
					ToolOverrides: map[string]*metamcpv1.ToolOverride{
						"search_code": {Name: "search", Title: "Search"},
						"create_pr":   {Disabled: true},
						"drop table":  {Disabled: true},
					},
				},
				{Server: "remote", Prefix: proto.String("rm")},
				{Server: "events", Prefix: proto.String("")},
			},
		}},
		Endpoints: []*metamcpv1.Endpoint{
			{
				Name:       "team",
				Namespace:  "dev",
				RateLimits: []string{"per-user"},
				Auth: &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{
					Issuer:         "https://idp.example.com/",
					Audiences:      []string{"metamcp"},
					JwksUrl:        "https://idp.example.com/jwks.json",
					RequiredScopes: []string{"mcp:call"},
				}},
				Transports: &metamcpv1.Transports{DisableSse: true},
			},
			{Name: "local", Namespace: "dev", Auth: &metamcpv1.EndpointAuth{Anonymous: true}},
		},
		RateLimits: []*metamcpv1.RateLimitPolicy{{
			Name:           "per-user",
			Server:         "github",
			Tool:           "github__*",
			Key:            metamcpv1.RateLimitKey_RATE_LIMIT_KEY_API_KEY,
			Rate:           10,
			Period:         durationpb.New(time.Minute),
			OnRedisFailure: metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_LOCAL,
		}},
		ApiKeys: []*metamcpv1.ApiKeyEntry{
			{Name: "alice", KeyHash: bytes.Repeat([]byte{1}, 32), Endpoints: []string{"team"}},
			{Name: "bot", KeyHash: bytes.Repeat([]byte{2}, 32), Endpoints: []string{"*"}, ExpireTime: timestamppb.New(time.Unix(2e9, 0))},
		},
		SessionKeys: &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{3}, 32)},
	}
}

func TestValidateValid(t *testing.T) {
	for name, cfg := range map[string]*metamcpv1.Config{
		"nil":   nil,
		"empty": {},
		"full":  validConfig(),
	} {
		t.Run(name, func(t *testing.T) {
			warnings, err := Validate(cfg)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if len(warnings) > 0 {
				t.Fatalf("unexpected warnings: %q", warnings)
			}
		})
	}
}

// want is one expected violation: Description must contain desc.
type want struct {
	kind, name, field, desc string
}

func server(cfg *metamcpv1.Config, name string) *metamcpv1.Server {
	for _, s := range cfg.Servers {
		if s.Name == name {
			return s
		}
	}
	panic("no server " + name)
}

func stdio(cfg *metamcpv1.Config) *metamcpv1.StdioTransport {
	return server(cfg, "github").GetStdio()
}

func remote(cfg *metamcpv1.Config) *metamcpv1.HTTPTransport {
	return server(cfg, "remote").GetStreamableHttp()
}

func ns(cfg *metamcpv1.Config) *metamcpv1.Namespace { return cfg.Namespaces[0] }
func ep(cfg *metamcpv1.Config) *metamcpv1.Endpoint  { return cfg.Endpoints[0] }
func jwt(cfg *metamcpv1.Config) *metamcpv1.JWTAuth  { return cfg.Endpoints[0].Auth.Jwt }
func rl(cfg *metamcpv1.Config) *metamcpv1.RateLimitPolicy {
	return cfg.RateLimits[0]
}

func TestValidateViolations(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(cfg *metamcpv1.Config)
		want   []want
	}{
		// Every resource.
		{"server name empty", func(c *metamcpv1.Config) { server(c, "events").Name = "" },
			[]want{{"Server", "", "name", "is required"}, {"Namespace", "dev", "members[2].server", `server "events" does not exist`}}},
		{"server name uppercase", func(c *metamcpv1.Config) {
			c.Servers = append(c.Servers, &metamcpv1.Server{Name: "My_Server", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "x"}}})
		}, []want{{"Server", "My_Server", "name", `lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-'), at most 63 characters; try "my-server"`}}},
		{"server name too long", func(c *metamcpv1.Config) {
			c.Servers = append(c.Servers, &metamcpv1.Server{Name: strings.Repeat("a", 64), Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "x"}}})
		}, []want{{"Server", strings.Repeat("a", 64), "name", "at most 63 characters"}}},
		{"server name trailing dash", func(c *metamcpv1.Config) {
			c.Servers = append(c.Servers, &metamcpv1.Server{Name: "abc-", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "x"}}})
		}, []want{{"Server", "abc-", "name", "lowercase DNS label"}}},
		{"duplicate server", func(c *metamcpv1.Config) {
			c.Servers = append(c.Servers, proto.Clone(server(c, "events")).(*metamcpv1.Server))
		}, []want{{"Server", "events", "name", `servers[2] is also named "events": names must be unique`}}},
		{"duplicate namespace", func(c *metamcpv1.Config) {
			c.Namespaces = append(c.Namespaces, &metamcpv1.Namespace{Name: "dev"})
		}, []want{{"Namespace", "dev", "name", "namespaces[0] is also named"}}},
		{"duplicate endpoint", func(c *metamcpv1.Config) {
			c.Endpoints = append(c.Endpoints, &metamcpv1.Endpoint{Name: "local", Namespace: "dev"})
		}, []want{{"Endpoint", "local", "name", "endpoints[1] is also named"}}},
		{"duplicate rate limit", func(c *metamcpv1.Config) {
			c.RateLimits = append(c.RateLimits, &metamcpv1.RateLimitPolicy{Name: "per-user", Rate: 1})
		}, []want{{"RateLimitPolicy", "per-user", "name", "rateLimits[0] is also named"}}},
		{"description too long", func(c *metamcpv1.Config) { ep(c).Description = strings.Repeat("é", 1025) },
			[]want{{"Endpoint", "team", "description", "is 1025 characters: at most 1024"}}},
		{"description 1024 runes ok", func(c *metamcpv1.Config) { ep(c).Description = strings.Repeat("é", 1024) }, nil},

		// Server.
		{"no transport", func(c *metamcpv1.Config) { server(c, "events").Transport = nil },
			[]want{{"Server", "events", "transport", "exactly one transport is required"}}},
		{"stdio command missing", func(c *metamcpv1.Config) { stdio(c).Command = " " },
			[]want{{"Server", "github", "stdio.command", "is required"}}},
		{"stdio nil", func(c *metamcpv1.Config) {
			server(c, "github").Transport = &metamcpv1.Server_Stdio{}
		}, []want{{"Server", "github", "stdio.command", "is required"}}},
		{"stdio NUL in arg", func(c *metamcpv1.Config) { stdio(c).Args = append(stdio(c).Args, "a\x00b") },
			[]want{{"Server", "github", "stdio.args[2]", "NUL"}}},
		{"env key empty", func(c *metamcpv1.Config) { stdio(c).Env[""] = plain("x") },
			[]want{{"Server", "github", `stdio.env[""]`, "must not be empty"}}},
		{"env key with =", func(c *metamcpv1.Config) { stdio(c).Env["A=B"] = plain("x") },
			[]want{{"Server", "github", `stdio.env["A=B"]`, "'=' or NUL"}}},
		{"env key with NUL", func(c *metamcpv1.Config) { stdio(c).Env["A\x00"] = plain("x") },
			[]want{{"Server", "github", `stdio.env["A\x00"]`, "'=' or NUL"}}},
		{"secret without value", func(c *metamcpv1.Config) { stdio(c).Env["GITHUB_TOKEN"].Value = "" },
			[]want{{"Server", "github", `stdio.env["GITHUB_TOKEN"].value`, "secret has no value"}}},
		{"sealed in config", func(c *metamcpv1.Config) { stdio(c).Env["LOG_LEVEL"].Sealed = []byte{1} },
			[]want{{"Server", "github", `stdio.env["LOG_LEVEL"].sealed`, "clear text"}}},
		{"url missing", func(c *metamcpv1.Config) { remote(c).Url = "" },
			[]want{{"Server", "remote", "streamableHttp.url", "is required"}}},
		{"url relative", func(c *metamcpv1.Config) { remote(c).Url = "/mcp" },
			[]want{{"Server", "remote", "streamableHttp.url", "absolute http or https"}}},
		{"url ftp", func(c *metamcpv1.Config) { server(c, "events").GetSse().Url = "ftp://x/sse" },
			[]want{{"Server", "events", "sse.url", "absolute http or https"}}},
		{"url no host", func(c *metamcpv1.Config) { remote(c).Url = "https:///mcp" },
			[]want{{"Server", "remote", "streamableHttp.url", "must include a host"}}},
		{"url unparsable", func(c *metamcpv1.Config) { remote(c).Url = "https://x y\x7f/" },
			[]want{{"Server", "remote", "streamableHttp.url", "is not a valid URL"}}},
		{"header name invalid", func(c *metamcpv1.Config) { remote(c).Headers["X Api"] = plain("v") },
			[]want{{"Server", "remote", `streamableHttp.headers["X Api"]`, "not a valid HTTP header name"}}},
		{"header value CRLF", func(c *metamcpv1.Config) { remote(c).Headers["X-Team"] = plain("a\r\nb") },
			[]want{{"Server", "remote", `streamableHttp.headers["X-Team"].value`, "control characters"}}},
		{"bearer token empty", func(c *metamcpv1.Config) { remote(c).BearerToken = &metamcpv1.Value{} },
			[]want{{"Server", "remote", "streamableHttp.bearerToken.value", "has no value"}}},
		{"negative timeout", func(c *metamcpv1.Config) {
			server(c, "github").Timeouts.List = durationpb.New(-time.Second)
		}, []want{{"Server", "github", "timeouts.list", "must not be negative"}}},
		{"timeout over 24h", func(c *metamcpv1.Config) {
			server(c, "github").Timeouts.Initialize = durationpb.New(25 * time.Hour)
		}, []want{{"Server", "github", "timeouts.initialize", "at most 24h"}}},
		{"invalid duration", func(c *metamcpv1.Config) {
			server(c, "github").Timeouts.Call = &durationpb.Duration{Seconds: 1, Nanos: -1}
		}, []want{{"Server", "github", "timeouts.call", "not a valid duration"}}},
		{"prefix extends another", func(c *metamcpv1.Config) {
			c.Namespaces[0].Members[1].Prefix = proto.String("github__b")
		}, []want{{"Namespace", "dev", "members[1].prefix", "starts with the prefix \"github\""}}},
		{"unprefixed override into another prefix", func(c *metamcpv1.Config) {
			c.Namespaces[0].Members[2].ToolOverrides = map[string]*metamcpv1.ToolOverride{"list": {Name: "rm__list"}}
		}, []want{{"Namespace", "dev", `members[2].toolOverrides["list"].name`, "members[1]"}}},
		{"list max age zero", func(c *metamcpv1.Config) {
			server(c, "github").ListMaxAge = durationpb.New(0)
		}, []want{{"Server", "github", "listMaxAge", "more than 0"}}},
		{"list max age on a volatile server", func(c *metamcpv1.Config) {
			server(c, "github").ListMaxAge = durationpb.New(time.Minute)
			server(c, "github").Volatile = true
		}, []want{{"Server", "github", "listMaxAge", "volatile"}}},
		{"idle ttl over 24h", func(c *metamcpv1.Config) {
			server(c, "github").Limits.IdleTtl = durationpb.New(24*time.Hour + 1)
		}, []want{{"Server", "github", "limits.idleTtl", "at most 24h"}}},
		{"negative limits", func(c *metamcpv1.Config) {
			server(c, "github").Limits.MaxProcesses = -1
			server(c, "github").Limits.MaxSessions = -2
		}, []want{
			{"Server", "github", "limits.maxProcesses", "must not be negative"},
			{"Server", "github", "limits.maxSessions", "must not be negative"},
		}},
		{"unknown session mode", func(c *metamcpv1.Config) { server(c, "github").SessionMode = 9 },
			[]want{{"Server", "github", "sessionMode", "unknown session mode 9"}}},

		// Namespace.
		{"member server missing", func(c *metamcpv1.Config) {
			ns(c).Members = append(ns(c).Members, &metamcpv1.NamespaceMember{Server: "gh"})
		}, []want{{"Namespace", "dev", "members[3].server", `server "gh" does not exist: create it first or fix the name`}}},
		{"member server empty", func(c *metamcpv1.Config) {
			ns(c).Members = append(ns(c).Members, &metamcpv1.NamespaceMember{Prefix: proto.String("x")})
		}, []want{{"Namespace", "dev", "members[3].server", "is required"}}},
		{"member server twice", func(c *metamcpv1.Config) {
			ns(c).Members = append(ns(c).Members, &metamcpv1.NamespaceMember{Server: "github", Prefix: proto.String("gh2")})
		}, []want{{"Namespace", "dev", "members[3].server", `server "github" is already mounted at members[0]`}}},
		{"prefix charset", func(c *metamcpv1.Config) { ns(c).Members[1].Prefix = proto.String("r m") },
			[]want{{"Namespace", "dev", "members[1].prefix", "at most 64 characters of A-Z"}}},
		{"prefix too long", func(c *metamcpv1.Config) { ns(c).Members[1].Prefix = proto.String(strings.Repeat("p", 65)) },
			[]want{{"Namespace", "dev", "members[1].prefix", "at most 64"}}},
		{"separator invalid", func(c *metamcpv1.Config) { ns(c).Separator = "::" },
			[]want{{"Namespace", "dev", "separator", `"::" must be 1 to 8 characters`}}},
		{"separator too long", func(c *metamcpv1.Config) { ns(c).Separator = "_________" },
			[]want{{"Namespace", "dev", "separator", "1 to 8"}}},
		{"prefix collision", func(c *metamcpv1.Config) { ns(c).Members[1].Prefix = proto.String("github") },
			[]want{{"Namespace", "dev", "members[1].prefix", `prefix "github" is also used by members[0]`}}},
		{"two empty prefixes", func(c *metamcpv1.Config) { ns(c).Members[1].Prefix = proto.String("") },
			[]want{{"Namespace", "dev", "members[2].prefix", "members[1] has no prefix either"}}},
		{"allow glob empty", func(c *metamcpv1.Config) { ns(c).Members[0].AllowTools = []string{"ok", ""} },
			[]want{{"Namespace", "dev", "members[0].allowTools[1]", "must not be empty"}}},
		{"deny glob charset", func(c *metamcpv1.Config) { ns(c).Members[0].DenyTools = []string{"a/b"} },
			[]want{{"Namespace", "dev", "members[0].denyTools[0]", `character '/'`}}},
		{"override key empty", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides[""] = &metamcpv1.ToolOverride{Name: "x"}
		}, []want{{"Namespace", "dev", `members[0].toolOverrides[""]`, "must not be empty"}}},
		{"override name charset", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["search_code"].Name = "search code"
		}, []want{{"Namespace", "dev", `members[0].toolOverrides["search_code"].name`, "1 to 128 characters"}}},
		{"override name too long", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["search_code"].Name = strings.Repeat("s", 129)
		}, []want{{"Namespace", "dev", `members[0].toolOverrides["search_code"].name`, "1 to 128 characters"}}},
		{"exposed name too long", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["search_code"].Name = strings.Repeat("s", 121)
		}, []want{{"Namespace", "dev", `members[0].toolOverrides["search_code"]`, "exposed name \"github__sss"}}},
		{"exposed name from invalid key", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["get file"] = &metamcpv1.ToolOverride{Title: "Get"}
		}, []want{{"Namespace", "dev", `members[0].toolOverrides["get file"]`, `exposed name "github__get file"`}}},
		{"override rename collision in member", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["find"] = &metamcpv1.ToolOverride{Name: "search"}
		}, []want{{"Namespace", "dev", `members[0].toolOverrides["search_code"]`, `exposes "github__search", as does members[0].toolOverrides["find"]`}}},
		{"override rename onto another key", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["search"] = &metamcpv1.ToolOverride{Title: "plain"}
		}, []want{{"Namespace", "dev", `members[0].toolOverrides["search_code"]`, `exposes "github__search"`}}},
		{"override collision across members", func(c *metamcpv1.Config) {
			ns(c).Members[1].Prefix = proto.String("github__x")
			ns(c).Members[1].ToolOverrides = map[string]*metamcpv1.ToolOverride{"y": {}}
			ns(c).Members[0].ToolOverrides["y"] = &metamcpv1.ToolOverride{Name: "x__y"}
		}, []want{
			{"Namespace", "dev", `members[1].toolOverrides["y"]`, `exposes "github__x__y", as does members[0].toolOverrides["y"]`},
			{"Namespace", "dev", "members[1].prefix", `starts with the prefix "github"`},
		}},
		{"disabled overrides expose nothing", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["find"] = &metamcpv1.ToolOverride{Name: "search", Disabled: true}
		}, nil},

		// Endpoint.
		{"endpoint namespace missing", func(c *metamcpv1.Config) { ep(c).Namespace = "prod" },
			[]want{{"Endpoint", "team", "namespace", `namespace "prod" does not exist`}}},
		{"endpoint namespace empty", func(c *metamcpv1.Config) { ep(c).Namespace = "" },
			[]want{{"Endpoint", "team", "namespace", "is required"}}},
		{"endpoint rate limit missing", func(c *metamcpv1.Config) { ep(c).RateLimits = []string{"per-user", "nope"} },
			[]want{{"Endpoint", "team", "rateLimits[1]", `rate-limit policy "nope" does not exist`}}},
		{"endpoint rate limit duplicate", func(c *metamcpv1.Config) { ep(c).RateLimits = []string{"per-user", "per-user"} },
			[]want{{"Endpoint", "team", "rateLimits[1]", "already listed at rateLimits[0]"}}},
		{"jwt issuer missing", func(c *metamcpv1.Config) { jwt(c).Issuer = "" },
			[]want{{"Endpoint", "team", "auth.jwt.issuer", "is required"}}},
		{"jwt issuer http", func(c *metamcpv1.Config) { jwt(c).Issuer = "http://idp.example.com" },
			[]want{{"Endpoint", "team", "auth.jwt.issuer", "must be an https URL"}}},
		{"jwt issuer http localhost ok", func(c *metamcpv1.Config) { jwt(c).Issuer = "http://localhost:8080/realms/x" }, nil},
		{"jwt issuer http loopback ok", func(c *metamcpv1.Config) { jwt(c).Issuer = "http://127.0.0.1:8080" }, nil},
		{"jwt issuer not a url", func(c *metamcpv1.Config) { jwt(c).Issuer = "idp" },
			[]want{{"Endpoint", "team", "auth.jwt.issuer", "absolute http or https"}}},
		// The endpoint's canonical resource URL is always an accepted audience.
		{"jwt no audience", func(c *metamcpv1.Config) { jwt(c).Audiences = nil }, nil},
		{"jwt empty audience", func(c *metamcpv1.Config) { jwt(c).Audiences = []string{""} },
			[]want{{"Endpoint", "team", "auth.jwt.audiences[0]", "must not be empty"}}},
		{"jwks url relative", func(c *metamcpv1.Config) { jwt(c).JwksUrl = "jwks.json" },
			[]want{{"Endpoint", "team", "auth.jwt.jwksUrl", "absolute http or https"}}},
		{"scope with space", func(c *metamcpv1.Config) { jwt(c).RequiredScopes = []string{"a b"} },
			[]want{{"Endpoint", "team", "auth.jwt.requiredScopes[0]", "without spaces"}}},
		{"anonymous with jwt", func(c *metamcpv1.Config) { ep(c).Auth.Anonymous = true },
			[]want{{"Endpoint", "team", "auth.anonymous", "contradicts auth.jwt"}}},
		{"jwt algorithms ok", func(c *metamcpv1.Config) { jwt(c).Algorithms = []string{"ES256", "EdDSA"} }, nil},
		{"jwt hmac algorithm", func(c *metamcpv1.Config) { jwt(c).Algorithms = []string{"RS256", "HS256"} },
			[]want{{"Endpoint", "team", "auth.jwt.algorithms[1]", "is not accepted"}}},
		{"jwt none algorithm", func(c *metamcpv1.Config) { jwt(c).Algorithms = []string{"none"} },
			[]want{{"Endpoint", "team", "auth.jwt.algorithms[0]", "never accepted"}}},
		{"jwt clock skew ok", func(c *metamcpv1.Config) { jwt(c).ClockSkew = durationpb.New(2 * time.Minute) }, nil},
		{"jwt clock skew too large", func(c *metamcpv1.Config) { jwt(c).ClockSkew = durationpb.New(10 * time.Minute) },
			[]want{{"Endpoint", "team", "auth.jwt.clockSkew", "between 0s and 5m0s"}}},
		{"jwks over http", func(c *metamcpv1.Config) { jwt(c).JwksUrl = "http://idp.example.com/jwks" },
			[]want{{"Endpoint", "team", "auth.jwt.jwksUrl", "must be an https URL"}}},
		{"jwt only", func(c *metamcpv1.Config) { ep(c).Auth.DisableApiKeys = true }, nil},
		{"jwt only without jwt", func(c *metamcpv1.Config) { ep(c).Auth = &metamcpv1.EndpointAuth{DisableApiKeys: true} },
			[]want{{"Endpoint", "team", "auth.disableApiKeys", "needs auth.jwt"}}},

		// RateLimitPolicy.
		{"rate zero", func(c *metamcpv1.Config) { rl(c).Rate = 0 },
			[]want{{"RateLimitPolicy", "per-user", "rate", "at least 1"}}},
		{"burst negative", func(c *metamcpv1.Config) { rl(c).Burst = proto.Int64(-1) },
			[]want{{"RateLimitPolicy", "per-user", "burst", "at least 1"}}},
		{"burst zero", func(c *metamcpv1.Config) { rl(c).Burst = proto.Int64(0) },
			[]want{{"RateLimitPolicy", "per-user", "burst", "at least 1"}}},
		{"period zero", func(c *metamcpv1.Config) { rl(c).Period = durationpb.New(0) },
			[]want{{"RateLimitPolicy", "per-user", "period", "more than 0"}}},
		{"period negative", func(c *metamcpv1.Config) { rl(c).Period = durationpb.New(-time.Minute) },
			[]want{{"RateLimitPolicy", "per-user", "period", "must not be negative"}}},
		{"period over 24h", func(c *metamcpv1.Config) { rl(c).Period = durationpb.New(48 * time.Hour) },
			[]want{{"RateLimitPolicy", "per-user", "period", "at most 24h"}}},
		{"policy server missing", func(c *metamcpv1.Config) { rl(c).Server = "gitlab" },
			[]want{{"RateLimitPolicy", "per-user", "server", `server "gitlab" does not exist`}}},
		{"policy tool glob charset", func(c *metamcpv1.Config) { rl(c).Tool = "github/*" },
			[]want{{"RateLimitPolicy", "per-user", "tool", "a tool glob may contain only"}}},
		{"policy unknown key", func(c *metamcpv1.Config) { rl(c).Key = 42 },
			[]want{{"RateLimitPolicy", "per-user", "key", "unknown key 42"}}},
		{"policy unknown failure mode", func(c *metamcpv1.Config) { rl(c).OnRedisFailure = 7 },
			[]want{{"RateLimitPolicy", "per-user", "onRedisFailure", "unknown failure mode 7"}}},

		// ApiKeyEntry.
		{"api key name invalid", func(c *metamcpv1.Config) { c.ApiKeys[0].Name = "Alice" },
			[]want{{"ApiKey", "Alice", "name", "lowercase DNS label"}}},
		{"api key duplicate name", func(c *metamcpv1.Config) { c.ApiKeys[1].Name = "alice" },
			[]want{{"ApiKey", "alice", "name", "apiKeys[0] is also named"}}},
		{"api key hash short", func(c *metamcpv1.Config) { c.ApiKeys[0].KeyHash = []byte{1, 2} },
			[]want{{"ApiKey", "alice", "keyHash", "32-byte SHA-256 hash, got 2 bytes"}}},
		{"api key hash duplicate", func(c *metamcpv1.Config) { c.ApiKeys[1].KeyHash = c.ApiKeys[0].KeyHash },
			[]want{{"ApiKey", "bot", "keyHash", `same key as ApiKey "alice"`}}},
		{"api key no endpoints", func(c *metamcpv1.Config) { c.ApiKeys[0].Endpoints = nil },
			[]want{{"ApiKey", "alice", "endpoints", "at least one endpoint"}}},
		{"api key unknown endpoint", func(c *metamcpv1.Config) { c.ApiKeys[0].Endpoints = []string{"team", "prod"} },
			[]want{{"ApiKey", "alice", "endpoints[1]", `endpoint "prod" does not exist`}}},
		{"api key bad endpoint", func(c *metamcpv1.Config) { c.ApiKeys[0].Endpoints = []string{"**"} },
			[]want{{"ApiKey", "alice", "endpoints[0]", `neither "*" nor a valid endpoint name`}}},

		// SessionKeys.
		{"session key short", func(c *metamcpv1.Config) { c.SessionKeys.Current = []byte("short") },
			[]want{{"SessionKeys", "", "current", "32-byte key, got 5 bytes"}}},
		{"session previous wrong", func(c *metamcpv1.Config) { c.SessionKeys.Previous = make([]byte, 16) },
			[]want{{"SessionKeys", "", "previous", "empty or a 32-byte key"}}},
		{"session previous ok", func(c *metamcpv1.Config) { c.SessionKeys.Previous = make([]byte, 32) }, nil},

		// Several at once: all are reported.
		{"collects every violation", func(c *metamcpv1.Config) {
			stdio(c).Command = ""
			rl(c).Rate = 0
			ep(c).Namespace = "nope"
		}, []want{
			{"Server", "github", "stdio.command", "is required"},
			{"Endpoint", "team", "namespace", "does not exist"},
			{"RateLimitPolicy", "per-user", "rate", "at least 1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.mutate(cfg)
			_, err := Validate(cfg)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var verr *Error
			if !errors.As(err, &verr) {
				t.Fatalf("Validate error = %v, want *Error", err)
			}
			for _, w := range tt.want {
				found := false
				for _, v := range verr.Violations {
					if v.Kind == w.kind && v.Name == w.name && v.Field == w.field && strings.Contains(v.Description, w.desc) {
						found = true
						break
					}
				}
				if !found {
					t.Errorf("missing violation %s %q %s containing %q", w.kind, w.name, w.field, w.desc)
				}
			}
			if len(verr.Violations) != len(tt.want) {
				t.Errorf("got %d violations, want %d:\n%s", len(verr.Violations), len(tt.want), strings.ReplaceAll(verr.Error(), "; ", "\n"))
			}
		})
	}
}

func TestValidateWarnings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(cfg *metamcpv1.Config)
		want   []string
	}{
		{"exposed override over 64", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["search_code"].Name = strings.Repeat("s", 60)
		}, []string{`Namespace "dev": members[0].toolOverrides["search_code"]: exposed name "github__ssss`, "is 68 characters: OpenAI, Anthropic and Bedrock reject tool names over 64 characters"}},
		{"exposed override of exactly 64 is fine", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["search_code"].Name = strings.Repeat("s", 56)
		}, nil},
		{"long prefix", func(c *metamcpv1.Config) {
			ns(c).Members[1].Prefix = proto.String(strings.Repeat("p", 31))
		}, []string{`members[1].prefix: prefix and separator take 33 characters: upstream tool names over 31 characters will exceed 64`}},
		{"prefix of 30 plus separator is fine", func(c *metamcpv1.Config) {
			ns(c).Members[1].Prefix = proto.String(strings.Repeat("p", 30))
		}, nil},
		{"override filtered out", func(c *metamcpv1.Config) {
			ns(c).Members[0].ToolOverrides["delete_repo"] = &metamcpv1.ToolOverride{Name: "rm"}
		}, []string{`members[0].toolOverrides["delete_repo"]: has no effect: allowTools/denyTools hide tool "delete_repo"`}},
		{"bearer and authorization header", func(c *metamcpv1.Config) {
			remote(c).Headers["authorization"] = secret("Bearer x")
		}, []string{`streamableHttp.headers["authorization"]: bearerToken is set too`}},
		{"all transports off", func(c *metamcpv1.Config) { ep(c).Transports.DisableStreamableHttp = true },
			[]string{`Endpoint "team": transports: both streamableHttp and sse are disabled`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.mutate(cfg)
			warnings, err := Validate(cfg)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if len(tt.want) == 0 && len(warnings) > 0 {
				t.Fatalf("unexpected warnings: %q", warnings)
			}
			if len(tt.want) > 0 && len(warnings) != 1 {
				t.Fatalf("got warnings %q, want exactly one", warnings)
			}
			for _, w := range tt.want {
				if !strings.Contains(warnings[0], w) {
					t.Errorf("warning %q does not contain %q", warnings[0], w)
				}
			}
		})
	}
}

func TestValidateWarningsComeWithErrors(t *testing.T) {
	cfg := validConfig()
	ns(cfg).Members[1].Prefix = proto.String(strings.Repeat("p", 40))
	rl(cfg).Rate = 0
	warnings, err := Validate(cfg)
	if err == nil || len(warnings) != 1 {
		t.Fatalf("Validate = %q, %v; want one warning and an error", warnings, err)
	}
}

func TestErrorMessage(t *testing.T) {
	cfg := validConfig()
	ns(cfg).Members[0].Server = "gh"
	_, err := Validate(cfg)
	const want = `invalid config: Namespace "dev": members[0].server: server "gh" does not exist: create it first or fix the name`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
}

func TestValidateResource(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
		want []want
	}{
		{"valid server", validConfig().Servers[0], nil},
		{"secret without value is fine outside a config", &metamcpv1.Server{
			Name: "s",
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
				Command: "x", Env: map[string]*metamcpv1.Value{"T": {Secret: true, Set: true}},
			}},
		}, nil},
		{"references are not checked", validConfig().Endpoints[0], nil},
		{"resource wrapper", &metamcpv1.Resource{Kind: &metamcpv1.Resource_RateLimit{RateLimit: &metamcpv1.RateLimitPolicy{Name: "x"}}},
			[]want{{"RateLimitPolicy", "x", "rate", "at least 1"}}},
		{"empty resource", &metamcpv1.Resource{}, []want{{"Resource", "", "kind", "is required"}}},
		{"namespace self collision", &metamcpv1.Namespace{Name: "n", Members: []*metamcpv1.NamespaceMember{
			{Server: "a", Prefix: proto.String("")}, {Server: "b", Prefix: proto.String("")},
		}}, []want{{"Namespace", "n", "members[1].prefix", "has no prefix either"}}},
		{"api key", &metamcpv1.ApiKey{Name: "k"}, []want{{"ApiKey", "k", "endpoints", "at least one"}}},
		{"api key entry", &metamcpv1.ApiKeyEntry{Name: "k", Endpoints: []string{"*"}}, []want{{"ApiKey", "k", "keyHash", "32-byte"}}},
		{"token", &metamcpv1.Token{Name: "ci"}, []want{{"Token", "ci", "scope", "TOKEN_SCOPE_ADMIN"}}},
		{"token ok", &metamcpv1.Token{Name: "ci", Scope: metamcpv1.TokenScope_TOKEN_SCOPE_SYNC}, nil},
		{"not a resource", &metamcpv1.Hello{}, []want{{"metamcp.v1.Hello", "", "", "not a config resource"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ValidateResource(tt.msg)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %d violations", got, len(tt.want))
			}
			for i, w := range tt.want {
				v := got[i]
				if v.Kind != w.kind || v.Name != w.name || v.Field != w.field || !strings.Contains(v.Description, w.desc) {
					t.Errorf("violation %d = %v, want %v", i, v, w)
				}
			}
		})
	}
}

func TestValidateNilEntries(t *testing.T) {
	// Go callers can build configs protobuf decoding never produces.
	cfg := &metamcpv1.Config{
		Servers:    []*metamcpv1.Server{nil},
		Namespaces: []*metamcpv1.Namespace{{Name: "n", Members: []*metamcpv1.NamespaceMember{nil, {Server: "x", ToolOverrides: map[string]*metamcpv1.ToolOverride{"t": nil}}}}},
		Endpoints:  []*metamcpv1.Endpoint{nil},
		RateLimits: []*metamcpv1.RateLimitPolicy{nil},
		ApiKeys:    []*metamcpv1.ApiKeyEntry{nil},
	}
	if _, err := Validate(cfg); err == nil {
		t.Fatal("Validate accepted nil resources")
	}
}
