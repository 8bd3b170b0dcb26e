package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
)

func TestSSEResponseStaysJSONWhenNothingSent(t *testing.T) {
	rec := httptest.NewRecorder()
	s := newSSEResponse(t.Context(), rec)
	if s.Finish([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`)) {
		t.Fatal("Finish reported an event stream though nothing was sent")
	}
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Fatalf("nothing should be written, got %q %v", rec.Body.String(), rec.Header())
	}
	if s.Send([]byte(`{}`)) {
		t.Fatal("Send after Finish succeeded")
	}
}

func TestSSEResponseRelatedThenFinal(t *testing.T) {
	rec := httptest.NewRecorder()
	s := newSSEResponse(t.Context(), rec)
	s.header = func(h http.Header) { h.Set("X-Test", "yes") }
	msg := []byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"a","progress":1}}`)
	if !s.Send(msg) {
		t.Fatal("Send failed")
	}
	msg[0] = 'X' // Send copies
	if !s.Send([]byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`)) {
		t.Fatal("second Send failed")
	}
	if !s.Finish([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`)) {
		t.Fatal("Finish did not report an event stream")
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	if rec.Header().Get("X-Test") != "yes" {
		t.Fatal("header hook not applied")
	}
	want := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"a\",\"progress\":1}}\n\n" +
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n" +
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
	if got := rec.Body.String(); got != want {
		t.Fatalf("body:\n%s\nwant:\n%s", got, want)
	}
}

func TestSendToSession(t *testing.T) {
	g := New(Options{})
	defer g.Close()
	if g.sendToSession(t.Context(), "s1", []byte(`{}`)) {
		t.Fatal("delivered with no stream open")
	}
	ch, err := g.bus.Subscribe(t.Context(), streamTopic("s1"))
	if err != nil {
		t.Fatal(err)
	}
	if !g.sendToSession(t.Context(), "s1", []byte(`{"a":1}`)) {
		t.Fatal("not delivered to a subscribed stream")
	}
	if got := string(<-ch); got != `{"a":1}` {
		t.Fatalf("got %s", got)
	}
	remove := g.addLocalStream("s1", "ep", nil)
	g.addLocalStream("s2", "other", nil)
	if got := strings.Join(g.localStreams("ep"), ","); got != "s1" {
		t.Fatalf("localStreams(ep) = %q", got)
	}
	remove()
	if got := g.localStreams("ep"); len(got) != 0 {
		t.Fatalf("localStreams after remove = %v", got)
	}
}

// waitFor waits (testharness.Eventually, 10 s) until cond holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testharness.Eventually(t, 10*time.Second, func() error {
		if !cond() {
			return errors.New("timed out waiting for " + what)
		}
		return nil
	})
}

// openStream opens the standalone stream (GET) of a session and returns
// the status and a reader of the body (closed at cleanup).
func openStream(t testing.TB, url, key, sid string) (int, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set(headerSessionID, sid)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp.StatusCode, bufio.NewReader(resp.Body)
}

func TestStandaloneStream(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	_, hdr, _ := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	if sid == "" {
		t.Fatal("no session")
	}
	if status, _ := openStream(t, h.url("main", "mcp"), keyBob, sid); status != 403 {
		t.Errorf("another principal's GET: %d, want 403", status)
	}
	if status, _ := openStream(t, h.url("main", "mcp"), keyAlice, "nope"); status != 404 {
		t.Errorf("GET of an unknown session: %d, want 404", status)
	}
	first, r1 := openStream(t, h.url("main", "mcp"), keyAlice, sid)
	if first != 200 {
		t.Fatalf("GET: %d", first)
	}
	waitFor(t, "the stream to be listed", func() bool { return slices.Contains(h.gw.localStreams("main"), sid) })
	msg := `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
	if !h.gw.sendToSession(t.Context(), sid, []byte(msg)) {
		t.Fatal("sendToSession found no stream")
	}
	if name, data := readEvent(t, r1); name != "message" || data != msg {
		t.Fatalf("event %q %s", name, data)
	}

	// A second GET replaces the first, which ends.
	second, r2 := openStream(t, h.url("main", "mcp"), keyAlice, sid)
	if second != 200 {
		t.Fatalf("second GET: %d", second)
	}
	if _, err := io.Copy(io.Discard, r1); err != nil {
		t.Fatalf("first stream: %v", err)
	}
	msg2 := `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":2}}`
	waitFor(t, "the second stream to take messages", func() bool { return h.gw.sendToSession(t.Context(), sid, []byte(msg2)) })
	if _, data := readEvent(t, r2); data != msg2 {
		t.Fatalf("second stream got %s", data)
	}
	if got := h.gw.localStreams("main"); len(got) != 1 {
		t.Fatalf("localStreams = %v, want one", got)
	}
	if got := h.gw.localStreams("other"); len(got) != 0 {
		t.Fatalf("localStreams(other) = %v", got)
	}
}

func TestSSEStreamTakesSessionMessages(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	r, sid := openSSE(t, h.url("main", "sse"))
	if !slices.Contains(h.gw.localStreams("main"), sid) {
		t.Fatalf("SSE session %q not among the local streams %v", sid, h.gw.localStreams("main"))
	}
	msg := `{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}`
	if !h.gw.sendToSession(t.Context(), sid, []byte(msg)) {
		t.Fatal("sendToSession found no stream")
	}
	if name, got := readEvent(t, r); name != "message" || got != msg {
		t.Fatalf("event %q %s", name, got)
	}
}
