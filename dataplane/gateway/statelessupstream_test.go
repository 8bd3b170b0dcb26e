package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// TestStatelessUpstreamThroughGateway: behind the gateway, a go-sdk server
// in stateless mode (which the data plane speaks 2026-07-28 to). Its "ask"
// tool asks for a name with an input_required result (key "who",
// requestState "st-1"): a session-based client is asked with an
// elicitation/create request and gets the tool's answer; a 2026-07-28
// client gets the round as the upstream made it and completes it with its
// retry. Each request carries its client's own capabilities upstream, and
// a tool's Mcp-Param header (which go-sdk requires there) is made from the
// arguments for a session-based client that sends none.
func TestStatelessUpstreamThroughGateway(t *testing.T) {
	server := mcp.NewServer(&mcp.Implementation{Name: "st", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "ask"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if r, ok := req.Params.InputResponses["who"].(*mcp.ElicitResult); ok && r.Action == "accept" && req.Params.RequestState == "st-1" {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint("hello ", r.Content["name"])}}}, nil, nil
		}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"who": &mcp.ElicitParams{Message: "name?", RequestedSchema: jsonSchemaName}}, RequestState: "st-1"}, nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "caps"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		b, _ := json.Marshal(req.ClientCapabilities())
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "region", InputSchema: json.RawMessage(`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}`)},
		func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "region " + req.Extra.Header.Get("Mcp-Param-Region")}}}, nil, nil
		})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})

	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "st"})
	cfg.Servers = append(cfg.Servers, &metamcpv1.Server{Name: "st", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: srv.URL}}})
	holder := &configHolder{}
	holder.set(t, cfg)
	var pool *upstream.Pool
	h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = holder
		o.Pool = realPool(t, &pool, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, holder)
	})
	ctx := testCtx(t)
	if s, err := pool.Session(ctx, "st", ""); err != nil || !upstream.Stateless(s) {
		t.Fatalf("the upstream session (%v) does not speak 2026-07-28", err)
	}

	var asked []string
	cs := h.connectWith(t, "main", keyAlice, version20251125, &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked = append(asked, req.Params.Message)
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "bo"}}, nil
		},
	})
	text := func(tool string, args map[string]any) string {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if res.IsError || len(res.Content) != 1 {
			t.Fatalf("%s: %+v", tool, res)
		}
		return res.Content[0].(*mcp.TextContent).Text
	}
	if got := text("st__ask", nil); got != "hello bo" || len(asked) != 1 || asked[0] != "name?" {
		t.Errorf("session client: %q after being asked %v, want hello bo after name?", got, asked)
	}
	if got := text("st__caps", nil); !strings.Contains(got, `"elicitation"`) {
		t.Errorf("the session client's capabilities upstream: %s, want its elicitation", got)
	}
	if got := text("st__region", map[string]any{"region": "eu"}); got != "region eu" {
		t.Errorf("region: %q", got)
	}

	url := h.url("main", "mcp")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}`
	_, m := statelessPost(t, url, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"st__caps","arguments":{},`+meta+`}}`)
	if got := fmt.Sprint(m["result"]); !strings.Contains(got, `sampling`) || strings.Contains(got, `elicitation`) {
		t.Errorf("the 2026-07-28 client's capabilities upstream: %v, want its own (sampling only)", m)
	}
	meta = strings.Replace(meta, `"sampling":{}`, `"elicitation":{}`, 1)
	_, m = statelessPost(t, url, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"st__ask","arguments":{},`+meta+`}}`)
	res, _ := m["result"].(map[string]any)
	reqs, _ := res["inputRequests"].(map[string]any)
	if res["resultType"] != "input_required" || reqs["who"] == nil || res["requestState"] != "st-1" {
		t.Fatalf("2026-07-28 client: %v, want the upstream's round (who, st-1)", m)
	}
	_, m = statelessPost(t, url, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"st__ask","arguments":{},"requestState":"st-1","inputResponses":{"who":{"action":"accept","content":{"name":"ann"}}},`+meta+`}}`)
	if !strings.Contains(fmt.Sprint(m["result"]), "hello ann") {
		t.Errorf("2026-07-28 retry: %v, want hello ann", m)
	}
}
