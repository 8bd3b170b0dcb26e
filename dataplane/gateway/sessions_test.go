package gateway

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/upstream"
)

// TestGatewaySessionsCount: Sessions counts live downstream sessions.
func TestGatewaySessionsCount(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	if n := h.gw.Sessions(); n != 0 {
		t.Fatalf("Sessions before any = %d", n)
	}
	var sids []string
	for range 3 {
		_, hdr, body := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
		sid := hdr.Get(headerSessionID)
		if sid == "" {
			t.Fatalf("initialize: no session: %s", body)
		}
		sids = append(sids, sid)
	}
	if n := h.gw.Sessions(); n != 3 {
		t.Errorf("Sessions after 3 initialize = %d", n)
	}
	status := deleteMCP(t, h.url("main", "mcp"), map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sids[0]})
	if n := h.gw.Sessions(); status != http.StatusNoContent || n != 2 {
		t.Errorf("after DELETE (HTTP %d): Sessions = %d, want 2", status, n)
	}
}

// gatedUpstreams holds Session calls, once armed, until the test opens the gate.
type gatedUpstreams struct {
	Upstreams
	armed   atomic.Bool
	entered chan struct{} // receives once per held call
	gate    chan struct{} // closed to let held calls through
}

func (g *gatedUpstreams) Session(ctx context.Context, server, clientID string) (upstream.Session, error) {
	if g.armed.Load() {
		g.entered <- struct{}{}
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Upstreams.Session(ctx, server, clientID)
}

// TestSessionInFlight: a request slower than the idle TTL keeps its session
// (the sweep skips it); a session DELETEd while a request runs has its
// per_client upstream sessions closed again once the request ends, since
// the request may have opened them after the DELETE closed the others.
func TestSessionInFlight(t *testing.T) {
	for _, tc := range []struct {
		name      string
		delete    bool
		minCloses int
	}{
		{name: "outlives the idle TTL"},
		{name: "DELETE while running", delete: true, minCloses: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gated := &gatedUpstreams{entered: make(chan struct{}, 4), gate: make(chan struct{})}
			h := newHarness(t, testConfig(), nil, func(o *Options) {
				o.SessionIdleTTL = 50 * time.Millisecond
				gated.Upstreams = o.Pool(nil)
				o.Pool = fixedPool(gated)
			})
			auth := map[string]string{"Authorization": "Bearer " + keyAlice}
			_, hdr, body := post(t, h.url("main", "mcp"), initBody, auth)
			sid := hdr.Get(headerSessionID)
			if sid == "" {
				t.Fatalf("initialize: no session: %s", body)
			}
			withSession := map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}
			gated.armed.Store(true)
			type answer struct {
				status int
				body   string
			}
			done := make(chan answer, 1)
			go func() {
				status, _, body := post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"late"}}}`, withSession)
				done <- answer{status, body}
			}()
			select {
			case <-gated.entered:
			case <-time.After(30 * time.Second):
				t.Fatal("the call never asked for an upstream session")
			}
			if tc.delete {
				if status := deleteMCP(t, h.url("main", "mcp"), withSession); status != http.StatusNoContent {
					t.Fatalf("DELETE: HTTP %d", status)
				}
			} else {
				// Several idle TTLs pass while the request waits: the
				// session stays.
				time.Sleep(300 * time.Millisecond)
				if h.gw.Sessions() != 1 || slices.Contains(h.ups.closedClients(), sid) {
					t.Errorf("the session was swept while serving a request")
				}
			}
			gated.armed.Store(false)
			close(gated.gate)
			var a answer
			select {
			case a = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the call did not end")
			}
			if a.status != http.StatusOK || !strings.Contains(a.body, "alpha:late") {
				t.Errorf("call: HTTP %d %s", a.status, a.body)
			}
			closes := 0
			for _, id := range h.ups.closedClients() {
				if id == sid {
					closes++
				}
			}
			if closes < tc.minCloses {
				t.Errorf("CloseClient(%q) called %d times, want at least %d", sid, closes, tc.minCloses)
			}
		})
	}
}

// TestSSEStreamHoldsSession: an open SSE stream keeps its session however
// short the idle TTL (keep-alives are far apart); closing it ends the session.
func TestSSEStreamHoldsSession(t *testing.T) {
	h := newHarness(t, testConfig(), nil, func(o *Options) { o.SessionIdleTTL = 50 * time.Millisecond })
	cs := h.connect(t, "main", keyAlice, version20241105)
	// Several idle TTLs pass with no request.
	time.Sleep(300 * time.Millisecond)
	if got, isErr := callText(t, cs, "alpha__echo", map[string]any{"text": "still here"}); isErr || got != "alpha:still here" {
		t.Errorf("call after idling = %q (error %v)", got, isErr)
	}
	if n := h.gw.Sessions(); n != 1 {
		t.Errorf("Sessions with the stream open = %d, want 1", n)
	}
	_ = cs.Close()
	deadline := time.Now().Add(10 * time.Second)
	for h.gw.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session outlived its closed stream")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
