package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/session"
	"github.com/metamcp/metamcp/dataplane/sessionbus"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// twoReplicas are two gateways, each with its own upstream pool, that share
// a session store (as sealed session ids make any replica open any session)
// and a session bus, in front of one Streamable HTTP fixture "web".
func twoReplicas(t *testing.T) (*harness, *harness) {
	t.Helper()
	bin := fixture.Build(t)
	webURL := fixture.Start(t, bin, "http", "web", "--tools", talkTools)
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "web"})
	cfg.Servers = append(cfg.Servers, &metamcpv1.Server{Name: "web", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: webURL}}})
	holder := &configHolder{}
	holder.set(t, cfg)
	sessions := session.NewMemory()
	bus := sessionbus.NewLocal()
	t.Cleanup(func() { _ = bus.Close() })
	replica := func() *harness {
		newPool := realPool(t, nil, upstream.PoolOptions{}, holder)
		return newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
			o.Config, o.Pool, o.Sessions, o.Bus = holder, newPool, sessions, bus
		})
	}
	return replica(), replica()
}

// postStream posts body within the test's context and returns the
// response's Content-Type and a reader of its body (closed at cleanup).
func postStream(t *testing.T, url, sid, body string) (string, *bufio.Reader) {
	t.Helper()
	ctx := testCtx(t)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	req.Header.Set(headerSessionID, sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp.Header.Get("Content-Type"), bufio.NewReader(resp.Body)
}

const initSampling = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"sampling":{}},"clientInfo":{"name":"raw","version":"1"}}}`

// TestAnswerReachesOtherReplica: a sampling request goes out on the POST
// stream of replica two; the client answers to replica one; the call on
// replica two gets the answer.
func TestAnswerReachesOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	one, two := twoReplicas(t)
	_, hdr, _ := post(t, one.url("main", "mcp"), initSampling, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	ct, r := postStream(t, two.url("main", "mcp"), sid, `{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"web__sample","arguments":{"prompt":"hi"}}}`)
	if ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want an event stream", ct)
	}
	_, data := readEvent(t, r)
	m, err := rpc.Parse([]byte(data))
	if err != nil || m.Method != "sampling/createMessage" || !strings.HasPrefix(string(m.ID), `"mm-`) {
		t.Fatalf("first event %s, want sampling/createMessage with a gateway id", data)
	}
	answer := `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"result":{"role":"assistant","model":"m","content":{"type":"text","text":"answered at replica one"}}}`
	if status, _, body := post(t, one.url("main", "mcp"), answer, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 202 {
		t.Fatalf("posting the answer: %d %s", status, body)
	}
	_, data = readEvent(t, r)
	if !strings.Contains(data, `"id":"c1"`) || !strings.Contains(data, "answered at replica one") {
		t.Fatalf("final event %s, want the call's result with the answer", data)
	}
}

// TestCancelReachesOtherReplica: a notifications/cancelled posted to
// replica one cancels the call running on replica two.
func TestCancelReachesOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	one, two := twoReplicas(t)
	_, hdr, _ := post(t, one.url("main", "mcp"), initSampling, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	ctx := testCtx(t)
	tag := "x" + newToken()
	done := make(chan string, 1)
	go func() {
		_, _, body := post(t, two.url("main", "mcp"), `{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"web__slow","arguments":{"ms":60000,"tag":"`+tag+`"}}}`,
			map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid})
		done <- body
	}()
	count := func() string {
		_, _, body := post(t, one.url("main", "mcp"), `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"web__cancelled","arguments":{"tag":"`+tag+`"}}}`,
			map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid})
		return body
	}
	waitFor(t, "the slow call to start", func() bool { return strings.Contains(count(), "started=1") })
	if status, _, _ := post(t, one.url("main", "mcp"), `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77}}`,
		map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 202 {
		t.Fatalf("cancel: %d", status)
	}
	select {
	case body := <-done:
		// A cancelled request gets no response: its POST just ends.
		if strings.Contains(body, `"id":77`) {
			t.Errorf("the cancelled call was answered: %s", body)
		}
	case <-ctx.Done():
		t.Fatal("the call was not cancelled")
	}
	waitFor(t, "the upstream call to be cancelled", func() bool { return strings.Contains(count(), "cancelled=1") })
}

// TestStreamOnOtherReplica: what one replica sends to a session reaches
// its GET stream open on the other.
func TestStreamOnOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	one, two := twoReplicas(t)
	_, hdr, _ := post(t, one.url("main", "mcp"), initSampling, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	_, r := openStream(t, one.url("main", "mcp"), keyAlice, sid)
	msg := `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`
	waitFor(t, "the stream to open", func() bool { return two.gw.sendToSession(t.Context(), sid, []byte(msg)) })
	if _, data := readEvent(t, r); data != msg {
		t.Fatalf("got %s", data)
	}
	// A second stream on replica two takes over; the first ends.
	_, r2 := openStream(t, two.url("main", "mcp"), keyAlice, sid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first stream did not end")
		}
	}
	waitFor(t, "the second stream", func() bool { return one.gw.sendToSession(t.Context(), sid, []byte(msg)) })
	if _, data := readEvent(t, r2); data != msg {
		t.Fatalf("second stream got %s", data)
	}
}

