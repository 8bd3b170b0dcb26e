package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// keyHolder hands out session keys the way a snapshot does (a new message
// for every snapshot).
type keyHolder struct {
	p atomic.Pointer[metamcpv1.SessionKeys]
}

func (k *keyHolder) set(cur, prev byte) {
	sk := &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{cur}, 32)}
	if prev != 0 {
		sk.Previous = bytes.Repeat([]byte{prev}, 32)
	}
	k.p.Store(sk)
}

func (k *keyHolder) get() *metamcpv1.SessionKeys { return k.p.Load() }

func newTestStore(t *testing.T, keys *keyHolder) *sealedSessions {
	t.Helper()
	s, err := NewSealedSessions(keys.get)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*sealedSessions)
}

func sampleInfo() *SessionInfo {
	return &SessionInfo{
		Endpoint:           "main",
		Principal:          "alice",
		ProtocolVersion:    "2025-11-25",
		ClientCapabilities: json.RawMessage(`{"roots":{"listChanged":true},"sampling":{},"elicitation":{"form":{},"url":{}}}`),
		ClientInfo:         json.RawMessage(`{"name":"claude-code","version":"2.1.0"}`),
		Upstreams:          []UpstreamSession{{Server: "web", SessionID: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", ProtocolVersion: "2025-11-25"}},
	}
}

// TestSealedIDs: an id opens on every replica holding the key, with what it
// carries; anything forged, truncated, altered or sealed with another key is
// refused.
func TestSealedIDs(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	want := sampleInfo()
	sid, err := a.Create(want)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sealed id: %d bytes", len(sid))
	if len(sid) > 1024 {
		t.Errorf("sealed id is %d bytes, want under 1 KB for a typical session", len(sid))
	}
	if strings.Contains(sid, "alice") || strings.Contains(sid, "ABCDEFGH") {
		t.Error("the sealed id shows its contents")
	}
	got, ok := b.Acquire(sid)
	if !ok {
		t.Fatal("another replica with the same key refused the id")
	}
	defer b.Release(sid)
	if got.Local {
		t.Error("a rehydrated session says it is local")
	}
	if local, _ := a.Open(sid); !local.Local {
		t.Error("the creating replica does not see its session as local")
	}
	if got.ID == "" || got.Endpoint != want.Endpoint || got.Principal != want.Principal || got.ProtocolVersion != want.ProtocolVersion ||
		string(got.ClientCapabilities) != string(want.ClientCapabilities) || string(got.ClientInfo) != string(want.ClientInfo) ||
		len(got.Upstreams) != 1 || got.Upstreams[0] != want.Upstreams[0] || time.Since(got.Created) > time.Minute {
		t.Errorf("rehydrated %+v, want %+v", got, want)
	}
	if b.Len() != 1 {
		t.Errorf("the replica that opened the id tracks %d sessions, want 1", b.Len())
	}

	other := &keyHolder{}
	other.set(9, 0)
	foreign := newTestStore(t, other)
	raw, _ := base64.RawURLEncoding.DecodeString(sid)
	refused := map[string]string{
		"empty":      "",
		"not base64": "!!!" + sid,
		"garbage":    base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 120)),
		"truncated":  sid[:len(sid)-4],
		"too long":   strings.Repeat("A", maxTokenLen+1),
	}
	// Every byte altered in turn (version, nonce, ciphertext, tag).
	for i := range raw {
		alt := bytes.Clone(raw)
		alt[i] ^= 0x01
		refused[fmt.Sprintf("byte %d altered", i)] = base64.RawURLEncoding.EncodeToString(alt)
	}
	for name, id := range refused {
		if _, ok := b.Open(id); ok {
			t.Errorf("%s: opened", name)
		}
	}
	if _, ok := foreign.Open(sid); ok {
		t.Error("a replica with another key opened the id")
	}
	// An id altered in its base64 text (one character) is refused too.
	c := []byte(sid)
	c[len(c)/2] ^= 0x02
	if _, ok := newTestStore(t, keys).Open(string(c)); ok {
		t.Error("an id with one character altered opened")
	}
}

