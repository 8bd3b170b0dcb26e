package gateway

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
)

// countingServer is fixtureServer counting the tools/call it receives.
func countingServer(name string, calls *atomic.Int64) *mcp.Server {
	s := fixtureServer(name, nil)
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/call" {
				calls.Add(1)
			}
			return next(ctx, method, req)
		}
	})
	return s
}

func rateLimitedConfig(policies ...*metamcpv1.RateLimitPolicy) *metamcpv1.Config {
	cfg := testConfig()
	cfg.RateLimits = policies
	for _, p := range policies {
		cfg.Endpoints[0].RateLimits = append(cfg.Endpoints[0].RateLimits, p.Name)
	}
	return cfg
}

func statelessCall(tool string) (string, map[string]string) {
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	return body, map[string]string{"Authorization": "Bearer " + keyAlice, "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
}

// TestRateLimitRefusal: over the limit, a stateless and a session-based
// client get 429 with Retry-After, RateLimit-Policy and RateLimit, and a
// JSON-RPC error whose data names the policy, the limit and the wait; the
// upstream never sees the refused calls; the call record says rate limited.
func TestRateLimitRefusal(t *testing.T) {
	var upstreamCalls atomic.Int64
	servers := defaultServers(t)
	servers["alpha"] = countingServer("alpha", &upstreamCalls)
	p := &metamcpv1.RateLimitPolicy{Name: "pages", Rate: 2, Burst: proto.Int64(2), Period: durationpb.New(time.Hour), Tool: "alpha__echo"}
	h := newHarness(t, rateLimitedConfig(p), servers, func(o *Options) { o.Limiter = ratelimit.New(ratelimit.Options{}) })

	body, hdr := statelessCall("alpha__echo")
	for i := range 2 {
		if status, _, b := post(t, h.url("main", "mcp"), body, hdr); status != 200 || strings.Contains(b, `"error"`) {
			t.Fatalf("call %d: %d %s", i+1, status, b)
		}
	}
	status, rh, b := post(t, h.url("main", "mcp"), body, hdr)
	if status != 429 {
		t.Fatalf("third call: %d %s, want 429", status, b)
	}
	ra := rh.Get("Retry-After")
	if ra == "" || ra == "0" {
		t.Fatalf("Retry-After %q", ra)
	}
	if got := rh.Get("RateLimit-Policy"); got != `"pages";q=2;w=3600` {
		t.Errorf("RateLimit-Policy %q", got)
	}
	if got := rh.Get("RateLimit"); got != `"pages";r=0;t=`+ra {
		t.Errorf("RateLimit %q (Retry-After %s)", got, ra)
	}
	var resp struct {
		ID    int `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				Policy       string `json:"policy"`
				Limit        int    `json:"limit"`
				PeriodMs     int64  `json:"periodMs"`
				Burst        int    `json:"burst"`
				RetryAfterMs int64  `json:"retryAfterMs"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(b), &resp); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	d := resp.Error.Data
	if resp.ID != 7 || resp.Error.Code != codeRateLimited || d.Policy != "pages" || d.Limit != 2 || d.PeriodMs != 3600000 || d.Burst != 2 ||
		d.RetryAfterMs < 29*60*1000 || d.RetryAfterMs > 30*60*1000 || !strings.Contains(resp.Error.Message, "rate limit exceeded") {
		t.Fatalf("error %+v", resp.Error)
	}

	// Another tool is not counted by the policy.
	other, ohdr := statelessCall("alpha__add")
	if status, _, b := post(t, h.url("main", "mcp"), other, ohdr); status != 200 || strings.Contains(b, `"error"`) {
		t.Fatalf("another tool: %d %s", status, b)
	}

	// A session-based client of the same principal: the same bucket.
	cs := h.connect(t, "main", keyAlice, version20251125)
	if _, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "alpha__echo", Arguments: map[string]any{"text": "x"}}); err == nil ||
		!strings.Contains(err.Error(), "Too Many Requests") {
		t.Fatalf("session call: %v, want a 429 refusal", err)
	}
	// The session lives on.
	if _, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "alpha__add", Arguments: map[string]any{"a": 1, "b": 2}}); err != nil {
		t.Fatalf("the session after a refusal: %v", err)
	}
	if n := upstreamCalls.Load(); n != 4 {
		t.Fatalf("the upstream got %d tools/call, want 4 (2 echo, 2 add): refused calls reach no upstream", n)
	}

	var limited int
	deadline := time.After(5 * time.Second)
	for limited < 2 {
		select {
		case rec := <-h.calls:
			if rec.GetOutcome() == metamcpv1.CallOutcome_CALL_OUTCOME_RATE_LIMITED {
				if rec.GetTarget() != "alpha__echo" || rec.GetPrincipal() != "alice" || !strings.Contains(rec.GetError(), "pages") {
					t.Fatalf("record %v", rec)
				}
				limited++
			}
		case <-deadline:
			t.Fatalf("%d rate-limited call records, want 2", limited)
		}
	}
}

