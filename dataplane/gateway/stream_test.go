package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
	remove := g.addLocalStream("s1", "ep")
	g.addLocalStream("s2", "other")
	if got := strings.Join(g.localStreams("ep"), ","); got != "s1" {
		t.Fatalf("localStreams(ep) = %q", got)
	}
	remove()
	if got := g.localStreams("ep"); len(got) != 0 {
		t.Fatalf("localStreams after remove = %v", got)
	}
}
