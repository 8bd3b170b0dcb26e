package configfile

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// sampleResources covers every kind and most fields, including output-only
// ones an export carries.
func sampleResources() []*metamcpv1.Resource {
	ts := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return []*metamcpv1.Resource{
		{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{
			Name:        "github",
			Description: "GitHub tools:\nissues, pull requests, code search",
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
				Command: "npx",
				Args:    []string{"-y", "@modelcontextprotocol/server-github"},
				Env: map[string]*metamcpv1.Value{
					"GITHUB_TOKEN": {Value: "ghp_secret", Secret: true, Set: true},
					"LOG_LEVEL":    {Value: "debug"},
					"EMPTY":        {},
				},
				Cwd: "/srv/github",
			}},
			SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
			Timeouts: &metamcpv1.Timeouts{
				Initialize: durationpb.New(30 * time.Second),
				Call:       durationpb.New(90 * time.Second),
				List:       durationpb.New(1500 * time.Millisecond),
			},
			Limits:     &metamcpv1.Limits{MaxProcesses: 8, MaxSessions: 100, IdleTtl: durationpb.New(time.Hour)},
			Revision:   12,
			CreateTime: ts,
			UpdateTime: ts,
		}}},
		{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{
			Name: "linear",
			Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{
				Url:         "https://mcp.linear.app/mcp",
				Headers:     map[string]*metamcpv1.Value{"X-Team": {Value: "platform"}, "X-Api-Key": {Secret: true, Set: true}},
				BearerToken: &metamcpv1.Value{Value: "lin_secret", Secret: true},
			}},
		}}},
		{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{
			Name:      "events",
			Transport: &metamcpv1.Server_Sse{Sse: &metamcpv1.HTTPTransport{Url: "http://127.0.0.1:9000/sse"}},
		}}},
		{Kind: &metamcpv1.Resource_Namespace{Namespace: &metamcpv1.Namespace{
			Name:      "dev",
			Separator: ".",
			Members: []*metamcpv1.NamespaceMember{
				{
					Server:     "github",
					Prefix:     proto.String("gh"),
					AllowTools: []string{"*"},
					DenyTools:  []string{"delete_*"},
					ToolOverrides: map[string]*metamcpv1.ToolOverride{
						"search_code": {
							Name:        "search",
							Title:       "Search code",
							Description: "Search code across the organisation.",
							Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: proto.Bool(true), DestructiveHint: proto.Bool(false)},
						},
						"create_repository": {Disabled: true},
					},
				},
				{Server: "linear"},
				{Server: "events", Prefix: proto.String("")},
			},
			Revision: 13,
		}}},
		{Kind: &metamcpv1.Resource_Endpoint{Endpoint: &metamcpv1.Endpoint{
			Name:        "team",
			Description: "Everyone's tools",
			Namespace:   "dev",
			Auth: &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{
				Issuer:         "https://idp.example.com/",
				Audiences:      []string{"metamcp"},
				RequiredScopes: []string{"mcp:call", "mcp:list"},
			}},
			RateLimits: []string{"per-user"},
			Transports: &metamcpv1.Transports{DisableSse: true},
		}}},
		{Kind: &metamcpv1.Resource_RateLimit{RateLimit: &metamcpv1.RateLimitPolicy{
			Name:           "per-user",
			Server:         "github",
			Tool:           "gh.create_*",
			Key:            metamcpv1.RateLimitKey_RATE_LIMIT_KEY_PRINCIPAL,
			Rate:           60,
			Burst:          proto.Int64(10),
			Period:         durationpb.New(time.Minute),
			OnRedisFailure: metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_LOCAL,
		}}},
	}
}
