package gateway

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Test API keys.
const (
	keyAlice   = "mm_alice_0123456789abcdef"
	keyBob     = "mm_bob_0123456789abcdef"
	keyOther   = "mm_other_0123456789abcdef"
	keyExpired = "mm_expired_0123456789abcdef"
)

type echoIn struct {
	Text string `json:"text"`
}

type addIn struct {
	A int `json:"a"`
	B int `json:"b"`
}

// fixtureServer is a real go-sdk MCP server with tools echo, add, fail and
// whoami, a readme resource, an items template, a greet prompt and completions.
func fixtureServer(name string, opts *mcp.ServerOptions) *mcp.Server {
	if opts == nil {
		opts = &mcp.ServerOptions{}
	}
	opts.Instructions = "Use " + name + " wisely."
	opts.CompletionHandler = func(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
		ref := ""
		if req.Params.Ref != nil {
			ref = req.Params.Ref.Name + req.Params.Ref.URI
		}
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{name + ":" + ref + ":" + req.Params.Argument.Value + "-done"}}}, nil
	}
	s := mcp.NewServer(&mcp.Implementation{Name: name, Version: "1.0.0"}, opts)
	text := func(t string) []mcp.Content { return []mcp.Content{&mcp.TextContent{Text: t}} }
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echo the text"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: text(name + ":" + in.Text)}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "add", Description: "Add two numbers", Annotations: &mcp.ToolAnnotations{Title: "Add"}}, func(_ context.Context, _ *mcp.CallToolRequest, in addIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: text(fmt.Sprint(in.A + in.B))}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "Always fails"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{IsError: true, Content: text(name + " failed on purpose")}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "Names the server"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: text(name)}, nil, nil
	})
	s.AddPrompt(&mcp.Prompt{Name: "greet", Description: "Greets", Arguments: []*mcp.PromptArgument{{Name: "who", Required: true}}},
		func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello " + req.Params.Arguments["who"] + " from " + name}}}}, nil
		})
	s.AddResource(&mcp.Resource{URI: "fixture://" + name + "/readme", Name: "readme", MIMEType: "text/plain"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: name + " readme"}}}, nil
		})
	s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: "fixture://" + name + "/items/{id}", Name: "item"},
		func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: name + " item " + req.Params.URI}}}, nil
		})
	return s
}

// blockingServer is a real MCP server whose list operations and prompts/get
// never answer until the test ends.
func blockingServer(t testing.TB, name string) *mcp.Server {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s := fixtureServer(name, nil)
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			switch method {
			case "tools/list", "prompts/list", "resources/list", "resources/templates/list", "prompts/get":
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, fmt.Errorf("%s never answers", name)
			}
			return next(ctx, method, req)
		}
	})
	return s
}

func stdioServer(name string) *metamcpv1.Server {
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "fixture"}}}
}

func keyEntry(name, key string, endpoints []string, expire time.Time) *metamcpv1.ApiKeyEntry {
	sum := sha256.Sum256([]byte(key))
	e := &metamcpv1.ApiKeyEntry{Name: name, Principal: name, KeyHash: sum[:], Endpoints: endpoints}
	if !expire.IsZero() {
		e.ExpireTime = timestamppb.New(expire)
	}
	return e
}

// testConfig is a config with servers alpha, beta, gamma, slow and down;
// namespace "main" mounts the given members (alpha and beta by default).
// Endpoints: main (API keys), open (anonymous), other, nosse, nohttp.
func testConfig(members ...*metamcpv1.NamespaceMember) *metamcpv1.Config {
	if len(members) == 0 {
		members = []*metamcpv1.NamespaceMember{{Server: "alpha"}, {Server: "beta"}}
	}
	slow := stdioServer("slow")
	slow.Timeouts = &metamcpv1.Timeouts{List: durationpb.New(300 * time.Millisecond), Call: durationpb.New(300 * time.Millisecond)}
	return &metamcpv1.Config{
		Servers:    []*metamcpv1.Server{stdioServer("alpha"), stdioServer("beta"), stdioServer("gamma"), slow, stdioServer("down")},
		Namespaces: []*metamcpv1.Namespace{{Name: "main", Members: members}},
		Endpoints: []*metamcpv1.Endpoint{
			{Name: "main", Namespace: "main", Auth: &metamcpv1.EndpointAuth{AllowQueryApiKey: true}},
			{Name: "open", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Anonymous: true}},
			{Name: "other", Namespace: "main"},
			{Name: "nosse", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Anonymous: true}, Transports: &metamcpv1.Transports{DisableSse: true}},
			{Name: "nohttp", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Anonymous: true}, Transports: &metamcpv1.Transports{DisableStreamableHttp: true}},
		},
		ApiKeys: []*metamcpv1.ApiKeyEntry{
			keyEntry("alice", keyAlice, []string{"main", "open"}, time.Time{}),
			keyEntry("bob", keyBob, []string{"*"}, time.Time{}),
			keyEntry("carol", keyOther, []string{"other"}, time.Time{}),
			keyEntry("dave", keyExpired, []string{"*"}, time.Now().Add(time.Hour)),
		},
	}
}

