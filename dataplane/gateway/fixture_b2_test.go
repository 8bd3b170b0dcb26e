package gateway

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestFixtureStdioBridging runs the features of list_changed, resource
// subscriptions and input_required against an mcpfixture process on stdio
// (shared), where an upstream relates nothing to calls on the wire: what it
// sends during a call is attributed to the one call in flight.
func TestFixtureStdioBridging(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an mcpfixture process")
	}
	bin := fixture.Build(t)
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "local"})
	cfg.Servers = append(cfg.Servers, &metamcpv1.Server{Name: "local",
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: bin,
			Args: fixture.StdioArgs("local", "--tools", "echo,sample,addtool,elicit,roots,touch,subscribers")}}})
	holder := &configHolder{}
	holder.set(t, cfg)
	h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = holder
		o.Pool = realPool(t, nil, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, holder)
	})
	ctx := testCtx(t)

	t.Run("input_required", func(t *testing.T) {
		client := mcp.NewClient(&mcp.Implementation{Name: "b2", Version: "1"}, &mcp.ClientOptions{
			CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) { //nolint:staticcheck // sampling still passes through
				return &mcp.CreateMessageResult{Role: "assistant", Model: "m", //nolint:staticcheck // as above
					Content: &mcp.TextContent{Text: "sampled " + req.Params.Messages[0].Content.(*mcp.TextContent).Text}}, nil
			},
			ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": "forty-two"}}, nil
			},
		})
		client.AddRoots(&mcp.Root{URI: "file:///work", Name: "work"}) //nolint:staticcheck // roots still pass through
		tr := &mcp.StreamableClientTransport{Endpoint: h.url("main", "mcp"), HTTPClient: &http.Client{Transport: &keyTransport{key: keyBob}}, MaxRetries: -1}
		cs, err := client.Connect(ctx, tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		for _, tc := range []struct {
			tool string
			args map[string]any
			want string
		}{
			{"local__sample", map[string]any{"prompt": "hi"}, "sampled hi"},
			{"local__elicit", map[string]any{"message": "the answer?"}, "accept forty-two"},
			{"local__roots", nil, "file:///work"},
		} {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tc.tool, Arguments: tc.args})
			if err != nil {
				t.Errorf("%s: %v", tc.tool, err)
				continue
			}
			if got := res.Content[0].(*mcp.TextContent).Text; got != tc.want || res.IsError {
				t.Errorf("%s = %q (isError %v), want %q", tc.tool, got, res.IsError, tc.want)
			}
		}
	})

	t.Run("list_changed and subscriptions", func(t *testing.T) {
		uri := "fixture://local/readme"
		var mu sync.Mutex
		got := map[string][]string{}
		note := func(who string) *mcp.ClientOptions {
			add := func(what string) {
				mu.Lock()
				got[who] = append(got[who], what)
				mu.Unlock()
			}
			return &mcp.ClientOptions{
				ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { add("tools") },
				ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) { add("updated " + r.Params.URI) },
			}
		}
		seen := func(who, what string) bool {
			mu.Lock()
			defer mu.Unlock()
			for _, w := range got[who] {
				if w == what {
					return true
				}
			}
			return false
		}
		a := h.connectWith(t, "main", keyAlice, "2025-11-25", note("a"))
		b := h.connectWith(t, "main", keyBob, "2025-11-25", note("b"))
		h.waitStreams(t, "main", 2)
		if err := a.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		// b's call makes the upstream notify a's subscription: sent during
		// b's call, it still reaches a (and not b).
		if text, _ := callText(t, b, "local__touch", map[string]any{"uri": uri}); text != "touched" {
			t.Fatalf("touch = %q", text)
		}
		// a's call adds a tool: both hear of it.
		if text, _ := callText(t, a, "local__addtool", map[string]any{"name": "fresh"}); !strings.Contains(text, "fresh") {
			t.Fatalf("addtool = %q", text)
		}
		deadline := time.Now().Add(10 * time.Second)
		all := func() bool { return seen("a", "updated "+uri) && seen("a", "tools") && seen("b", "tools") }
		for !all() {
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("notifications after 10s: %v", got)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if seen("b", "updated "+uri) {
			t.Error("a resource update reached a session that did not subscribe")
		}
		if text, _ := callText(t, b, "local__subscribers", map[string]any{"uri": uri}); text != "1" {
			t.Errorf("upstream subscriptions = %q, want 1", text)
		}
		if err := a.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
			t.Fatal(err)
		}
		if text, _ := callText(t, b, "local__subscribers", map[string]any{"uri": uri}); text != "0" {
			t.Errorf("upstream subscriptions after unsubscribing = %q, want 0", text)
		}
	})
}
