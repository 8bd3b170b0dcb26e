package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestCancelledRequestGetsNoResponse: a request the client cancels
// (notifications/cancelled) gets no response, only the end of its POST.
func TestCancelledRequestGetsNoResponse(t *testing.T) {
	started := make(chan struct{}, 1)
	servers := defaultServers(t)
	alpha := fixtureServer("alpha", nil)
	mcp.AddTool(alpha, &mcp.Tool{Name: "wait", Description: "Waits until cancelled"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, nil, ctx.Err()
	})
	servers["alpha"] = alpha
	h := newHarness(t, testConfig(), servers, nil)
	post := func(sid, body string) (int, http.Header, string) {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, h.url("main", "mcp"), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		if sid != "" {
			req.Header.Set(headerSessionID, sid)
			req.Header.Set(headerProtocolVersion, "2025-06-18")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, resp.Header, string(b)
	}
	status, hdr, _ := post("", initBody)
	sid := hdr.Get(headerSessionID)
	if sid == "" {
		t.Fatalf("initialize: %d", status)
	}
	post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	type answer struct {
		status int
		body   string
	}
	done := make(chan answer, 1)
	go func() {
		status, _, body := post(sid, `{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"alpha__wait","arguments":{}}}`)
		done <- answer{status, body}
	}()
	select {
	case <-started:
	case <-testCtx(t).Done():
		t.Fatal("the call never reached the upstream")
	}
	post(sid, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77,"reason":"changed my mind"}}`)
	var a answer
	select {
	case a = <-done:
	case <-testCtx(t).Done():
		t.Fatal("the cancelled call's POST never ended")
	}
	if a.status != http.StatusOK || bytes.Contains([]byte(a.body), []byte(`"id":77`)) {
		t.Fatalf("cancelled request answered: %d %q; want an empty event stream", a.status, a.body)
	}
}
