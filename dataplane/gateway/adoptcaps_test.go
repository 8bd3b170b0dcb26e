package gateway

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// TestAdoptingReplicaSubscribes: a per_client session started on one
// replica goes on on another that has never had a session with the
// upstream; that replica adopts the carried upstream session and still
// knows the upstream offers resources/subscribe.
func TestAdoptingReplicaSubscribes(t *testing.T) {
	web := newLiveUpstream(t, "web")
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "web"})
	cfg.Servers = append(cfg.Servers, &metamcpv1.Server{Name: "web", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
		Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: web.url}}})
	cfg.SessionKeys = &metamcpv1.SessionKeys{Current: bytes.Repeat([]byte{8}, 32)}
	holder := &configHolder{}
	holder.set(t, cfg)
	replica := func() *harness {
		var pool *upstream.Pool
		newPool := realPool(t, &pool, upstream.PoolOptions{}, holder)
		return newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) { o.Config, o.Pool = holder, newPool })
	}
	r1, r2 := replica(), replica()
	status, hdr, body := post(t, r1.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d %s", status, body)
	}
	withSID := map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}
	sub := `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"fixture://web/readme"}}`
	if status, _, body := post(t, r2.url("main", "mcp"), sub, withSID); status != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"result":{}`)) {
		t.Fatalf("resources/subscribe on the adopting replica: %d %s", status, body)
	}
	if n := web.subscribes.Load(); n != 1 {
		t.Errorf("the upstream got %d resources/subscribe, want 1", n)
	}
	unsub := `{"jsonrpc":"2.0","id":3,"method":"resources/unsubscribe","params":{"uri":"fixture://web/readme"}}`
	if status, _, body := post(t, r2.url("main", "mcp"), unsub, withSID); status != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"result":{}`)) {
		t.Fatalf("resources/unsubscribe on the adopting replica: %d %s", status, body)
	}
	if n := web.unsubscribe.Load(); n != 1 {
		t.Errorf("the upstream got %d resources/unsubscribe, want 1", n)
	}
}
