package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// TestEventsOutsideCalls: what upstreams send outside any client call.
func TestEventsOutsideCalls(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	ev := events{h.gw}
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{}},"clientInfo":{"name":"raw","version":"1"}}}`
	_, hdr, _ := post(t, h.url("main", "mcp"), init, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	_, stream := openStream(t, h.url("main", "mcp"), keyAlice, sid)
	waitFor(t, "the stream", func() bool { return len(h.gw.localStreams("main")) == 1 })

	// A shared upstream's request has no addressee.
	_, err := ev.Request(t.Context(), "alpha", "", &rpc.Message{ID: []byte("5"), Method: "sampling/createMessage", Params: []byte(`{}`)})
	if err == nil || !strings.Contains(err.Error(), "no client is its addressee") {
		t.Errorf("shared upstream's request: %v", err)
	}
	// A per_client upstream's request goes to its client, which must have
	// the capability.
	_, err = ev.Request(t.Context(), "alpha", sid, &rpc.Message{ID: []byte("6"), Method: "sampling/createMessage", Params: []byte(`{}`)})
	if err == nil || !strings.Contains(err.Error(), "did not declare the sampling capability") {
		t.Errorf("request the client cannot answer: %v", err)
	}
	type answer struct {
		res []byte
		err error
	}
	got := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := ev.Request(ctx, "alpha", sid, &rpc.Message{ID: []byte("7"), Method: "roots/list", Params: []byte(`{}`)})
		got <- answer{res, err}
	}()
	_, data := readEvent(t, stream)
	m, err := rpc.Parse([]byte(data))
	if err != nil || m.Method != "roots/list" || !strings.HasPrefix(string(m.ID), `"mm-`) {
		t.Fatalf("stream event %s, want roots/list under a gateway id", data)
	}
	reply := `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"error":{"code":-32042,"message":"no roots today","data":{"why":"test"}}}`
	post(t, h.url("main", "mcp"), reply, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid})
	a := <-got
	var rerr *rpc.Error
	if !errors.As(a.err, &rerr) || rerr.Code != -32042 || string(rerr.Data) != `{"why":"test"}` {
		t.Errorf("the client's error came back as %v (%#v)", a.err, rerr)
	}

	// A shared upstream's log message goes to the streams open here of the
	// endpoints mounting it, with the server as logger, within each
	// session's level.
	logMsg := func(level string) *rpc.Message {
		return &rpc.Message{Method: "notifications/message", Params: []byte(`{"level":"` + level + `","data":"` + level + `"}`)}
	}
	ev.Notification("alpha", "", logMsg("debug"))
	if _, data := readEvent(t, stream); !strings.Contains(data, `"logger":"alpha"`) || !strings.Contains(data, `"data":"debug"`) {
		t.Errorf("log event %s", data)
	}
	h.gw.setSessionLevel(sid, "warning")
	ev.Notification("alpha", "", logMsg("info"))
	ev.Notification("alpha", "", logMsg("error"))
	if _, data := readEvent(t, stream); !strings.Contains(data, `"data":"error"`) {
		t.Errorf("after setLevel warning, got %s (info should be filtered)", data)
	}
	// list_changed of a mounted server is B2's (upstreamNotification);
	// other notifications of a shared upstream concern no client.
	ev.Notification("alpha", "", &rpc.Message{Method: "notifications/whatever"})
	ev.Notification("alpha", sid, &rpc.Message{Method: "notifications/whatever", Params: []byte(`{"x":1}`)})
	if _, data := readEvent(t, stream); data != `{"jsonrpc":"2.0","method":"notifications/whatever","params":{"x":1}}` {
		t.Errorf("per_client notification: %s", data)
	}
}

func TestClientCan(t *testing.T) {
	for _, tc := range []struct {
		caps, method, params string
		ok                   bool
	}{
		{`{"sampling":{}}`, "sampling/createMessage", `{}`, true},
		{`{}`, "sampling/createMessage", `{}`, false},
		{`{"elicitation":{}}`, "elicitation/create", `{"mode":"form"}`, true},
		{`{"elicitation":{}}`, "elicitation/create", `{"mode":"url"}`, false},
		{`{"elicitation":{"url":{}}}`, "elicitation/create", `{"mode":"url"}`, true},
		{`{"roots":{}}`, "roots/list", `{}`, true},
		{`null`, "roots/list", `{}`, false},
		{`{}`, "x/unknown", `{}`, true},
	} {
		err := clientCan([]byte(tc.caps), &rpc.Message{Method: tc.method, Params: []byte(tc.params)})
		if (err == nil) != tc.ok {
			t.Errorf("clientCan(%s, %s %s) = %v", tc.caps, tc.method, tc.params, err)
		}
	}
}

// liveUpstreams is memUpstreams with Live, whose sessions record Notify.
type liveUpstreams struct {
	*memUpstreams
	notified chan string
}

type notifySession struct {
	upstream.Session
	server   string
	notified chan string
}

func (s notifySession) Notify(_ context.Context, method string, params json.RawMessage) error {
	s.notified <- s.server + " " + method + " " + string(params)
	return nil
}

func (u liveUpstreams) Live(server, clientID string) (upstream.Session, bool) {
	return notifySession{server: server, notified: u.notified}, true
}

// TestRootsChangedForwarded: a client's notifications/roots/list_changed
// reaches the live upstream sessions of its endpoint.
func TestRootsChangedForwarded(t *testing.T) {
	notified := make(chan string, 10)
	h := newHarness(t, testConfig(), nil, func(o *Options) {
		mem := o.Pool
		o.Pool = func(ev upstream.Events) Upstreams {
			return liveUpstreams{memUpstreams: mem(ev).(*memUpstreams), notified: notified}
		}
	})
	_, hdr, _ := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	if status, _, _ := post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 202 {
		t.Fatalf("status %d", status)
	}
	var got []string
	for range 2 {
		select {
		case n := <-notified:
			got = append(got, n)
		case <-time.After(10 * time.Second):
			t.Fatalf("forwarded to %v only", got)
		}
	}
	slices.Sort(got)
	if want := []string{"alpha notifications/roots/list_changed ", "beta notifications/roots/list_changed "}; !slices.Equal(got, want) {
		t.Errorf("forwarded %q, want %q", got, want)
	}
}

// TestRelayRenamesUpstreamCancel: an upstream's notifications/cancelled of
// one of its requests reaches the client under the id the client knows;
// one about a request the client never saw is dropped.
func TestRelayRenamesUpstreamCancel(t *testing.T) {
	g := New(Options{})
	defer g.Close()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	pc := g.newPostCall(req, rec, nil, call{clientID: "s1"}, &rpc.Message{ID: []byte("1"), Method: "tools/call"}, nil)
	pc.relay.asked = map[string]json.RawMessage{"42": []byte(`"mm-x-1"`)}
	pc.relay.Notification(&rpc.Message{Method: "notifications/cancelled", Params: []byte(`{"requestId":41}`)})
	pc.relay.Notification(&rpc.Message{Method: "notifications/cancelled", Params: []byte(`{"requestId":42,"reason":"gone"}`)})
	pc.relay.finish()
	if !pc.out.Finish([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`)) {
		t.Fatal("no event stream")
	}
	want := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\"mm-x-1\",\"reason\":\"gone\"}}\n\n" +
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("body:\n%s\nwant:\n%s", got, want)
	}
	// The relay is done: a late request is refused, not sent.
	if _, err := pc.relay.Request(t.Context(), &rpc.Message{ID: []byte("43"), Method: "ping"}); err == nil {
		t.Error("a request after the call ended was accepted")
	}
}
