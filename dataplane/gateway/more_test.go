package gateway

import (
	"bufio"
	"context"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// A duplicate "name" must not smuggle a call past the filters: upstreams
// read the last member, and so does the router.
func TestDuplicateNameCannotBypassFilters(t *testing.T) {
	h := newHarness(t, testConfig(&metamcpv1.NamespaceMember{Server: "alpha", DenyTools: []string{"whoami"}}), nil, nil)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__echo","name":"alpha__whoami","arguments":{"text":"x"}}}`
	hdr := map[string]string{headerProtocolVersion: "2026-07-28", "Authorization": "Bearer " + keyAlice}
	_, _, resp := post(t, h.url("main", "mcp"), withMeta(body), hdr)
	if !strings.Contains(resp, "unknown tool") || strings.Contains(resp, `"text":"alpha"`) {
		t.Errorf("duplicate name: %s, want unknown tool", resp)
	}
	body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__whoami","name":"alpha__echo","arguments":{"text":"x"}}}`
	_, _, resp = post(t, h.url("main", "mcp"), withMeta(body), hdr)
	if !strings.Contains(resp, `alpha:x`) {
		t.Errorf("duplicate name, allowed last: %s, want alpha:x", resp)
	}
}

// readEvent reads one SSE event (name, data).
// deleteMCP sends DELETE to url with headers and returns the status.
func deleteMCP(t *testing.T, url string, headers map[string]string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodDelete, url, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// openSSE opens a 2024-11-05 SSE stream at sseURL as keyAlice (the key in
// the query) and returns its reader, past the endpoint event, and the
// session id. The stream closes with the test.
func openSSE(t *testing.T, sseURL string) (*bufio.Reader, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, sseURL+"?api_key="+keyAlice, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	r := bufio.NewReader(resp.Body)
	_, data := readEvent(t, r)
	return r, strings.TrimPrefix(strings.Split(data, "&")[0], "message?sessionId=")
}

func readEvent(t testing.TB, r *bufio.Reader) (string, string) {
	t.Helper()
	var name, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read SSE stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if name != "" || data != "" {
				return name, data
			}
		case strings.HasPrefix(line, "event: "):
			name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
}

func TestSSERaw(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url("main", "sse")+"?api_key="+keyAlice, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET sse: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	name, data := readEvent(t, r)
	if name != "endpoint" || !strings.HasPrefix(data, "message?sessionId=") || !strings.Contains(data, "&api_key=") {
		t.Fatalf("first event %q %q, want endpoint with the message URL and the query key", name, data)
	}
	sid := strings.TrimPrefix(strings.Split(data, "&")[0], "message?sessionId=")
	msgURL := h.srvURL + "/metamcp/main/" + data

	// Another caller cannot post to this session.
	if status, _, body := post(t, h.url("main", "message")+"?sessionId="+sid, initBody, map[string]string{"Authorization": "Bearer " + keyBob}); status != 403 {
		t.Errorf("post by another principal: %d %s", status, body)
	}
	if status, _, _ := post(t, h.url("main", "message")+"?sessionId=nope&api_key="+keyAlice, initBody, nil); status != 404 {
		t.Errorf("post to an unknown session: %d, want 404", status)
	}
	status, _, _ := post(t, msgURL, `{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{}}}`, nil)
	if status != 202 {
		t.Fatalf("post initialize: %d, want 202", status)
	}
	name, data = readEvent(t, r)
	if name != "message" || !strings.Contains(data, `"id":"i"`) || !strings.Contains(data, `"protocolVersion":"2024-11-05"`) {
		t.Errorf("initialize answer %q %s", name, data)
	}
	post(t, msgURL, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"beta__echo","arguments":{"text":"sse"}}}`, nil)
	if _, data = readEvent(t, r); !strings.Contains(data, "beta:sse") {
		t.Errorf("tools/call answer %s", data)
	}
	// Closing the stream ends the session.
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(h.ups.closedClients(), sid) {
		if time.Now().After(deadline) {
			t.Fatal("stream end did not end the session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, _, _ := post(t, msgURL, `{"jsonrpc":"2.0","id":3,"method":"ping"}`, nil); status != 404 {
		t.Errorf("post after the stream ended: %d, want 404", status)
	}
}

// TestCloseLeavesNoGoroutines opens sessions of every kind, closes the
// gateway and checks that its goroutines are gone.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		h := newHarness(t, testConfig(), nil, nil)
		for _, v := range []string{"", "2025-11-25", version20241105} {
			cs := h.connect(t, "main", keyAlice, v)
			toolNames(t, cs)
			_ = cs.Close()
		}
		// An SSE stream left open is ended by Close.
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, h.url("open", "sse"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h.gw.Close()
		h.srv.Close()
		h.ups.close()
	}()
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