// TestSealedIDRotation: after one rotation old ids still open (previous key),
// after the next they are refused, also where they were cached.
func TestSealedIDRotation(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	old, err := a.Create(sampleInfo())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Open(old); !ok {
		t.Fatal("open before rotation")
	}
	keys.set(2, 1)
	newer, err := a.Create(sampleInfo())
	if err != nil {
		t.Fatal(err)
	}
	fresh := newTestStore(t, keys)
	for name, s := range map[string]*sealedSessions{"creator": a, "cached": b, "fresh": fresh} {
		if _, ok := s.Open(old); !ok {
			t.Errorf("%s: an id of the previous key is refused after one rotation", name)
		}
		if _, ok := s.Open(newer); !ok {
			t.Errorf("%s: an id of the current key is refused", name)
		}
	}
	keys.set(3, 2)
	for name, s := range map[string]*sealedSessions{"creator": a, "cached": b, "fresh": newTestStore(t, keys)} {
		if _, ok := s.Open(old); ok {
			t.Errorf("%s: an id sealed two keys ago still opens", name)
		}
		if _, ok := s.Open(newer); !ok {
			t.Errorf("%s: an id of the previous key is refused", name)
		}
	}
}

// TestSealedIDSize: a client announcing huge capabilities still gets an id
// under 2 KB (compressed, then trimmed to the capability names).
func TestSealedIDSize(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s := newTestStore(t, keys)
	info := sampleInfo()
	var big strings.Builder
	big.WriteString(`{"sampling":{},"experimental":{`)
	for i := range 400 {
		if i > 0 {
			big.WriteString(",")
		}
		big.WriteString(`"x` + strings.Repeat(string(rune('a'+i%26)), 1+i%7) + time.Duration(i).String() + `":{"v":"` + time.Duration(i*7919).String() + `"}`)
	}
	big.WriteString(`}}`)
	info.ClientCapabilities = json.RawMessage(big.String())
	info.ClientInfo = json.RawMessage(`{"name":"` + strings.Repeat("n", 3000) + `"}`)
	sid, err := s.Create(info)
	if err != nil {
		t.Fatal(err)
	}
	if len(sid) > 2048 {
		t.Fatalf("sealed id of a large session is %d bytes, want at most 2 KB", len(sid))
	}
	got, ok := newTestStore(t, keys).Open(sid)
	if !ok {
		t.Fatal("refused")
	}
	var caps map[string]json.RawMessage
	if err := json.Unmarshal(got.ClientCapabilities, &caps); err != nil || caps["sampling"] == nil || caps["experimental"] == nil {
		t.Errorf("trimmed capabilities %s lost the capability names", got.ClientCapabilities)
	}
}

// TestSealedEnded: an id ended here (DELETE, idle sweep) is refused here,
// while a replica that never saw the end still opens it.
func TestSealedEnded(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	sid, _ := a.Create(sampleInfo())
	idle, _ := a.Create(sampleInfo())
	if !a.End(sid) {
		t.Fatal("End of a live session reported it was not")
	}
	if _, ok := a.Open(sid); ok {
		t.Error("an ended session opens again where it ended")
	}
	if ids := a.Expired(time.Now().Add(time.Second)); len(ids) != 1 || ids[0] != idle {
		t.Fatalf("Expired = %v, want the idle session", ids)
	}
	if _, ok := a.Acquire(idle); ok {
		t.Error("a swept session opens again where it was swept")
	}
	if _, ok := b.Open(sid); !ok {
		t.Error("a replica that did not end the session refuses it")
	}
	// DELETE on a replica that never served the session ends it there too.
	if b.End(idle) {
		t.Error("End of a session never seen here reported it live")
	}
	if _, ok := b.Open(idle); ok {
		t.Error("a session ended on a replica that had not seen it opens there")
	}
}