// configHolder serves a Compiled snapshot, like configcache.Cache.
type configHolder struct {
	p   atomic.Pointer[snapshot.Compiled]
	rev atomic.Int64
}

func (h *configHolder) Current() *snapshot.Compiled { return h.p.Load() }

func (h *configHolder) set(t testing.TB, cfg *metamcpv1.Config) {
	t.Helper()
	c, _, err := snapshot.Compile(&metamcpv1.Snapshot{Revision: h.rev.Add(1), Config: proto.Clone(cfg).(*metamcpv1.Config)})
	if err != nil {
		t.Fatalf("compile test config: %v", err)
	}
	// Expire dave's key after validation (the control plane would drop it;
	// the data plane must still refuse a key that expires while served).
	for _, k := range c.APIKeys {
		if k.GetName() == "dave" {
			k.ExpireTime = timestamppb.New(time.Now().Add(-time.Minute))
		}
	}
	h.p.Store(c)
}

type harness struct {
	gw  *Gateway
	srv *httptest.Server
	// srvURL is the base URL the gateway is served at: srv's.
	srvURL string
	ups    *memUpstreams
	cfg    *configHolder
	calls  chan *metamcpv1.CallRecord
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GATEWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func defaultServers(t testing.TB) map[string]*mcp.Server {
	return map[string]*mcp.Server{
		"alpha": fixtureServer("alpha", nil),
		"beta":  fixtureServer("beta", nil),
		"gamma": fixtureServer("gamma", nil),
		"slow":  blockingServer(t, "slow"),
	}
}

// fixedPool is an Options.Pool that uses u, which sends no events.
func fixedPool(u Upstreams) func(upstream.Events) Upstreams {
	return func(upstream.Events) Upstreams { return u }
}

// realPool is an Options.Pool making an upstream.Pool with opts and the
// gateway's events, serving holder's servers (closed at the test's end);
// *pool, when not nil, is set to it.
func realPool(t testing.TB, pool **upstream.Pool, opts upstream.PoolOptions, holder *configHolder) func(upstream.Events) Upstreams {
	return func(events upstream.Events) Upstreams {
		opts.Events = events
		if opts.Logger == nil {
			opts.Logger = testLogger(t)
		}
		p := upstream.NewPool(opts)
		t.Cleanup(func() { _ = p.Close() })
		p.Update(holder.Current().Servers)
		if pool != nil {
			*pool = p
		}
		return p
	}
}

func newHarness(t testing.TB, cfg *metamcpv1.Config, servers map[string]*mcp.Server, mod func(*Options)) *harness {
	t.Helper()
	if servers == nil {
		servers = defaultServers(t)
	}
	h := &harness{cfg: &configHolder{}, calls: make(chan *metamcpv1.CallRecord, 1000)}
	h.cfg.set(t, cfg)
	h.ups = newMemUpstreams(t, servers)
	h.ups.down["down"] = fmt.Errorf("dial tcp 127.0.0.1:1: connect: connection refused")
	opts := Options{
		Config: h.cfg,
		Pool:   fixedPool(h.ups),
		Logger: testLogger(t),
		Calls:  h.calls,
		// Far above the slow server's 300ms, so tests can tell them apart
		// without depending on the machine's speed.
		DefaultListTimeout: time.Minute,
		DefaultCallTimeout: time.Minute,
		Version:            "test",
	}
	if mod != nil {
		mod(&opts)
	}
	h.gw = New(opts)
	h.srv = httptest.NewServer(h.gw.Handler())
	h.srvURL = h.srv.URL
	t.Cleanup(h.srv.Close)
	t.Cleanup(h.gw.Close) // runs first: ends SSE streams so the server can close
	return h
}

func (h *harness) url(endpoint, kind string) string {
	return h.srvURL + "/metamcp/" + endpoint + "/" + kind
}

// keyTransport adds an API key to every request.
type keyTransport struct {
	key    string
	header string // "Authorization" (default) or "X-API-Key"
}

func (k *keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if k.key == "" {
		return http.DefaultTransport.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	if k.header == "X-API-Key" {
		r.Header.Set("X-API-Key", k.key)
	} else {
		r.Header.Set("Authorization", "Bearer "+k.key)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// connect opens a go-sdk client session. version "" is the default client
// (2026-07-28); version20241105 uses the SSE transport.
func (h *harness) connect(t testing.TB, endpoint, key, version string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: &keyTransport{key: key}}
	var tr mcp.Transport
	var opts *mcp.ClientSessionOptions
	if version == version20241105 {
		tr = &mcp.SSEClientTransport{Endpoint: h.url(endpoint, "sse"), HTTPClient: hc}
	} else {
		tr = &mcp.StreamableClientTransport{Endpoint: h.url(endpoint, "mcp"), HTTPClient: hc, MaxRetries: -1}
	}
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	// The SSE transport keeps its stream on the Connect context: it must
	// outlive Connect.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	client := mcp.NewClient(&mcp.Implementation{Name: "gateway-test", Version: "1"}, nil)
	cs, err := client.Connect(ctx, tr, opts)
	if err != nil {
		t.Fatalf("connect %s at %q: %v", endpoint, version, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
