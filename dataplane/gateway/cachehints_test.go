package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// cachingServers is defaultServers with alpha and beta giving their results
// a lifetime (ttlMs 60000 and 30000) and alpha's reads a public scope.
func cachingServers(t *testing.T) map[string]*mcp.Server {
	servers := defaultServers(t)
	for name, ttl := range map[string]int{"alpha": 60000, "beta": 30000} {
		servers[name] = fixtureServer(name, &mcp.ServerOptions{SetCacheable: func(_ context.Context, _ mcp.Request, c *mcp.Cacheable) {
			c.TTLMs, c.CacheScope = ttl, "public"
		}})
	}
	return servers
}

type hinted struct {
	TTLMs      *int64 `json:"ttlMs"`
	CacheScope string `json:"cacheScope"`
}

// resultHints posts body to endpoint as a 2026-07-28 request (or one of
// version) and returns its result's caching hints.
func resultHints(t *testing.T, h *harness, endpoint, version, sid, body string) hinted {
	t.Helper()
	hh := map[string]string{headerProtocolVersion: version, "Authorization": "Bearer " + keyAlice}
	if sid != "" {
		hh[headerSessionID] = sid
	}
	if version == version20260728 && sid == "" {
		body = withMeta(body)
	}
	status, _, resp := post(t, h.url(endpoint, "mcp"), body, hh)
	var r struct {
		Result hinted `json:"result"`
	}
	if status != 200 || json.Unmarshal([]byte(resp), &r) != nil {
		t.Fatalf("%s: %d %s", body, status, resp)
	}
	return r.Result
}

func (x hinted) String() string {
	if x.TTLMs == nil {
		return "no ttlMs, cacheScope " + x.CacheScope
	}
	b, _ := json.Marshal(x)
	return string(b)
}

// TestCacheHints: results of 2026-07-28 list, read and discover requests
// carry ttlMs and cacheScope: the shortest of the upstreams' lifetimes, 0
// for a partial list, and public only on an anonymous endpoint.
func TestCacheHints(t *testing.T) {
	h := newHarness(t, testConfig(), cachingServers(t), nil)
	const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	const read = `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"fixture://alpha/readme"}}`
	const discover = `{"jsonrpc":"2.0","id":3,"method":"server/discover"}`
	for _, tc := range []struct {
		name, endpoint, body string
		ttl                  int64
		scope                string
	}{
		{"list, authenticated endpoint", "main", list, 30000, "private"},
		{"list, anonymous endpoint", "open", list, 30000, "public"},
		{"read, authenticated endpoint", "main", read, 60000, "private"},
		{"read, anonymous endpoint", "open", read, 60000, "public"},
		{"discover, authenticated endpoint", "main", discover, 0, "private"},
		{"discover, anonymous endpoint", "open", discover, 0, "public"},
	} {
		got := resultHints(t, h, tc.endpoint, version20260728, "", tc.body)
		if got.TTLMs == nil || *got.TTLMs != tc.ttl || got.CacheScope != tc.scope {
			t.Errorf("%s: %v, want ttlMs %d and cacheScope %s", tc.name, got, tc.ttl, tc.scope)
		}
	}

	// A list that misses an upstream is not to be kept.
	h.cfg.set(t, testConfig(&metamcpv1.NamespaceMember{Server: "alpha"}, &metamcpv1.NamespaceMember{Server: "down"}))
	if got := resultHints(t, h, "open", version20260728, "", list); got.TTLMs == nil || *got.TTLMs != 0 {
		t.Errorf("partial list: %v, want ttlMs 0", got)
	}
	// A per_client member's list may differ by caller: never public.
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "alpha"})
	cfg.Servers[0].SessionMode = metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	h.cfg.set(t, cfg)
	if got := resultHints(t, h, "open", version20260728, "", list); got.CacheScope != "private" {
		t.Errorf("per_client member: %v, want cacheScope private", got)
	}
}

// TestCacheHintsNotForSessions: session-based revisions define no caching
// hints, and the gateway's merged lists add none.
func TestCacheHintsNotForSessions(t *testing.T) {
	h := newHarness(t, testConfig(), cachingServers(t), nil)
	status, hdr, body := post(t, h.url("open", "mcp"), initBody, nil)
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %s", status, body)
	}
	if strings.Contains(body, `"ttlMs"`) || strings.Contains(body, `"cacheScope"`) {
		t.Errorf("initialize result with caching hints: %s", body)
	}
	got := resultHints(t, h, "open", "2025-06-18", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	if got.TTLMs != nil || got.CacheScope != "" {
		t.Errorf("a 2025-06-18 tools/list: %v, want no hints", got)
	}
}
