package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/identity"
)

// fakeTokens accepts the tokens it was given, for the gateway's side of
// OAuth: which status, which header, which audiences. The real verifier has
// tests of its own (dataplane/auth).
type fakeTokens struct {
	mu   sync.Mutex
	auds [][]string
	// tokens maps a token to its principal; "scope" maps to a missing scope.
	tokens map[string]*identity.Principal
}

func (f *fakeTokens) Verify(token string, _ *metamcpv1.JWTAuth, audiences []string) (*identity.Principal, error) {
	f.mu.Lock()
	f.auds = append(f.auds, audiences)
	f.mu.Unlock()
	if token == "h.needs.scope" {
		return nil, &TokenError{Code: errInsufficientScope, Description: "the token lacks the scope mcp:write", Scope: []string{"mcp:write"}}
	}
	if p := f.tokens[token]; p != nil {
		return p, nil
	}
	return nil, &TokenError{Code: errInvalidToken, Description: "the token's signature is not valid"}
}

func jwtConfig() *metamcpv1.Config {
	cfg := testConfig()
	cfg.Endpoints = append(cfg.Endpoints,
		&metamcpv1.Endpoint{Name: "sso", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{
			Issuer: "https://idp.example.com", Audiences: []string{"metamcp"}, RequiredScopes: []string{"mcp:read", "mcp:write"},
		}}})
	return cfg
}

func TestOAuthEndpoint(t *testing.T) {
	tokens := &fakeTokens{tokens: map[string]*identity.Principal{
		"h.alice.sig": {Name: "alice@example.com", Kind: identity.KindJWT, Issuer: "https://idp.example.com", Subject: "u1"},
	}}
	h := newHarness(t, jwtConfig(), nil, func(o *Options) { o.Tokens = tokens })
	meta := h.srvURL + "/.well-known/oauth-protected-resource/metamcp/sso/mcp"
	tests := []struct {
		name       string
		headers    map[string]string
		wantStatus int
		wantBody   string
		// wantAuth is a part of the WWW-Authenticate header wanted; "" wants none.
		wantAuth []string
	}{
		{"no credential", nil, 401, "needs an OAuth access token",
			[]string{`Bearer resource_metadata="` + meta + `"`, `scope="mcp:read mcp:write"`}},
		{"bad token", map[string]string{"Authorization": "Bearer h.bad.sig"}, 401, "signature is not valid",
			[]string{`resource_metadata="` + meta + `"`, `error="invalid_token"`, `error_description="the token's signature is not valid"`}},
		{"missing scope", map[string]string{"Authorization": "Bearer h.needs.scope"}, 403, "lacks the scope",
			[]string{`error="insufficient_scope"`, `scope="mcp:write"`}},
		{"good token", map[string]string{"Authorization": "Bearer h.alice.sig"}, 200, `"result"`, nil},
		{"api key too", map[string]string{"Authorization": "Bearer " + keyBob}, 200, `"result"`, nil},
		{"bad api key", map[string]string{"Authorization": "Bearer mm_nope"}, 403, "API key is not valid", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := post(t, h.url("sso", "mcp"), initBody, tc.headers)
			if status != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("status %d body %s, want %d containing %q", status, body, tc.wantStatus, tc.wantBody)
			}
			wa := hdr.Get("WWW-Authenticate")
			if len(tc.wantAuth) == 0 && wa != "" {
				t.Errorf("WWW-Authenticate = %q, want none", wa)
			}
			for _, part := range tc.wantAuth {
				if !strings.Contains(wa, part) {
					t.Errorf("WWW-Authenticate = %q, want it to contain %q", wa, part)
				}
			}
		})
	}
	// The audiences: the endpoint's canonical resource URLs and the configured one.
	want := []string{h.url("sso", "mcp"), h.url("sso", "sse"), "metamcp"}
	tokens.mu.Lock()
	got := tokens.auds[0]
	tokens.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("audiences = %q, want %q", got, want)
	}

	// The session of a token's principal is bound to it.
	status, hdr, _ := post(t, h.url("sso", "mcp"), initBody, map[string]string{"Authorization": "Bearer h.alice.sig"})
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d, session %q", status, sid)
	}
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	if status, _, body := post(t, h.url("sso", "mcp"), ping, map[string]string{"Authorization": "Bearer h.alice.sig", headerSessionID: sid}); status != 200 {
		t.Errorf("ping in alice's session with her token: %d %s", status, body)
	}
	if status, _, _ := post(t, h.url("sso", "mcp"), ping, map[string]string{"Authorization": "Bearer " + keyBob, headerSessionID: sid}); status != 403 {
		t.Errorf("ping in alice's session with bob's key: %d, want 403", status)
	}
}

