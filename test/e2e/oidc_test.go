package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
	"github.com/metamcp/metamcp/test/fixtures/oidcissuer"
)

// TestOIDCEndToEnd runs a control plane, a data plane trusting nginx in
// front of it, nginx, and an OpenID Connect identity provider served by the
// test on loopback (discovery and JWKS, keys it generates, tokens it mints).
// An endpoint configured with mmctl takes the provider's access tokens: a
// valid token works (also through the official TypeScript SDK client);
// expired, not yet valid, wrong issuer, wrong audience, `alg: none`, HS256
// signed with the public key, a tampered payload and an unknown key id get
// 401; a missing scope 403 insufficient_scope. The provider rotates its key
// and a token signed with the new one works without a restart; the provider
// goes down and tokens signed with the keys already fetched keep working.
// ("valid" in the table is signed with the rotated key.)
// The protected-resource metadata is right at the path-aware URL directly
// and behind nginx with X-Forwarded-Proto: https, and that header is ignored
// from an address that is not a trusted proxy.
func TestOIDCEndToEnd(t *testing.T) {
	clients := thirdPartyClients(t)
	iss := oidcissuer.Start(t, oidcissuer.Options{Path: "/realms/e2e"})
	cp := startControlPlane(t)
	// nginx reaches the data plane from 127.0.0.1; the test's "untrusted"
	// requests come from 127.0.0.2.
	dp := startDataPlane(t, cp, "dp-oidc", "--trusted-proxies", "127.0.0.1")
	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "namespace", "dev", "--server", "demo")
	cp.ok(t, "create", "endpoint", "sso", "--namespace", "dev", "--jwt-issuer", iss.URL(), "--jwt-scope", "mcp", "--jwt-groups-claim", "groups")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	eventually(t, "the data plane fetched the provider's keys", func() (bool, string) {
		body := httpGet(t, nil, "http://"+dp.addr+"/readyz", nil)
		return strings.Contains(body, "idp "+iss.URL()+": ok"), body
	})
	url := "http://" + dp.addr + "/metamcp/sso/mcp"

	claims := func(mod func(map[string]any)) map[string]any {
		c := iss.Claims("alice", url, time.Hour)
		c["scope"] = "openid mcp"
		c["groups"] = []string{"eng"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	// Key rotation first: the unknown key id below makes the data plane
	// refetch the keys, which it then does not do again for 10 s.
	iss.Rotate()
	good := iss.Mint(claims(nil))
	tampered := func() string {
		parts := strings.Split(good, ".")
		alt := strings.Split(iss.Mint(claims(func(c map[string]any) { c["sub"] = "mallory" })), ".")
		return parts[0] + "." + alt[1] + "." + parts[2]
	}()
	tests := []struct {
		name       string
		token      string
		wantStatus int
		wantAuth   string // a part of WWW-Authenticate
	}{
		{"valid", good, 200, ""},
		{"expired", iss.Mint(claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), 401, `error="invalid_token"`},
		{"not yet valid", iss.Mint(claims(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), 401, `error="invalid_token"`},
		{"wrong issuer", iss.Mint(claims(func(c map[string]any) { c["iss"] = "https://evil.example.com" })), 401, `error="invalid_token"`},
		{"wrong audience", iss.Mint(claims(func(c map[string]any) { c["aud"] = "http://" + dp.addr + "/metamcp/other/mcp" })), 401, `error="invalid_token"`},
		{"alg none", oidcissuer.MintNone(claims(nil)), 401, `error="invalid_token"`},
		{"HS256 with the public key", iss.MintHS256WithPublicKey(claims(nil)), 401, `error="invalid_token"`},
		{"tampered payload", tampered, 401, `error="invalid_token"`},
		{"unknown kid", iss.Mint(claims(nil), oidcissuer.WithKID("no-such-key")), 401, `error="invalid_token"`},
		{"missing scope", iss.Mint(claims(func(c map[string]any) { c["scope"] = "openid" })), 403, `error="insufficient_scope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := mcpPost(t, url, "Bearer "+tc.token)
			if status != tc.wantStatus {
				t.Fatalf("HTTP %d %s, want %d", status, body, tc.wantStatus)
			}
			if wa := hdr.Get("WWW-Authenticate"); !strings.Contains(wa, tc.wantAuth) || (tc.wantAuth != "" && !strings.Contains(wa, `resource_metadata="http://`+dp.addr+`/.well-known/oauth-protected-resource/metamcp/sso/mcp"`)) {
				t.Errorf("WWW-Authenticate = %q, want %s and the endpoint's metadata URL", wa, tc.wantAuth)
			}
		})
	}
	if out := tsListTools(t, clients, url, "Bearer "+good); !strings.Contains(out, `"demo__echo"`) {
		t.Errorf("TypeScript SDK client with a valid token: %s, want the demo tools", out)
	}

	// The provider goes down: the keys already fetched stay in force.
	iss.Stop()
	if status, _, body := mcpPost(t, url, "Bearer "+iss.Mint(claims(func(c map[string]any) { c["sub"] = "bob" }))); status != 200 {
		t.Errorf("new token while the provider is down: HTTP %d %s", status, body)
	}

	if body := httpGet(t, nil, "http://"+dp.addr+"/readyz", nil); !strings.HasPrefix(body, "ready") {
		t.Errorf("readyz while the provider is down: %s", body)
	}

	// Metadata, directly and behind nginx.
	nginx := startNginx(t, fixture.Nginx(t), dp.addr, dp.addr, [2]string{"X-Forwarded-Proto $scheme", "X-Forwarded-Proto https"})
	const path = "/.well-known/oauth-protected-resource/metamcp/sso/mcp"
	for _, tc := range []struct {
		name     string
		from     *net.TCPAddr
		url      string
		headers  map[string]string
		resource string
	}{
		{"direct", nil, "http://" + dp.addr + path, nil, "http://" + dp.addr + "/metamcp/sso/mcp"},
		{"behind nginx", nil, "http://" + nginx.addr + path, nil, "https://" + nginx.addr + "/metamcp/sso/mcp"},
		{"forged by an untrusted address", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, "http://" + dp.addr + path,
			map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.com"}, "http://" + dp.addr + "/metamcp/sso/mcp"},
	} {
		var doc struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			Scopes               []string `json:"scopes_supported"`
		}
		body := httpGet(t, tc.from, tc.url, tc.headers)
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("%s: metadata %q: %v", tc.name, body, err)
		}
		if doc.Resource != tc.resource || len(doc.AuthorizationServers) != 1 || doc.AuthorizationServers[0] != iss.URL() || len(doc.Scopes) != 1 || doc.Scopes[0] != "mcp" {
			t.Errorf("%s: metadata %s, want resource %s, the issuer and scope mcp", tc.name, body, tc.resource)
		}
	}
}

// mcpPost sends an initialize to url with the Authorization header and
// returns the status, headers and body.
func mcpPost(t *testing.T, url, authorization string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// httpGet GETs url from the local address from (any when nil) and returns
// the body.
func httpGet(t *testing.T, from *net.TCPAddr, url string, headers map[string]string) string {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: from, Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
