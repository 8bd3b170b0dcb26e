package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestRealPool runs the gateway over the real upstream pool in front of
// three mcpfixture processes: stdio (per_client), Streamable HTTP and SSE.
func TestRealPool(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs mcpfixture processes")
	}
	bin := fixture.Build(t)
	webURL := fixture.Start(t, bin, "http", "web")
	legacyURL := fixture.Start(t, bin, "sse", "legacy")
	cfg := testConfig(
		&metamcpv1.NamespaceMember{Server: "local"},
		&metamcpv1.NamespaceMember{Server: "web"},
		&metamcpv1.NamespaceMember{Server: "legacy"},
	)
	cfg.Servers = append(cfg.Servers,
		&metamcpv1.Server{Name: "local", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: bin, Args: fixture.StdioArgs("local")}}},
		&metamcpv1.Server{Name: "web", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: webURL}}},
		&metamcpv1.Server{Name: "legacy", Transport: &metamcpv1.Server_Sse{Sse: &metamcpv1.HTTPTransport{Url: legacyURL}}},
	)
	holder := &configHolder{}
	holder.set(t, cfg)
	newPool := realPool(t, nil, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, holder)
	h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = holder
		o.Pool = newPool
	})

	for _, version := range []string{"", "2025-11-25", "2025-06-18", "2025-03-26", version20241105} {
		t.Run("version "+version, func(t *testing.T) {
			cs := h.connect(t, "main", keyAlice, version)
			ctx := testCtx(t)
			names := toolNames(t, cs)
			for _, want := range []string{"local__echo", "web__echo", "legacy__echo", "web__add"} {
				if !slices.Contains(names, want) {
					t.Errorf("tools %v lack %s", names, want)
				}
			}
			for _, server := range []string{"local", "web", "legacy"} {
				if got, _ := callText(t, cs, server+"__echo", map[string]any{"text": "via " + server}); got != "via "+server {
					t.Errorf("%s__echo = %q", server, got)
				}
				rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "fixture://" + server + "/items/9"})
				if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "item 9" {
					t.Errorf("read %s item: %+v, %v", server, rr, err)
				}
				gp, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: server + "__greet", Arguments: map[string]string{"name": "Ann"}})
				if err != nil || len(gp.Messages) != 1 {
					t.Errorf("get %s__greet: %+v, %v", server, gp, err)
				}
				if _, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: server + "__greet"}, Argument: mcp.CompleteParamsArgument{Name: "name", Value: "A"}}); err != nil {
					t.Errorf("complete %s__greet: %v", server, err)
				}
			}
		})
	}

	// An upstream that dies mid-session: a clear error naming it, then the
	// pool reconnects and later calls succeed without the client reconnecting.
	cs := h.connect(t, "main", keyAlice, "2025-11-25")
	callText(t, cs, "local__echo", map[string]any{"text": "before"})
	res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "local__crash"})
	if err == nil && !res.IsError {
		t.Error("crash call succeeded")
	} else if err != nil && !strings.Contains(err.Error(), `"local"`) {
		t.Errorf("crash error %v does not name the server", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "local__echo", Arguments: map[string]any{"text": "after"}})
		if err == nil && !res.IsError {
			break
		}
		if err != nil && !strings.Contains(err.Error(), `"local"`) {
			t.Errorf("error while reconnecting does not name the server: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call within 15s of the crash: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