func TestResourceMetadata(t *testing.T) {
	h := newHarness(t, jwtConfig(), nil, func(o *Options) {
		o.Tokens = &fakeTokens{}
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	get := func(path string, headers map[string]string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, h.srvURL+path, nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		return resp.StatusCode, doc
	}
	status, doc := get("/.well-known/oauth-protected-resource/metamcp/sso/mcp", nil)
	if status != 200 || doc["resource"] != h.url("sso", "mcp") {
		t.Fatalf("metadata: %d %v", status, doc)
	}
	if as, _ := doc["authorization_servers"].([]any); len(as) != 1 || as[0] != "https://idp.example.com" {
		t.Errorf("authorization_servers = %v", doc["authorization_servers"])
	}
	if sc, _ := doc["scopes_supported"].([]any); len(sc) != 2 {
		t.Errorf("scopes_supported = %v", doc["scopes_supported"])
	}
	if bm, _ := doc["bearer_methods_supported"].([]any); len(bm) != 1 || bm[0] != "header" {
		t.Errorf("bearer_methods_supported = %v", doc["bearer_methods_supported"])
	}
	_, doc = get("/.well-known/oauth-protected-resource/metamcp/sso/sse", nil)
	if doc["resource"] != h.url("sso", "sse") {
		t.Errorf("SSE metadata resource = %v", doc["resource"])
	}
	// Behind a trusted proxy the resource is the URL the client used.
	_, doc = get("/.well-known/oauth-protected-resource/metamcp/sso/mcp", map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mcp.example.com"})
	if doc["resource"] != "https://mcp.example.com/metamcp/sso/mcp" {
		t.Errorf("resource behind a trusted proxy = %v", doc["resource"])
	}
	// A forwarded host that would change the URL's shape is ignored.
	_, doc = get("/.well-known/oauth-protected-resource/metamcp/sso/mcp", map[string]string{"X-Forwarded-Host": "evil.example/x?"})
	if doc["resource"] != h.url("sso", "mcp") {
		t.Errorf("resource with a malformed forwarded host = %v", doc["resource"])
	}
}

func TestForwardedFromUntrusted(t *testing.T) {
	h := newHarness(t, jwtConfig(), nil, func(o *Options) {
		o.Tokens = &fakeTokens{}
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, h.srvURL+"/.well-known/oauth-protected-resource/metamcp/sso/mcp", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "mcp.example.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	if doc["resource"] != h.url("sso", "mcp") {
		t.Errorf("resource with forwarded headers from an untrusted peer = %v, want %s", doc["resource"], h.url("sso", "mcp"))
	}
}

func TestPublicURL(t *testing.T) {
	h := newHarness(t, jwtConfig(), nil, func(o *Options) {
		o.Tokens = &fakeTokens{}
		o.PublicURL = "https://gw.example.com/"
	})
	status, hdr, _ := post(t, h.url("sso", "mcp"), initBody, nil)
	if want := `resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/metamcp/sso/mcp"`; status != 401 || !strings.Contains(hdr.Get("WWW-Authenticate"), want) {
		t.Errorf("%d %q, want 401 with %s", status, hdr.Get("WWW-Authenticate"), want)
	}
}

func TestClientIP(t *testing.T) {
	g := &Gateway{opts: Options{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
	}}}
	tests := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"direct", "203.0.113.7:5000", nil, "203.0.113.7"},
		{"untrusted peer's header ignored", "203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"one proxy", "10.1.2.3:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"spoofed first hop", "10.1.2.3:5000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"two proxies", "127.0.0.1:5000", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"two header lines", "127.0.0.1:5000", []string{"198.51.100.1", "10.9.9.9"}, "198.51.100.1"},
		{"all trusted", "127.0.0.1:5000", []string{"10.9.9.9"}, "10.9.9.9"},
		{"garbage", "10.1.2.3:5000", []string{"not-an-ip"}, "10.1.2.3"},
		{"v4-mapped", "[::ffff:10.1.2.3]:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"no header", "10.1.2.3:5000", nil, "10.1.2.3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := g.clientIP(r); got != tc.want {
				t.Errorf("clientIP = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAuthThrottle(t *testing.T) {
	h := newHarness(t, testConfig(), nil, func(o *Options) {
		o.AuthFailuresPerMinute = 5
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	from := func(ip, key string) (int, http.Header) {
		status, hdr, _ := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + key, "X-Forwarded-For": ip})
		return status, hdr
	}
	for i := range 5 {
		if status, _ := from("198.51.100.1", "mm_wrong"); status != 403 {
			t.Fatalf("wrong key %d: %d, want 403", i, status)
		}
	}
	status, hdr := from("198.51.100.1", "mm_wrong")
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Fatalf("sixth wrong key: %d Retry-After %q, want 429 with Retry-After", status, hdr.Get("Retry-After"))
	}
	// The throttled address is refused before its credential is looked at.
	if status, _ := from("198.51.100.1", keyAlice); status != http.StatusTooManyRequests {
		t.Errorf("good key from the throttled address: %d, want 429", status)
	}
	// Another address is not held back.
	if status, _ := from("198.51.100.2", keyAlice); status != 200 {
		t.Errorf("good key from another address: %d, want 200", status)
	}
	// Good credentials never take from the budget.
	for i := range 10 {
		if status, _ := from("198.51.100.3", keyAlice); status != 200 {
			t.Fatalf("good key %d: %d", i, status)
		}
	}
}

func TestAuthThrottleRefills(t *testing.T) {
	th := newAuthThrottle(60) // one a second
	now := time.Unix(1000, 0)
	for range 60 {
		th.fail("a", now)
	}
	if th.blocked("a", now) == 0 {
		t.Fatal("not blocked after 60 failures")
	}
	if w := th.blocked("a", now.Add(1100*time.Millisecond)); w != 0 {
		t.Errorf("still blocked %v after a second", w)
	}
	if newAuthThrottle(-1).blocked("a", now) != 0 {
		t.Error("a throttle turned off blocks")
	}
	// Bounded: addresses whose buckets refilled are forgotten.
	th = newAuthThrottle(60)
	for i := range maxAuthBuckets {
		th.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), now)
	}
	th.fail("b", now.Add(2*time.Minute))
	if n := len(th.buckets); n != 1 {
		t.Errorf("%d buckets after the sweep, want 1", n)
	}
}