// TestRateLimitShadow: a shadow policy refuses nothing and the call record
// names it.
func TestRateLimitShadow(t *testing.T) {
	p := &metamcpv1.RateLimitPolicy{Name: "try", Rate: 1, Burst: proto.Int64(1), Period: durationpb.New(time.Hour), Shadow: true}
	h := newHarness(t, rateLimitedConfig(p), nil, func(o *Options) { o.Limiter = ratelimit.New(ratelimit.Options{}) })
	body, hdr := statelessCall("alpha__echo")
	for i := range 3 {
		if status, _, b := post(t, h.url("main", "mcp"), body, hdr); status != 200 || strings.Contains(b, `"error"`) {
			t.Fatalf("call %d: %d %s", i+1, status, b)
		}
	}
	shadowed := 0
	for range 3 {
		select {
		case rec := <-h.calls:
			if rec.GetOutcome() != metamcpv1.CallOutcome_CALL_OUTCOME_OK {
				t.Fatalf("record %v", rec)
			}
			if len(rec.GetShadowRateLimits()) == 1 && rec.GetShadowRateLimits()[0] == "try" {
				shadowed++
			}
		case <-time.After(5 * time.Second):
			t.Fatal("missing call record")
		}
	}
	if shadowed != 2 {
		t.Fatalf("%d records name the shadow policy, want 2", shadowed)
	}
}

// TestRateLimitEveryRequest: every_request counts tools/list too; without
// it, only tools/call counts.
func TestRateLimitEveryRequest(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	hdr := map[string]string{"Authorization": "Bearer " + keyAlice, "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
	for _, every := range []bool{false, true} {
		p := &metamcpv1.RateLimitPolicy{Name: "all", Rate: 1, Burst: proto.Int64(1), Period: durationpb.New(time.Hour), EveryRequest: every}
		h := newHarness(t, rateLimitedConfig(p), nil, func(o *Options) { o.Limiter = ratelimit.New(ratelimit.Options{}) })
		refused := 0
		for range 3 {
			if status, _, _ := post(t, h.url("main", "mcp"), list, hdr); status == 429 {
				refused++
			}
		}
		if want := map[bool]int{false: 0, true: 2}[every]; refused != want {
			t.Fatalf("every_request %v: %d of 3 tools/list refused, want %d", every, refused, want)
		}
	}
}

// TestRateLimitSSE: a 2024-11-05 SSE client's POST is answered 202 whatever
// the call's fate (its answers go over the stream), so over the limit it
// gets no 429: the JSON-RPC error with the policy, the limit and the wait
// comes on its stream, and the upstream never sees the call.
func TestRateLimitSSE(t *testing.T) {
	var upstreamCalls atomic.Int64
	servers := defaultServers(t)
	servers["alpha"] = countingServer("alpha", &upstreamCalls)
	p := &metamcpv1.RateLimitPolicy{Name: "pages", Rate: 1, Burst: proto.Int64(1), Period: durationpb.New(time.Hour), Tool: "alpha__*"}
	h := newHarness(t, rateLimitedConfig(p), servers, func(o *Options) { o.Limiter = ratelimit.New(ratelimit.Options{}) })

	r, sid := openSSE(t, h.url("main", "sse"))
	msgURL := h.url("main", "message") + "?sessionId=" + sid + "&api_key=" + keyAlice
	if status, _, b := post(t, msgURL, `{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{}}}`, nil); status != 202 {
		t.Fatalf("initialize: %d %s", status, b)
	}
	readEvent(t, r)
	for i, want := range []string{`"result"`, `"error"`} {
		body := `{"jsonrpc":"2.0","id":` + strconv.Itoa(10+i) + `,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"x"}}}`
		if status, _, b := post(t, msgURL, body, nil); status != 202 {
			t.Fatalf("call %d: POST answered %d %s, want 202 (the answer goes on the stream)", i+1, status, b)
		}
		name, data := readEvent(t, r)
		if name != "message" || !strings.Contains(data, want) {
			t.Fatalf("call %d: event %q %s, want a %s", i+1, name, data, want)
		}
		if i == 0 {
			continue
		}
		var resp struct {
			ID    int `json:"id"`
			Error struct {
				Code int `json:"code"`
				Data struct {
					Policy       string `json:"policy"`
					Limit        int    `json:"limit"`
					PeriodMs     int64  `json:"periodMs"`
					RetryAfterMs int64  `json:"retryAfterMs"`
				} `json:"data"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &resp); err != nil {
			t.Fatalf("%v: %s", err, data)
		}
		d := resp.Error.Data
		if resp.ID != 11 || resp.Error.Code != codeRateLimited || d.Policy != "pages" || d.Limit != 1 || d.PeriodMs != 3600000 ||
			d.RetryAfterMs < 59*60*1000 || d.RetryAfterMs > 60*60*1000 {
			t.Fatalf("refusal on the stream: %s", data)
		}
	}
	if n := upstreamCalls.Load(); n != 1 {
		t.Fatalf("the upstream got %d tools/call, want 1: the refused call reaches no upstream", n)
	}
}
