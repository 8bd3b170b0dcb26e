package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/session"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestSessionsMoveBetweenReplicas runs two gateways (two replicas, each
// with its own upstream pool) on one config with session keys: a session
// initialized on one continues on the other, adopting its per_client
// Streamable HTTP upstream session (the same upstream session id); a
// per_client stdio upstream cannot move and says so; ids altered, sealed
// with retired keys or used on another endpoint are refused.
func TestSessionsMoveBetweenReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs mcpfixture processes")
	}
	bin := fixture.Build(t)
	web := fixtureServer("web", nil)
	mcp.AddTool(web, &mcp.Tool{Name: "sid", Description: "Returns the upstream session id"}, func(_ context.Context, req *mcp.CallToolRequest, _ echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "session " + req.Session.ID()}}}, nil, nil
	})
	webSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return web }, nil))
	t.Cleanup(webSrv.Close)
	shared := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return fixtureServer("shared", nil) }, nil))
	t.Cleanup(shared.Close)

	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "web"}, &metamcpv1.NamespaceMember{Server: "shared"})
	cfg.Servers = append(cfg.Servers,
		&metamcpv1.Server{Name: "web", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
			Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: webSrv.URL}}},
		&metamcpv1.Server{Name: "shared", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: shared.URL}}},
		&metamcpv1.Server{Name: "local", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: bin, Args: fixture.StdioArgs("local")}}},
	)
	cfg.Namespaces = append(cfg.Namespaces, &metamcpv1.Namespace{Name: "pinned", Members: []*metamcpv1.NamespaceMember{{Server: "web"}, {Server: "local"}}})
	cfg.Endpoints = append(cfg.Endpoints, &metamcpv1.Endpoint{Name: "pinned", Namespace: "pinned"})
	cfg.ApiKeys[0].Endpoints = append(cfg.ApiKeys[0].Endpoints, "pinned")
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{1}, 32)}
	holder := &configHolder{}
	holder.set(t, cfg)

	replica := func() *harness {
		newPool := realPool(t, nil, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, holder)
		return newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
			o.Config = holder
			o.Pool = newPool
		})
	}
	r1, r2 := replica(), replica()
	auth := map[string]string{"Authorization": "Bearer " + keyAlice}
	withSID := func(sid string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}
	}
	initialize := func(h *harness, endpoint string) string {
		t.Helper()
		status, hdr, body := post(t, h.url(endpoint, "mcp"), initBody, auth)
		if status != 200 || hdr.Get(headerSessionID) == "" {
			t.Fatalf("initialize on %s: %d %s", endpoint, status, body)
		}
		return hdr.Get(headerSessionID)
	}
	call := func(h *harness, endpoint, sid, tool string) (int, string) {
		t.Helper()
		status, _, body := post(t, h.url(endpoint, "mcp"), `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"`+tool+`","arguments":{"text":"hi"}}}`, withSID(sid))
		return status, body
	}
	text := func(body string) string {
		var m struct {
			Result struct {
				Content []struct{ Text string }
			}
		}
		_ = json.Unmarshal([]byte(body), &m)
		if len(m.Result.Content) == 0 {
			return ""
		}
		return m.Result.Content[0].Text
	}

	sid := initialize(r1, "main")
	_, b1 := call(r1, "main", sid, "web__sid")
	_, b2 := call(r2, "main", sid, "web__sid")
	if !strings.HasPrefix(text(b1), "session ") || text(b1) != text(b2) {
		t.Fatalf("web__sid on the creating replica %q, on the other %q: want the same upstream session", b1, b2)
	}
	for i := range 6 {
		h := []*harness{r1, r2}[i%2]
		if status, body := call(h, "main", sid, "shared__echo"); status != 200 || text(body) != "shared:hi" {
			t.Fatalf("call %d: %d %s", i, status, body)
		}
	}
	if n := r2.gw.Sessions(); n != 1 {
		t.Errorf("the second replica tracks %d sessions, want the one it rehydrated", n)
	}

	// Refused ids.
	alt := []byte(sid)
	alt[10] ^= 0x01
	if status, body := call(r2, "main", string(alt), "shared__echo"); status != 404 || !strings.Contains(body, "initialize a new session") {
		t.Errorf("an id altered by one byte: %d %s, want 404", status, body)
	}
	if status, _ := call(r2, "main", sid[:len(sid)-3], "shared__echo"); status != 404 {
		t.Errorf("a truncated id: %d, want 404", status)
	}
	if status, _ := call(r2, "other", sid, "shared__echo"); status != 403 {
		t.Errorf("an id of endpoint main on endpoint other: %d, want 403", status)
	}

	// A per_client stdio upstream cannot move.
	pinned := initialize(r1, "pinned")
	if status, body := call(r1, "pinned", pinned, "local__echo"); status != 200 || text(body) != "hi" {
		t.Fatalf("local__echo on the creating replica: %d %s", status, body)
	}
	if status, body := call(r2, "pinned", pinned, "local__echo"); status != 200 || !strings.Contains(body, "initialize a new session") || !strings.Contains(body, `"error"`) {
		t.Errorf("local__echo on another replica: %d %s, want a JSON-RPC error telling to initialize a new session", status, body)
	}
	if status, body := call(r2, "pinned", pinned, "web__sid"); status != 200 || !strings.HasPrefix(text(body), "session ") {
		t.Errorf("web__sid of the pinned session on another replica: %d %s", status, body)
	}

	// The upstream ends its sessions (a restart): each replica's next call
	// through the session is retried on a fresh upstream session, as is
	// the first call on a replica that adopts the dead one.
	before := text(b1)
	for ss := range web.Sessions() {
		_ = ss.Close()
	}
	r3 := replica()
	for i, h := range []*harness{r1, r2, r3} {
		status, body := call(h, "main", sid, "web__sid")
		if got := text(body); status != 200 || !strings.HasPrefix(got, "session ") || got == before {
			t.Errorf("replica %d after the upstream ended its sessions: %d %s, want a fresh upstream session", i+1, status, body)
		}
	}

	// Rotation: one rotation keeps the session, the next retires it.
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{2}, 32), Previous: bytes.Repeat([]byte{1}, 32)}
	holder.set(t, cfg)
	if status, body := call(r2, "main", sid, "shared__echo"); status != 200 {
		t.Errorf("after one rotation: %d %s", status, body)
	}
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{3}, 32), Previous: bytes.Repeat([]byte{2}, 32)}
	holder.set(t, cfg)
	for _, h := range []*harness{r1, r2} {
		if status, _ := call(h, "main", sid, "shared__echo"); status != 404 {
			t.Errorf("after two rotations: %d, want 404", status)
		}
	}
}