// TestSSEMessageOnOtherReplica: a 2024-11-05 client's POST that reaches
// the replica without its stream is served there, and the answer goes to
// the stream on the other.
func TestSSEMessageOnOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	one, two := twoReplicas(t)
	r, sid := openSSE(t, one.url("main", "sse"))
	msgURL := one.url("main", "message") + "?sessionId=" + sid + "&api_key=" + keyAlice
	post(t, msgURL, `{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{}}}`, nil)
	readEvent(t, r)
	otherURL := two.url("main", "message") + "?sessionId=" + sid + "&api_key=" + keyAlice
	if status, _, body := post(t, otherURL, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"web__echo","arguments":{"text":"via two"}}}`, nil); status != 202 {
		t.Fatalf("post to the other replica: %d %s", status, body)
	}
	if _, data := readEvent(t, r); !strings.Contains(data, `"id":9`) || !strings.Contains(data, "via two") {
		t.Fatalf("answer on the stream: %s", data)
	}
}

// TestSSEInitializeOnOtherReplica: a 2024-11-05 client's initialize that
// reaches the replica without its stream (round robin) is carried to the
// stream's replica, which updates the session and answers on the stream.
func TestSSEInitializeOnOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	one, two := twoReplicas(t)
	r, sid := openSSE(t, one.url("main", "sse"))
	otherURL := two.url("main", "message") + "?sessionId=" + sid + "&api_key=" + keyAlice
	if status, _, body := post(t, otherURL, `{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"rr","version":"1"}}}`, nil); status != 202 {
		t.Fatalf("initialize on the other replica: %d %s", status, body)
	}
	if _, data := readEvent(t, r); !strings.Contains(data, `"id":"i"`) || !strings.Contains(data, `"protocolVersion":"2024-11-05"`) {
		t.Fatalf("initialize's answer on the stream: %s", data)
	}
	if info, ok := one.gw.sessions.Open(sid); !ok || info.ProtocolVersion != "2024-11-05" {
		t.Fatalf("session after initialize: %+v %v", info, ok)
	}
	if status, _, body := post(t, otherURL, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"web__echo","arguments":{"text":"via two"}}}`, nil); status != 202 {
		t.Fatalf("post to the other replica: %d %s", status, body)
	}
	if _, data := readEvent(t, r); !strings.Contains(data, `"id":9`) || !strings.Contains(data, "via two") {
		t.Fatalf("answer on the stream: %s", data)
	}
}

// TestRetryReachesOtherReplica: a 2026-07-28 client's call whose upstream
// asks for a sample gets an input_required round from replica one; its
// retry with the answer reaches replica two, which carries it to replica
// one, where the call is pending: the call completes with the answer.
func TestRetryReachesOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	one, two := twoReplicas(t)
	<-one.gw.retriesReady
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}`
	_, m := statelessPost(t, one.url("main", "mcp"), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"web__sample","arguments":{"prompt":"hi"},`+meta+`}}`)
	first, _ := m["result"].(map[string]any)
	reqs, _ := first["inputRequests"].(map[string]any)
	state, _ := first["requestState"].(string)
	if first["resultType"] != "input_required" || len(reqs) != 1 || state == "" {
		t.Fatalf("first answer %v, want input_required with one request", m)
	}
	answers := map[string]any{}
	for key := range reqs {
		answers[key] = map[string]any{"role": "assistant", "model": "m", "content": map[string]any{"type": "text", "text": "answered via two"}}
	}
	ab, _ := json.Marshal(answers)
	_, m = statelessPost(t, two.url("main", "mcp"), `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"web__sample","arguments":{"prompt":"hi"},"requestState":"`+state+`","inputResponses":`+string(ab)+`,`+meta+`}}`)
	done, _ := m["result"].(map[string]any)
	if b, _ := json.Marshal(done); done["resultType"] != "complete" || !strings.Contains(string(b), "answered via two") {
		t.Fatalf("retry on the other replica: %v, want the call's result with the answer", m)
	}
	waitFor(t, "the call to end on replica one", func() bool { return one.gw.pendingBridges() == 0 })
}

// TestCarriedRetryAnswerLost checks that a retry carried to a replica that
// takes it but never answers (its answer lost on the bus) ends with an
// error after the bounded wait, instead of holding the client's request.
func TestCarriedRetryAnswerLost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an mcpfixture process")
	}
	_, two := twoReplicas(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A replica named ghost listens for retries and answers none.
	taken, err := two.gw.bus.Subscribe(ctx, retryTopic("ghost"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := rpc.Parse([]byte(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"web__sample","requestState":"mmbridge1.ghost.x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	res, rerr := two.gw.forwardRetry(ctx, "ghost", "main", "alice", msg, 200*time.Millisecond)
	if rerr == nil || !strings.Contains(rerr.Message, "did not answer the retry") {
		t.Fatalf("forwardRetry = %s, %v; want the did-not-answer error", res, rerr)
	}
	select {
	case <-taken:
	default:
		t.Fatal("the retry was not carried to the ghost replica")
	}
}