// TestSealedChurnMemory: the store's memory of a burst of sessions is given
// back after they are swept, and the bytes per idle session stay small.
func TestSealedChurnMemory(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s := newTestStore(t, keys)
	const n = 20000
	before := heapInUse()
	for range n {
		if _, err := s.Create(sampleInfo()); err != nil {
			t.Fatal(err)
		}
	}
	during := heapInUse()
	per := float64(during-before) / n
	t.Logf("store: %.0f bytes per idle session (heap %d -> %d for %d sessions)", per, before, during, n)
	if per > 4096 {
		t.Errorf("%.0f bytes per idle session, want under 4 KiB", per)
	}
	s.Expired(time.Now().Add(time.Second))
	s.Expired(time.Now().Add(time.Second)) // drops the ended IDs too: retention follows the cutoff
	s.Expired(time.Now().Add(time.Hour))
	after := heapInUse()
	t.Logf("store: heap %d before, %d after the sweep", before, after)
	if s.Len() != 0 || len(s.ended) != 0 {
		t.Fatalf("after the sweep: %d sessions, %d ended IDs kept", s.Len(), len(s.ended))
	}
	if after > before+(during-before)/10 {
		t.Errorf("heap after the sweep %d, want close to %d (it held %d)", after, before, during)
	}
}

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

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
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

// TestSessionEventsNameTheSid: the pool names a per_client upstream
// session's client by the session's ID; the gateway's Events get the sid,
// on the replica that created the session and on one that rehydrated it.
func TestSessionEventsNameTheSid(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	a, b := newTestStore(t, keys), newTestStore(t, keys)
	sid, err := a.Create(sampleInfo())
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
	if got := b.sidOf(info.ID); got != sid {
		t.Errorf("on the rehydrating replica the ID maps to %q, want the sid", got)
	}
	a.End(sid)
	if got := a.sidOf(info.ID); got != info.ID {
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
	auth := map[string]string{"Authorization": "Bearer " + keyAlice}
	status, hdr, body := post(t, r1.url("main", "mcp"), initBody, auth)
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %s", status, body)
	}
	list := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	withSID := map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}
	if status, _, body := post(t, r2.url("main", "mcp"), list, withSID); status != 200 {
		t.Fatalf("tools/list on the second replica: %d %s", status, body)
	}
	if status := deleteMCP(t, r1.url("main", "mcp"), withSID); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d", status)
	}
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
	keys := &keyHolder{}
	keys.set(1, 0)
	store := newTestStore(t, keys)
	sid, err := store.Create(sampleInfo())
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

// TestEndedSetBounded: the set of ended IDs stays bounded however many
// sessions end within one idle TTL.
func TestEndedSetBounded(t *testing.T) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s := newTestStore(t, keys)
	s.mu.Lock()
	for i := range maxEnded + 100 {
		var k endedKey
		binary.BigEndian.PutUint64(k[:], uint64(i))
		s.markEndedLocked(k, int64(i))
	}
	n := len(s.ended)
	s.mu.Unlock()
	if n > maxEnded || n < maxEnded*8/10 {
		t.Errorf("%d ended IDs kept after %d ended, want at most %d and most of them", n, maxEnded+100, maxEnded)
	}
}

// BenchmarkSealedSessions measures sealing a new session's id (initialize),
// opening a known id (every later request) and rehydrating an id first seen
// here (the first request on another replica).
func BenchmarkSealedSessions(b *testing.B) {
	keys := &keyHolder{}
	keys.set(1, 0)
	s, err := NewSealedSessions(keys.get)
	if err != nil {
		b.Fatal(err)
	}
	store := s.(*sealedSessions)
	b.Run("create", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := store.Create(sampleInfo()); err != nil {
				b.Fatal(err)
			}
		}
	})
	sid, _ := store.Create(sampleInfo())
	b.Run("acquire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := store.Acquire(sid); !ok {
				b.Fatal("refused")
			}
			store.Release(sid)
		}
	})
	b.Run("rehydrate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := store.seal.open(sid); err != nil {
				b.Fatal(err)
			}
		}
	})
}