// recordEvents records the client ids upstream events name.
type recordEvents struct{ got []string }

func (r *recordEvents) Notification(_, clientID string, _ *rpc.Message) {
	r.got = append(r.got, clientID)
}

func (r *recordEvents) Request(_ context.Context, _, clientID string, _ *rpc.Message) (json.RawMessage, error) {
	r.got = append(r.got, clientID)
	return nil, nil
}

// sealedStore is a session store sealing with a fixed key, as the replicas
// of one snapshot do.
func sealedStore(t *testing.T) *session.Sealed {
	t.Helper()
	keys := &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{1}, 32)}
	s, err := session.NewSealed(func() *metamcpv1.SessionKeys { return keys })
	if err != nil {
		t.Fatal(err)
	}
	return s.(*session.Sealed)
}

// carriedInfo is a session that carries a per_client upstream session.
func carriedInfo() *session.Info {
	return &session.Info{Endpoint: "main", Principal: "alice", ProtocolVersion: "2025-11-25",
		Upstreams: []session.Upstream{{Server: "web", SessionID: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", ProtocolVersion: "2025-11-25"}}}
}

// TestSessionEventsNameTheSid: the pool names a per_client upstream
// session's client by the session's ID; the gateway's Events get the sid,
// on the replica that created the session and on one that rehydrated it.
func TestSessionEventsNameTheSid(t *testing.T) {
	a, b := sealedStore(t), sealedStore(t)
	sid, err := a.Create(carriedInfo())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := a.Open(sid)
	// What a gateway with these sessions gives the pool it makes.
	var got upstream.Events
	g := New(Options{Sessions: a, Pool: func(ev upstream.Events) Upstreams { got = ev; return nil }})
	t.Cleanup(g.Close)
	if _, ok := got.(sessionEvents); !ok {
		t.Fatalf("the pool was given %T, want sessionEvents", got)
	}
	rec := &recordEvents{}
	ev := withSessionEvents(rec, a)
	ev.Notification("web", info.ID, &rpc.Message{Method: "notifications/message"})
	_, _ = ev.Request(t.Context(), "web", info.ID, &rpc.Message{ID: []byte("1"), Method: "roots/list"})
	ev.Notification("web", "", &rpc.Message{Method: "notifications/message"})
	ev.Notification("web", "stateless/main/alice", &rpc.Message{Method: "notifications/message"})
	if want := []string{sid, sid, "", "stateless/main/alice"}; !slices.Equal(rec.got, want) {
		t.Errorf("events named %q, want %q", rec.got, want)
	}
	if _, ok := b.Open(sid); !ok {
		t.Fatal("rehydrate")
	}
	if got := b.SIDOf(info.ID); got != sid {
		t.Errorf("on the rehydrating replica the ID maps to %q, want the sid", got)
	}
	a.End(sid)
	if got := a.SIDOf(info.ID); got != info.ID {
		t.Errorf("an ended session's ID maps to %q, want itself", got)
	}
}

// TestDeleteReachesOtherReplicas: a DELETE on one replica is announced on
// the session bus; the other replicas refuse the id from then on, the one
// that had opened it and one that never saw it.
func TestDeleteReachesOtherReplicas(t *testing.T) {
	cfg := testConfig()
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{5}, 32)}
	bus := sessionbus.NewLocal()
	t.Cleanup(func() { _ = bus.Close() })
	replica := func() *harness {
		h := newHarness(t, cfg, nil, func(o *Options) { o.Bus = bus })
		<-h.gw.endedReady
		return h
	}
	r1, r2, r3 := replica(), replica(), replica()
	list, withSID := openListDelete(t, r1, r2)
	for i, h := range []*harness{r1, r2, r3} {
		waitFor(t, fmt.Sprintf("replica %d refusing the deleted session", i+1), func() bool {
			status, _, _ := post(t, h.url("main", "mcp"), list, withSID)
			return status == http.StatusNotFound
		})
	}
	if n := r2.gw.Sessions(); n != 0 {
		t.Errorf("the replica that had opened the session still tracks %d", n)
	}
}

// TestCarriedUpstreamSessionsOutliveReplicas: a per_client Streamable HTTP
// upstream session carried in a sealed id is not ended upstream when one
// replica reaps it idle or shuts down (other replicas use it); it is when
// the client ends the session.
func TestCarriedUpstreamSessionsOutliveReplicas(t *testing.T) {
	web := fixtureServer("web", nil)
	mcp.AddTool(web, &mcp.Tool{Name: "sid", Description: "Returns the upstream session id"}, func(_ context.Context, req *mcp.CallToolRequest, _ echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: req.Session.ID()}}}, nil, nil
	})
	webSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return web }, nil))
	t.Cleanup(webSrv.Close)
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "web"})
	cfg.Servers = append(cfg.Servers, &metamcpv1.Server{Name: "web", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
		Limits:    &metamcpv1.Limits{IdleTtl: durationpb.New(200 * time.Millisecond)},
		Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: webSrv.URL}}})
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{6}, 32)}
	holder := &configHolder{}
	holder.set(t, cfg)
	type replica struct {
		h    *harness
		pool *upstream.Pool
	}
	newReplica := func() replica {
		var pool *upstream.Pool
		newPool := realPool(t, &pool, upstream.PoolOptions{}, holder)
		h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) { o.Config, o.Pool = holder, newPool })
		return replica{h, pool}
	}
	r1, r2 := newReplica(), newReplica()
	status, hdr, body := post(t, r1.h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %s", status, body)
	}
	withSID := map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}
	upstreamSID := func(r replica) string {
		t.Helper()
		status, _, body := post(t, r.h.url("main", "mcp"), `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"web__sid","arguments":{"text":"x"}}}`, withSID)
		var m struct {
			Result struct{ Content []struct{ Text string } }
		}
		if err := json.Unmarshal([]byte(body), &m); status != 200 || err != nil || len(m.Result.Content) != 1 || m.Result.Content[0].Text == "" || strings.Contains(body, "isError") {
			t.Fatalf("web__sid: %d %s", status, body)
		}
		return m.Result.Content[0].Text
	}
	live := func(id string) bool {
		for ss := range web.Sessions() {
			if ss.ID() == id {
				return true
			}
		}
		return false
	}
	first := upstreamSID(r1)
	info, _ := r1.h.gw.sessions.Open(sid)
	if !live(first) {
		t.Fatalf("upstream session %q is not live at the upstream", first)
	}

	// Reaped idle on the creating replica: not ended upstream, so the other
	// replica adopts the very same session.
	waitFor(t, "the idle per_client session reaped", func() bool { return !r1.pool.HasClient("web", info.ID) })
	if !live(first) {
		t.Fatal("reaping an idle carried session ended it upstream")
	}
	if got := upstreamSID(r2); got != first {
		t.Errorf("after the idle reap, the other replica uses upstream session %q, want %q", got, first)
	}
	// One replica shuts down: the session lives on at the other.
	r2.h.gw.Close()
	_ = r2.pool.Close()
	if got := upstreamSID(r1); got != first || !live(first) {
		t.Errorf("after a replica shut down, upstream session %q (live %v), want %q", got, live(first), first)
	}
	// The client ends the session: so does the upstream.
	deleteMCP(t, r1.h.url("main", "mcp"), withSID)
	waitFor(t, "the upstream session ended after DELETE", func() bool { return !live(first) })
}

