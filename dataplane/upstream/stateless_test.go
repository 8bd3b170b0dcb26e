package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// statelessUpstream serves a go-sdk server in stateless mode (2026-07-28)
// on loopback. Its tools: "ask" returns input_required (an elicitation
// under the key "who", and requestState "st-1") until called again with
// an accepted answer and that state; "caps" returns the client
// capabilities its request carried; "region" has an x-mcp-header argument
// and returns the header go-sdk checked.
func statelessUpstream(t *testing.T) (*mcp.Server, string) {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "stateless", Version: "1"}, &mcp.ServerOptions{
		Capabilities: &mcp.ServerCapabilities{
			Tools:     &mcp.ToolCapabilities{ListChanged: true},
			Resources: &mcp.ResourceCapabilities{Subscribe: true},
		},
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	mcp.AddTool(server, &mcp.Tool{Name: "ask"}, func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
		if r, ok := req.Params.InputResponses["who"].(*mcp.ElicitResult); ok && r.Action == "accept" && req.Params.RequestState == "st-1" {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello " + r.Content["name"].(string)}}}, nil, nil
		}
		return &mcp.CallToolResult{
			InputRequests: mcp.InputRequestMap{"who": &mcp.ElicitParams{Message: "name?", RequestedSchema: map[string]any{
				"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}},
			}}},
			RequestState: "st-1",
		}, nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "caps"}, func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
		b, _ := json.Marshal(req.ClientCapabilities())
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "region", InputSchema: json.RawMessage(`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}`)},
		func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: req.Extra.Header.Get("Mcp-Param-Region")}}}, nil, nil
		})
	server.AddResource(&mcp.Resource{URI: "test://r", Name: "r"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "test://r", Text: "r"}}}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return server, ts.URL
}

// TestStatelessUpstream: a server that lists 2026-07-28 in server/discover
// is spoken to at that revision, without a session: each request carries
// the client's capabilities (its own, per request) and the headers that
// revision requires; input_required results come back as they are, with
// the upstream's keys and requestState, and the retry completes; resource
// subscriptions and list changes arrive over subscriptions/listen.
func TestStatelessUpstream(t *testing.T) {
	server, url := statelessUpstream(t)
	rec := &recorder{}
	p := newTestPool(t, PoolOptions{Events: rec}, httpServer("st", url))
	ctx := ctxT(t, 30*time.Second)
	s, err := p.Session(ctx, "st", "")
	if err != nil {
		t.Fatal(err)
	}
	if v := s.Info().ProtocolVersion; v != StatelessVersion || !Stateless(s) {
		t.Fatalf("protocol version %q, want %s", v, StatelessVersion)
	}
	if !strings.Contains(string(s.Info().ServerInfo), `"stateless"`) {
		t.Errorf("server info %s, want the discover result's", s.Info().ServerInfo)
	}

	// Capabilities: the caller's, per request; the data plane's own ({})
	// without one.
	mine := WithRequestMeta(ctx, &RequestMeta{Capabilities: json.RawMessage(`{"sampling":{}}`)})
	if got, err := toolText(mine, s, "caps", nil); err != nil || !strings.Contains(got, `"sampling"`) {
		t.Errorf("caps with the client's: %q, %v; want sampling", got, err)
	}
	if got, err := toolText(ctx, s, "caps", nil); err != nil || strings.Contains(got, `"sampling"`) {
		t.Errorf("caps without a client's: %q, %v; want none of sampling", got, err)
	}

	// input_required passes through, keys and state as the upstream's.
	res, err := s.Call(ctx, "tools/call", json.RawMessage(`{"name":"ask"}`))
	if err != nil {
		t.Fatal(err)
	}
	var ir struct {
		ResultType    string                     `json:"resultType"`
		InputRequests map[string]json.RawMessage `json:"inputRequests"`
		RequestState  string                     `json:"requestState"`
	}
	if err := json.Unmarshal(res, &ir); err != nil || ir.ResultType != "input_required" || ir.InputRequests["who"] == nil || ir.RequestState != "st-1" {
		t.Fatalf("first round: %s (%v), want input_required asking \"who\" with requestState st-1", res, err)
	}
	retry := json.RawMessage(`{"name":"ask","inputResponses":{"who":{"action":"accept","content":{"name":"ann"}}},"requestState":"st-1"}`)
	res, err = s.Call(ctx, "tools/call", retry)
	if err != nil || !strings.Contains(string(res), "hello ann") {
		t.Fatalf("retry: %s, %v; want hello ann", res, err)
	}

	// Mcp-Param headers from the caller's RequestMeta; go-sdk refuses the
	// call without them.
	if _, err := toolText(ctx, s, "region", map[string]any{"region": "eu"}); err == nil {
		t.Errorf("region without its Mcp-Param header succeeded; the server should refuse it (the test proves nothing)")
	}
	withHeader := WithRequestMeta(ctx, &RequestMeta{ParamHeaders: map[string]string{"Region": "eu"}})
	if got, err := toolText(withHeader, s, "region", map[string]any{"region": "eu"}); err != nil || got != "eu" {
		t.Errorf("region with its header: %q, %v", got, err)
	}

	// resources/subscribe joins the listen stream's set.
	if _, err := s.Call(ctx, "resources/subscribe", json.RawMessage(`{"uri":"test://r"}`)); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := server.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: "test://r"}); err != nil {
		t.Fatal(err)
	}
	waitCount(t, rec, "notifications/resources/updated", 1)
	server.AddTool(&mcp.Tool{Name: "later", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	waitCount(t, rec, "notifications/tools/list_changed", 1)
	if _, err := s.Call(ctx, "resources/unsubscribe", json.RawMessage(`{"uri":"test://r"}`)); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if err := server.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: "test://r"}); err != nil {
		t.Fatal(err)
	}
	// The tool change is sent after the update: once it arrived, so would
	// have the update.
	server.RemoveTools("later")
	waitCount(t, rec, "notifications/tools/list_changed", 2)
	if n := rec.count("notifications/resources/updated"); n != 1 {
		t.Errorf("%d resources/updated after unsubscribing, want still 1", n)
	}
}

// waitCount waits (bounded) until rec counted n notifications of method.
func waitCount(t *testing.T, rec *recorder, method string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rec.count(method) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d %s within 10s, want %d (got %v)", rec.count(method), method, n, rec.notes)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSessionOnlyServerProbedOnce: a session-based server (go-sdk, stateful)
// answers server/discover without 2026-07-28; the pool remembers it, so the
// next per_client sessions with it initialize without asking again.
func TestSessionOnlyServerProbedOnce(t *testing.T) {
	server := mcp.NewServer(&mcp.Implementation{Name: "stateful", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "hi"}, func(context.Context, *mcp.CallToolRequest, any) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hi"}}}, nil, nil
	})
	var discovers atomic.Int32
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mcp-Method") == "server/discover" {
			discovers.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
	})
	cfg := httpServer("sf", ts.URL)
	cfg.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	p := newTestPool(t, PoolOptions{}, cfg)
	for _, client := range []string{"a", "b", "c"} {
		if got := callTool(t, p, "sf", client, "hi", nil); got != "hi" {
			t.Fatalf("client %s: %q", client, got)
		}
		s, err := p.Session(ctxT(t, 10*time.Second), "sf", client)
		if err != nil || Stateless(s) {
			t.Fatalf("client %s: stateless %v (%v), want a session", client, err == nil && Stateless(s), err)
		}
	}
	if n := discovers.Load(); n != 1 {
		t.Errorf("%d server/discover probes for three sessions, want 1", n)
	}
}
