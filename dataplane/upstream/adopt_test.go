package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// sidServer is a Streamable HTTP MCP server whose tool sid returns the
// upstream session id the call came on.
func sidServer(t *testing.T) (*mcp.Server, string) {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "web", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "sid"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: req.Session.ID()}}}, nil, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func liveAt(s *mcp.Server, id string) bool {
	for ss := range s.Sessions() {
		if ss.ID() == id {
			return true
		}
	}
	return false
}

// TestAdopt: a per_client Streamable HTTP session opened by one pool is
// adopted by another (same upstream session, no initialize); carried
// sessions outlive the pools that close them until EndUpstream; a pool that
// adopts a session the upstream ended retries the call on a fresh one.
func TestAdopt(t *testing.T) {
	upstream, url := sidServer(t)
	cfg := httpServer("web", url)
	cfg.SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	a := newTestPool(t, PoolOptions{}, cfg)
	b := newTestPool(t, PoolOptions{}, cfg)
	ctx := ctxT(t, 30*time.Second)

	first := callTool(t, a, "web", "c1", "sid", map[string]any{})
	refs := a.CarryClientSessions("c1")
	ref, ok := refs["web"]
	if !ok || ref.SessionID != first || ref.ProtocolVersion == "" {
		t.Fatalf("carried sessions %+v, want web's session %q with its version", refs, first)
	}
	if got := a.CarryClientSessions("nobody"); got != nil {
		t.Errorf("sessions of an unknown client: %v", got)
	}

	s, err := b.Adopt(ctx, "web", "c1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := toolText(ctx, s, "sid", map[string]any{}); err != nil || got != first {
		t.Fatalf("call on the adopted session: %q, %v; want upstream session %q", got, err, first)
	}
	if info := s.Info(); info == nil || info.ProtocolVersion != ref.ProtocolVersion {
		t.Errorf("adopted session info %+v", info)
	}
	if !b.HasClient("web", "c1") || b.HasClient("web", "c2") {
		t.Error("HasClient does not report the adopted session (only)")
	}

	// Closing carried sessions here (CloseClient, Close) leaves them alive
	// upstream.
	a.CloseClient("c1")
	_ = b.Close()
	waitCond(t, "the pools' sessions closed", func() bool { return !a.HasClient("web", "c1") })
	if !liveAt(upstream, first) {
		t.Fatal("closing a carried session ended it upstream")
	}
	// EndUpstream ends it.
	a.EndUpstream("web", ref)
	waitCond(t, "the upstream session ended", func() bool { return !liveAt(upstream, first) })

	// Adopting a session the upstream ended: the call goes to a fresh one.
	c := newTestPool(t, PoolOptions{}, cfg)
	s, err = c.Adopt(ctx, "web", "c1", ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := toolText(ctx, s, "sid", map[string]any{})
	if err != nil || got == "" || got == first {
		t.Fatalf("call on an adopted session the upstream ended: %q, %v; want a fresh session", got, err)
	}
	if again := callTool(t, c, "web", "c1", "sid", map[string]any{}); again != got {
		t.Errorf("the next call went to %q, want the fresh session %q", again, got)
	}
}

// waitCond polls cond until it holds or 10s pass.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