// endRecorder is an adopter that records the upstream sessions it is told
// to end.
type endRecorder struct {
	adopter
	closed []string
	ended  []string
}

func (r *endRecorder) CloseClient(clientID string) { r.closed = append(r.closed, clientID) }

func (r *endRecorder) EndUpstream(server string, ref upstream.SessionRef) {
	r.ended = append(r.ended, server+"="+ref.SessionID)
}

// TestEndingCarriedSessions: a session ended here (DELETE, idle sweep) ends
// its carried upstream sessions; one ended on another replica, or while the
// gateway shuts down, only closes what this replica holds.
func TestEndingCarriedSessions(t *testing.T) {
	store := sealedStore(t)
	sid, err := store.Create(carriedInfo())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := store.Open(sid)
	rec := &endRecorder{}
	u := &sessionUpstreams{inner: rec, store: store}
	u.CloseClient(sid)
	if !slices.Equal(rec.closed, []string{info.ID}) || !slices.Equal(rec.ended, []string{"web=ABCDEFGHIJKLMNOPQRSTUVWXYZ"}) {
		t.Errorf("ended here: closed %q, ended upstream %q", rec.closed, rec.ended)
	}
	rec.closed, rec.ended = nil, nil
	u.closeLocal(sid)
	u.closing.Store(true)
	u.CloseClient(sid)
	if len(rec.closed) != 2 || len(rec.ended) != 0 {
		t.Errorf("ended elsewhere or at shutdown: closed %q, ended upstream %q; want closed twice, nothing ended upstream", rec.closed, rec.ended)
	}
}
