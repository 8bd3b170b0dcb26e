package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/test/fixtures/oidcissuer"
)

// jwtConfig is testConfig with the endpoint "sso", which takes tokens from
// iss (and API keys).
func jwtConfig(iss *oidcissuer.Issuer) *metamcpv1.Config {
	cfg := testConfig()
	issuer := "http://127.0.0.1:9/idp" // loopback, nothing listening: keys never load
	if iss != nil {
		issuer = iss.URL()
	}
	cfg.Endpoints = append(cfg.Endpoints,
		&metamcpv1.Endpoint{Name: "sso", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{
			Issuer: issuer, Audiences: []string{"metamcp"}, RequiredScopes: []string{"mcp:read", "mcp:write"},
		}}})
	return cfg
}

// TestOAuthEndpoint: the gateway's side of OAuth with a real identity
// provider on loopback (the verifier has tests of its own in
// dataplane/auth): statuses and WWW-Authenticate headers, the endpoint's
// canonical URL as the audience, sessions bound to the token's principal.
func TestOAuthEndpoint(t *testing.T) {
	iss := oidcissuer.Start(t, oidcissuer.Options{})
	h := newHarness(t, jwtConfig(iss), nil, nil)
	h.gw.ConfigChanged() // fetch the issuer's keys now, as the data plane does on apply
	meta := h.srvURL + "/.well-known/oauth-protected-resource/metamcp/sso/mcp"
	token := func(aud, scope string) string {
		c := iss.Claims("alice", aud, time.Hour)
		c["scope"] = scope
		return "Bearer " + iss.Mint(c)
	}
	good := token(h.url("sso", "mcp"), "mcp:read mcp:write")
	tests := []struct {
		name       string
		headers    map[string]string
		wantStatus int
		wantBody   string
		// wantAuth are parts of the WWW-Authenticate header wanted; nil wants none.
		wantAuth []string
	}{
		{"no credential", nil, 401, "needs an OAuth access token",
			[]string{`Bearer resource_metadata="` + meta + `"`, `scope="mcp:read mcp:write"`}},
		{"bad signature", map[string]string{"Authorization": good[:len(good)-4] + "AAAA"}, 401, "",
			[]string{`resource_metadata="` + meta + `"`, `error="invalid_token"`, `error_description=`}},
		{"other audience", map[string]string{"Authorization": token("https://elsewhere.example/mcp", "mcp:read mcp:write")}, 401, "",
			[]string{`error="invalid_token"`}},
		{"configured audience", map[string]string{"Authorization": token("metamcp", "mcp:read mcp:write")}, 200, `"result"`, nil},
		{"missing scope", map[string]string{"Authorization": token(h.url("sso", "mcp"), "mcp:read")}, 403, "mcp:write",
			[]string{`error="insufficient_scope"`, `scope="mcp:read mcp:write"`}},
		{"good token", map[string]string{"Authorization": good}, 200, `"result"`, nil},
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

	// The session of a token's principal is bound to it; a fresh token of
	// the same principal continues it.
	status, hdr, _ := post(t, h.url("sso", "mcp"), initBody, map[string]string{"Authorization": good})
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d, session %q", status, sid)
	}
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	fresh := token(h.url("sso", "mcp"), "mcp:write mcp:read")
	if status, _, body := post(t, h.url("sso", "mcp"), ping, map[string]string{"Authorization": fresh, headerSessionID: sid}); status != 200 {
		t.Errorf("ping in alice's session with a fresh token of hers: %d %s", status, body)
	}
	if status, _, _ := post(t, h.url("sso", "mcp"), ping, map[string]string{"Authorization": "Bearer " + keyBob, headerSessionID: sid}); status != 403 {
		t.Errorf("ping in alice's session with bob's key: %d, want 403", status)
	}
	expired := iss.Claims("alice", h.url("sso", "mcp"), -time.Hour)
	expired["scope"] = "mcp:read mcp:write"
	if status, _, _ := post(t, h.url("sso", "mcp"), ping, map[string]string{"Authorization": "Bearer " + iss.Mint(expired), headerSessionID: sid}); status != 401 {
		t.Errorf("ping in alice's session with an expired token: %d, want 401", status)
	}
}

func TestResourceMetadata(t *testing.T) {
	h := newHarness(t, jwtConfig(nil), nil, func(o *Options) {
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
	if as, _ := doc["authorization_servers"].([]any); len(as) != 1 || as[0] != "http://127.0.0.1:9/idp" {
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
	h := newHarness(t, jwtConfig(nil), nil, func(o *Options) {
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
	h := newHarness(t, jwtConfig(nil), nil, func(o *Options) {
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
