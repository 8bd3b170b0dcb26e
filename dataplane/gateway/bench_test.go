package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/oidcissuer"
)

// fastUpstreams answers every call at once with a fixed result: the
// benchmarks measure the gateway, not an upstream.
type fastUpstreams struct{}

type fastSession struct{}

var fastResult = json.RawMessage(`{"content":[{"type":"text","text":"hello from the upstream"}],"isError":false}`)

func (fastUpstreams) Session(context.Context, string, string) (upstream.Session, error) {
	return fastSession{}, nil
}
func (fastUpstreams) CloseClient(string) {}

// fastTools is the fast upstream's tools/list: what access rules read.
var fastTools = json.RawMessage(`{"tools":[{"name":"echo","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}}]}`)

func (fastSession) Call(_ context.Context, method string, _ json.RawMessage) (json.RawMessage, error) {
	if method == "tools/list" {
		return fastTools, nil
	}
	return fastResult, nil
}
func (fastSession) Info() *upstream.Info {
	return &upstream.Info{Capabilities: json.RawMessage(`{"tools":{}}`)}
}
func (fastSession) Notify(context.Context, string, json.RawMessage) error { return nil }
func (fastSession) Server() string                                        { return "fast" }

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

func benchGateway(b *testing.B) (http.Handler, *Gateway) {
	h := &configHolder{}
	h.set(b, testConfig())
	g := New(Options{Config: h, Pool: fixedPool(fastUpstreams{}), Logger: testLogger(b), DefaultCallTimeout: time.Minute})
	b.Cleanup(g.Close)
	return g.Handler(), g
}

func benchToolsCall(b *testing.B, headers map[string]string, caps string) {
	handler, _ := benchGateway(b)
	if benchWrap != nil {
		handler = benchWrap(handler)
	}
	body := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"hello"},"_meta":{"progressToken":7}}}`)
	if headers[headerProtocolVersion] != "" {
		// What a go-sdk client sends at 2026-07-28: the per-request _meta keys.
		body = []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"hello"},"_meta":{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":` + caps + `,"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}`)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:12008/metamcp/main/mcp", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if headers[headerProtocolVersion] == "" {
		// Session-based: initialize first.
		init, _ := http.NewRequest(http.MethodPost, req.URL.String(), bytes.NewReader([]byte(initBody)))
		init.Header = req.Header.Clone()
		w := &discardWriter{h: http.Header{}}
		handler.ServeHTTP(w, init)
		sid := w.h.Get(headerSessionID)
		if sid == "" {
			b.Fatalf("initialize: status %d, no session", w.status)
		}
		req.Header.Set(headerSessionID, sid)
	}
	serveLoop(b, handler, req, body)
}

// serveLoop serves req with body through handler once per benchmark
// iteration, reusing the writer and the body reader.
func serveLoop(b *testing.B, handler http.Handler, req *http.Request, body []byte) {
	w := &discardWriter{h: http.Header{}}
	rd := bytes.NewReader(body)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		rd.Reset(body)
		r := req.Clone(context.Background())
		r.Body = io.NopCloser(rd)
		r.ContentLength = int64(len(body))
		clear(w.h)
		w.status = 0
		handler.ServeHTTP(w, r)
		if w.status != 0 && w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	// The process's CPU time: what the call costs whatever else runs on
	// the machine, goroutines it starts included.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkToolsCall measures one proxied tools/call through the gateway's
// HTTP handler (routing, auth, parsing, name rewrite, response), with an
// upstream that answers at once.
func BenchmarkToolsCall(b *testing.B) {
	b.Run("session", func(b *testing.B) { benchToolsCall(b, nil, "") })
	// A client that declares roots: the call is bridged (it could be asked).
	// 2026-07-28 requires the standard headers.
	stateless := map[string]string{headerProtocolVersion: "2026-07-28", headerMethod: "tools/call", headerName: "alpha__echo"}
	b.Run("stateless", func(b *testing.B) { benchToolsCall(b, stateless, `{"roots":{}}`) })
	// A client that declares no capability: nothing to bridge.
	b.Run("stateless-no-capabilities", func(b *testing.B) { benchToolsCall(b, stateless, `{}`) })
}

// BenchmarkIdentity measures what identity adds to a proxied stateless
// tools/call: an API key on an endpoint without access rules against a
// token seen before (cached verification) on an endpoint whose access rules
// the call must pass (a glob rule, then a CEL condition on the tool's
// annotations).
func BenchmarkIdentity(b *testing.B) {
	iss := oidcissuer.Start(b, oidcissuer.Options{})
	cfg := testConfig()
	cfg.Endpoints = append(cfg.Endpoints,
		&metamcpv1.Endpoint{Name: "sso", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{
			Issuer: iss.URL(), RequiredScopes: []string{"mcp"}, GroupsClaim: "groups",
		}}, AccessRules: []*metamcpv1.AccessRule{
			{Name: "no-fail", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_DENY, Tools: []string{"*__fail"}},
			{Name: "eng", Groups: []string{"eng"}, Tools: []string{"alpha__*"}},
		}},
		&metamcpv1.Endpoint{Name: "sso-cel", Namespace: "main", Auth: &metamcpv1.EndpointAuth{Jwt: &metamcpv1.JWTAuth{
			Issuer: iss.URL(), RequiredScopes: []string{"mcp"},
		}}, AccessRules: []*metamcpv1.AccessRule{
			{Name: "read-only", Tools: []string{"*"}, Condition: "tool.annotations.readOnlyHint"},
		}},
	)
	h := &configHolder{}
	h.set(b, cfg)
	g := New(Options{Config: h, Pool: fixedPool(fastUpstreams{}), Logger: testLogger(b), DefaultCallTimeout: time.Minute})
	b.Cleanup(g.Close)
	g.ConfigChanged()
	handler := g.Handler()
	base := "http://127.0.0.1:12008/metamcp/"
	token := func(endpoint string) string {
		c := iss.Claims("alice", base+endpoint+"/mcp", time.Hour)
		c["scope"] = "mcp"
		c["groups"] = []string{"eng"}
		return "Bearer " + iss.Mint(c)
	}
	body := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
	for _, tc := range []struct{ name, endpoint, auth string }{
		{"apikey", "main", "Bearer " + keyAlice},
		{"jwt-rules", "sso", token("sso")},
		{"jwt-cel", "sso-cel", token("sso-cel")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req, _ := http.NewRequest(http.MethodPost, base+tc.endpoint+"/mcp", nil)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", tc.auth)
			req.Header.Set(headerProtocolVersion, "2026-07-28")
			req.Header.Set(headerMethod, "tools/call")
			req.Header.Set(headerName, "alpha__echo")
			// Served once first: the token's first sight and the tool's
			// annotations are not what is measured, and a refusal would
			// measure the wrong path.
			rec := httptest.NewRecorder()
			r := req.Clone(context.Background())
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			handler.ServeHTTP(rec, r)
			if !bytes.Contains(rec.Body.Bytes(), []byte("hello from the upstream")) {
				b.Fatalf("the call was not served: %d %s", rec.Code, rec.Body)
			}
			serveLoop(b, handler, req, body)
		})
	}
}
