package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// liveUpstream is a go-sdk server behind a Streamable HTTP listener, with
// the subscribe and unsubscribe requests it received counted.
type liveUpstream struct {
	s           *mcp.Server
	url         string
	subscribes  atomic.Int32
	unsubscribe atomic.Int32
}

type sampleIn struct {
	Prompt string `json:"prompt"`
}

func newLiveUpstream(t *testing.T, name string) *liveUpstream {
	u := &liveUpstream{}
	u.s = fixtureServer(name, &mcp.ServerOptions{
		SubscribeHandler: func(_ context.Context, req *mcp.SubscribeRequest) error {
			if !strings.HasPrefix(req.Params.URI, "fixture://"+name+"/") {
				return fmt.Errorf("%s has no resource %s", name, req.Params.URI)
			}
			u.subscribes.Add(1)
			return nil
		},
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error {
			u.unsubscribe.Add(1)
			return nil
		},
	})
	mcp.AddTool(u.s, &mcp.Tool{Name: "sample", Description: "Asks the client to sample, twice"}, func(ctx context.Context, req *mcp.CallToolRequest, in sampleIn) (*mcp.CallToolResult, any, error) {
		var got []string
		for i := range 2 {
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{ //nolint:staticcheck // sampling still passes through
				MaxTokens: 10,
				Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: in.Prompt + string(rune('1'+i))}}}, //nolint:staticcheck // as above
			})
			if err != nil {
				return nil, nil, err
			}
			got = append(got, res.Content.(*mcp.TextContent).Text)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(got, "+")}}}, nil, nil
	})
	mcp.AddTool(u.s, &mcp.Tool{Name: "state", Description: "Says what requestState and inputResponses it got"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		text := "state=" + req.Params.RequestState
		for k, v := range req.Params.InputResponses {
			if e, ok := v.(*mcp.ElicitResult); ok {
				text += " " + k + "=" + e.Action
			}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
	})
	mcp.AddTool(u.s, &mcp.Tool{Name: "ask", Description: "Elicits a name"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "your name?", RequestedSchema: jsonSchemaName})
		if err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.Action + ":" + res.Content["name"].(string)}}}, nil, nil
	})
	mcp.AddTool(u.s, &mcp.Tool{Name: "headers", Description: "Says which HTTP headers its request carried"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		h := req.Extra.Header
		text := "traceparent=" + h.Get("Traceparent") + " tracestate=" + h.Get("Tracestate") + " baggage=" + h.Get("Baggage") +
			" authorization=" + h.Get("Authorization") + " x-custom=" + h.Get("X-Custom")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.s }, nil))
	t.Cleanup(func() {
		// Close waits for requests in flight: a pool still open holds a
		// standalone GET stream here.
		srv.CloseClientConnections()
		srv.Close()
	})
	u.url = srv.URL
	return u
}

var jsonSchemaName = map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}

// liveHarness is a gateway over the real pool in front of two live
// upstreams, alpha and beta (Streamable HTTP, shared sessions), mounted by
// endpoint main; endpoint other mounts beta only.
type liveHarness struct {
	*harness
	alpha, beta *liveUpstream
	holder      *configHolder
	cfg         *metamcpv1.Config
	pool        *upstream.Pool
}

func newLiveHarness(t *testing.T) *liveHarness {
	t.Helper()
	lh := &liveHarness{alpha: newLiveUpstream(t, "alpha"), beta: newLiveUpstream(t, "beta")}
	cfg := testConfig()
	cfg.Servers = []*metamcpv1.Server{
		{Name: "alpha", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: lh.alpha.url}}},
		{Name: "beta", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: lh.beta.url}}},
	}
	cfg.Namespaces = append(cfg.Namespaces, &metamcpv1.Namespace{Name: "betaonly", Members: []*metamcpv1.NamespaceMember{{Server: "beta"}}})
	for _, e := range cfg.Endpoints {
		if e.Name == "other" {
			e.Namespace = "betaonly"
		}
	}
	lh.cfg = cfg
	lh.holder = &configHolder{}
	lh.holder.set(t, cfg)
	lh.harness = newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = lh.holder
		o.Pool = realPool(t, &lh.pool, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, lh.holder)
	})
	lh.gw.ConfigChanged()
	return lh
}

// swap serves a changed config and tells the gateway.
func (lh *liveHarness) swap(t *testing.T, change func(*metamcpv1.Config)) {
	t.Helper()
	change(lh.cfg)
	lh.holder.set(t, lh.cfg)
	lh.gw.ConfigChanged()
}

// counter counts notifications and lets a test wait for a count.
type counter struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

func newCounter() *counter { return &counter{ch: make(chan struct{}, 1000)} }

func (c *counter) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	c.ch <- struct{}{}
}

func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// waitFor waits until the count reaches n, and fails the test past a deadline.
func (c *counter) waitFor(t *testing.T, n int, what string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for c.get() < n {
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("%s: %d notifications, want %d", what, c.get(), n)
		}
	}
	if got := c.get(); got != n {
		t.Fatalf("%s: %d notifications, want %d", what, got, n)
	}
}

// connectWith opens a go-sdk client session with client options.
func (h *harness) connectWith(t *testing.T, endpoint, key, version string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: &keyTransport{key: key}}
	var tr mcp.Transport = &mcp.StreamableClientTransport{Endpoint: h.url(endpoint, "mcp"), HTTPClient: hc, MaxRetries: -1}
	ctx := testCtx(t)
	if version == version20241105 {
		tr = &mcp.SSEClientTransport{Endpoint: h.url(endpoint, "sse"), HTTPClient: hc}
		// The SSE transport keeps its stream on the Connect context.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(context.Background())
		t.Cleanup(cancel)
	}
	var so *mcp.ClientSessionOptions
	if version != "" {
		so = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "b2-test", Version: "1"}, opts).Connect(ctx, tr, so)
	if err != nil {
		t.Fatalf("connect %s at %q: %v", endpoint, version, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// waitStreams waits until n standalone streams of endpoint are open here.
func (h *harness) waitStreams(t *testing.T, endpoint string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.gw.localStreams(endpoint)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d standalone streams of %s open, want %d", len(h.gw.localStreams(endpoint)), endpoint, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitListeners waits until n listen streams are open here.
func (h *harness) waitListeners(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.gw.state.listeners.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d listen streams open, want %d", h.gw.state.listeners.count(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func toolNamesOf(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(testCtx(t), nil)
	if err != nil {
		t.Fatalf("list tools: %v", err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	return names
}

func addEcho(s *mcp.Server, name string) {
	mcp.AddTool(s, &mcp.Tool{Name: name, Description: "added"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
}

// TestListChanged: an upstream's list_changed and snapshot swaps reach a
// session client (standalone stream) and a 2026-07-28 client
// (subscriptions/listen) once per real change of the effective tool set; a
// burst gives one notification; a swap that leaves the set as it was, or
// touches another endpoint, gives none.
func TestListChanged(t *testing.T) {
	lh := newLiveHarness(t)
	sessTools, listenTools, otherTools := newCounter(), newCounter(), newCounter()
	sess := lh.connectWith(t, "main", keyAlice, "2025-11-25", &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { sessTools.add() }})
	stateless := lh.connectWith(t, "main", keyBob, "", &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { listenTools.add() }})
	other := lh.connectWith(t, "other", keyBob, "2025-11-25", &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { otherTools.add() }})
	sseTools := newCounter()
	legacy := lh.connectWith(t, "main", keyAlice, version20241105, &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { sseTools.add() }})
	lh.waitStreams(t, "main", 2)
	lh.waitStreams(t, "other", 1)
	lh.waitListeners(t, 1)
	toolNamesOf(t, sess)
	toolNamesOf(t, stateless)
	toolNamesOf(t, other)
	toolNamesOf(t, legacy)

	// An upstream adds a tool: one notification each for main's clients.
	addEcho(lh.alpha.s, "extra")
	sessTools.waitFor(t, 1, "session client after alpha added a tool")
	listenTools.waitFor(t, 1, "listen client after alpha added a tool")
	if names := toolNamesOf(t, sess); !slices.Contains(names, "alpha__extra") {
		t.Errorf("tools after the notification %v lack alpha__extra", names)
	}

	// A burst of upstream notifications about one change: one notification.
	addEcho(lh.alpha.s, "burst")
	for range 20 {
		lh.gw.upstreamNotification("alpha", "", &rpc.Message{Method: "notifications/tools/list_changed"})
	}
	sessTools.waitFor(t, 2, "session client after a burst")
	listenTools.waitFor(t, 2, "listen client after a burst")

	// list_changed with no change of the effective set: nothing. The next
	// real change then gives exactly one more, so the count proves it.
	for range 3 {
		lh.gw.upstreamNotification("alpha", "", &rpc.Message{Method: "notifications/tools/list_changed"})
		lh.gw.upstreamNotification("alpha", "", &rpc.Message{Method: "notifications/prompts/list_changed"})
	}
	// A snapshot swap that leaves main's tools as they are (a deny filter
	// on a tool alpha does not have; a new endpoint elsewhere).
	lh.swap(t, func(c *metamcpv1.Config) {
		c.Namespaces[0].Members[0].DenyTools = []string{"no-such-tool"}
		c.Endpoints = append(c.Endpoints, &metamcpv1.Endpoint{Name: "extra", Namespace: "betaonly"})
	})
	// A real change by snapshot: alpha's echo is denied.
	lh.swap(t, func(c *metamcpv1.Config) {
		c.Namespaces[0].Members[0].DenyTools = []string{"echo"}
	})
	sessTools.waitFor(t, 3, "session client after a swap that hid alpha__echo")
	sseTools.waitFor(t, 3, "2024-11-05 SSE client after a swap that hid alpha__echo")
	listenTools.waitFor(t, 3, "listen client after a swap that hid alpha__echo")
	if names := toolNamesOf(t, sess); slices.Contains(names, "alpha__echo") {
		t.Errorf("tools after the swap %v still have alpha__echo", names)
	}
	// None of this touched endpoint other (beta only): one change of beta
	// now, and other's client has heard exactly one notification.
	addEcho(lh.beta.s, "betanew")
	otherTools.waitFor(t, 1, "client of endpoint other")
	sessTools.waitFor(t, 4, "session client after beta added a tool")
}

// TestResourceSubscriptions: two sessions subscribe to one URI; the
// upstream is asked once, both get the update, the upstream is told to
// unsubscribe only when the last one goes; a session that ends drops its
// subscription; a 2026-07-28 client subscribes through subscriptions/listen.
func TestResourceSubscriptions(t *testing.T) {
	lh := newLiveHarness(t)
	uri := "fixture://alpha/readme"
	updA, updB, updL := newCounter(), newCounter(), newCounter()
	onUpdate := func(c *counter) *mcp.ClientOptions {
		return &mcp.ClientOptions{ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			if req.Params.URI == uri {
				c.add()
			}
		}}
	}
	a := lh.connectWith(t, "main", keyAlice, "2025-11-25", onUpdate(updA))
	b := lh.connectWith(t, "main", keyBob, "2025-06-18", onUpdate(updB))
	lh.waitStreams(t, "main", 2)
	ctx := testCtx(t)
	res, err := a.ListResources(ctx, nil)
	if err != nil || len(res.Resources) == 0 {
		t.Fatalf("list resources: %v, %v", res, err)
	}
	if caps := a.InitializeResult().Capabilities; caps.Resources == nil || !caps.Resources.Subscribe || caps.Tools == nil || !caps.Tools.ListChanged {
		t.Fatalf("capabilities %+v do not announce resources.subscribe and tools.listChanged", caps)
	}
	for _, cs := range []*mcp.ClientSession{a, b} {
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	if n := lh.alpha.subscribes.Load(); n != 1 {
		t.Errorf("upstream got %d resources/subscribe, want 1", n)
	}
	if err := lh.alpha.s.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	updA.waitFor(t, 1, "first subscriber")
	updB.waitFor(t, 1, "second subscriber")

	if err := a.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if n := lh.alpha.unsubscribe.Load(); n != 0 {
		t.Errorf("upstream got %d resources/unsubscribe while a client is still subscribed", n)
	}
	_ = lh.alpha.s.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri})
	updB.waitFor(t, 2, "remaining subscriber")
	if err := b.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if n := lh.alpha.unsubscribe.Load(); n != 1 {
		t.Errorf("upstream got %d resources/unsubscribe after the last client left, want 1", n)
	}
	if got := updA.get(); got != 1 {
		t.Errorf("unsubscribed client got %d updates, want 1", got)
	}

	// A session that ends drops its subscription upstream.
	c := lh.connectWith(t, "main", keyAlice, "2025-11-25", nil)
	if err := c.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	_ = c.Close()
	waitCount(t, &lh.alpha.unsubscribe, 2, "unsubscribes after a session ended")

	// A URI no upstream serves: a clear error, not a silent success.
	err = a.Subscribe(ctx, &mcp.SubscribeParams{URI: "nowhere://x"})
	if err == nil || !strings.Contains(err.Error(), "nowhere://x") {
		t.Errorf("subscribe to an unknown URI: %v", err)
	}

	// A 2026-07-28 client subscribes through subscriptions/listen.
	l := lh.connectWith(t, "main", keyBob, "", onUpdate(updL))
	if err := l.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
		t.Fatalf("subscribe over subscriptions/listen: %v", err)
	}
	lh.waitListeners(t, 1)
	waitCount(t, &lh.alpha.subscribes, 3, "subscribes after a listen stream")
	_ = lh.alpha.s.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri})
	updL.waitFor(t, 1, "listen stream subscriber")
	if err := l.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	waitCount(t, &lh.alpha.unsubscribe, 3, "unsubscribes after the listen stream closed")
}

func waitCount(t *testing.T, v *atomic.Int32, want int32, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for v.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, v.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInputRequired: a 2026-07-28 client calls tools whose upstream asks
// for sampling (twice) and elicitation; the gateway bridges each request
// into an input_required round, the client's handlers answer, and the
// results come back; nothing stays pending. Two clients at once get their
// own answers.
func TestInputRequired(t *testing.T) {
	lh := newLiveHarness(t)
	client := func(who string) *mcp.ClientSession {
		return lh.connectWith(t, "main", keyBob, "", &mcp.ClientOptions{
			CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) { //nolint:staticcheck // sampling still passes through
				text := req.Params.Messages[0].Content.(*mcp.TextContent).Text
				return &mcp.CreateMessageResult{Role: "assistant", //nolint:staticcheck // as above
					Model: "m", Content: &mcp.TextContent{Text: who + "(" + text + ")"}}, nil
			},
			ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": who}}, nil
			},
		})
	}
	c1, c2 := client("ann"), client("bo")
	var wg sync.WaitGroup
	for _, tc := range []struct {
		cs   *mcp.ClientSession
		who  string
		tool string
		want string
	}{
		{c1, "ann", "alpha__sample", "ann(q1)+ann(q2)"},
		{c2, "bo", "alpha__sample", "bo(q1)+bo(q2)"},
		{c1, "ann", "beta__ask", "accept:ann"},
		{c2, "bo", "beta__ask", "accept:bo"},
	} {
		wg.Go(func() {
			var args any
			if strings.HasSuffix(tc.tool, "sample") {
				args = map[string]any{"prompt": "q"}
			}
			res, err := tc.cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: tc.tool, Arguments: args})
			if err != nil {
				t.Errorf("%s for %s: %v", tc.tool, tc.who, err)
				return
			}
			if got := res.Content[0].(*mcp.TextContent).Text; got != tc.want || res.IsError {
				t.Errorf("%s for %s = %q (isError %v), want %q", tc.tool, tc.who, got, res.IsError, tc.want)
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for lh.gw.pendingBridges() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bridged calls still pending after every call ended", lh.gw.pendingBridges())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInputRequiredRaw drives the bridge by hand: the first POST gets an
// input_required result; a retry with a forged or reused requestState, or
// from another caller, is refused with a clear error; the right retry
// completes the call.
func TestInputRequiredRaw(t *testing.T) {
	lh := newLiveHarness(t)
	post := func(key, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, lh.url("main", "mcp"), strings.NewReader(withMeta(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set(headerProtocolVersion, version20260728)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("decode the response (status %d, %s): %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
		return m
	}
	// A client that declares no elicitation capability is not asked: the
	// call fails with -32021 naming it. With no capability at all the
	// call is not bridged; with another one it is.
	for _, meta := range []string{``, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}`} {
		blind := post(keyBob, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"beta__ask","arguments":{}`+meta+`}}`)
		e, _ := blind["error"].(map[string]any)
		if data, _ := e["data"].(map[string]any); e["code"] != float64(codeMissingClientCapability) || fmt.Sprint(data["requiredCapabilities"]) != "map[elicitation:map[]]" {
			t.Errorf("a client without the elicitation capability (_meta %q) got %v, want -32021 requiring elicitation", meta, blind)
		}
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"beta__ask","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}`
	first := post(keyBob, call)
	res, _ := first["result"].(map[string]any)
	if res["resultType"] != "input_required" {
		t.Fatalf("first answer %v is not input_required", first)
	}
	state, _ := res["requestState"].(string)
	reqs, _ := res["inputRequests"].(map[string]any)
	if len(reqs) != 1 || !strings.HasPrefix(state, requestStatePrefix) {
		t.Fatalf("input_required result %v", res)
	}
	var key string
	for k, v := range reqs {
		key = k
		if m, _ := v.(map[string]any); m["method"] != "elicitation/create" {
			t.Fatalf("input request %v is not the upstream's elicitation", v)
		}
	}
	retry := func(state string) string {
		return `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"beta__ask","arguments":{},"requestState":"` + state +
			`","inputResponses":{"` + key + `":{"action":"accept","content":{"name":"raw"}}}}}`
	}
	for _, tc := range []struct{ key, state, want string }{
		{keyBob, requestStatePrefix + "forged", "retry the tools/call from scratch"},
		{keyAlice, state, "another caller"},
	} {
		got := post(tc.key, retry(tc.state))
		e, _ := got["error"].(map[string]any)
		if msg, _ := e["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("retry with state %q as %s: %v, want an error saying %q", tc.state, tc.key, got, tc.want)
		}
	}
	done := post(keyBob, retry(state))
	res, _ = done["result"].(map[string]any)
	content, _ := res["content"].([]any)
	if len(content) != 1 || content[0].(map[string]any)["text"] != "accept:raw" {
		t.Fatalf("result after the retry: %v", done)
	}
	// The state was used up: a second retry is refused.
	again := post(keyBob, retry(state))
	if e, _ := again["error"].(map[string]any); e == nil {
		t.Errorf("a reused requestState was accepted: %v", again)
	}
	// A requestState that is not the gateway's (an upstream's own
	// input_required round) passes through with the inputResponses.
	theirs := post(keyBob, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"beta__state","arguments":{},"requestState":"upstream-7","inputResponses":{"q":{"action":"decline"}}}}`)
	res, _ = theirs["result"].(map[string]any)
	content, _ = res["content"].([]any)
	if len(content) != 1 || content[0].(map[string]any)["text"] != "state=upstream-7 q=decline" {
		t.Errorf("an upstream's requestState did not pass through: %v", theirs)
	}
	// A bridge forgets its call on its own goroutine, a moment after the
	// answer went out.
	waitFor(t, "no bridged call pending at the end", func() bool { return lh.gw.pendingBridges() == 0 })
}

// TestPerClient: with a per_client upstream every session has its own
// upstream session: list_changed is checked per session and reaches each
// once; resource subscriptions are made, and updates delivered, per
// upstream session, so an update reaches only the sessions it is about.
// addPerClientGamma serves a live upstream "gamma" as a per_client server
// behind endpoint "pc", with the pool following the new config.
func (lh *liveHarness) addPerClientGamma(t *testing.T) *liveUpstream {
	t.Helper()
	gamma := newLiveUpstream(t, "gamma")
	// Cleanups run last-in first-out: close the pool before gamma's server,
	// which waits for the pool's open streams to it.
	t.Cleanup(func() { _ = lh.pool.Close() })
	lh.swap(t, func(c *metamcpv1.Config) {
		c.Servers = append(c.Servers, &metamcpv1.Server{Name: "gamma", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
			Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: gamma.url}}})
		c.Namespaces = append(c.Namespaces, &metamcpv1.Namespace{Name: "pc", Members: []*metamcpv1.NamespaceMember{{Server: "gamma"}}})
		c.Endpoints = append(c.Endpoints, &metamcpv1.Endpoint{Name: "pc", Namespace: "pc"})
	})
	lh.pool.Update(lh.holder.Current().Servers)
	// The swap made "pc" a new endpoint, which ConfigChanged checks after
	// the debounce. A client whose stream opened by then but which has not
	// listed yet has no baseline, so the check tells it every kind changed
	// (on purpose: it may have listed through another replica). Tests
	// counting notifications connect once that check is over.
	lh.waitSettled(t, "pc")
	return gamma
}

// waitSettled waits until no list_changed check of endpoint is pending or
// running.
func (lh *liveHarness) waitSettled(t *testing.T, endpoint string) {
	t.Helper()
	w := &lh.gw.state.lists
	waitFor(t, "the list_changed check of "+endpoint, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return !w.running[endpoint] && w.dirty[endpoint] == 0
	})
}

func TestPerClient(t *testing.T) {
	lh := newLiveHarness(t)
	gamma := lh.addPerClientGamma(t)
	uri := "fixture://gamma/readme"
	type client struct {
		cs                     *mcp.ClientSession
		tools, update, prompts *counter
	}
	var clients []*client
	for _, key := range []string{keyBob, keyBob} {
		cl := &client{tools: newCounter(), update: newCounter(), prompts: newCounter()}
		cl.cs = lh.connectWith(t, "pc", key, "2025-11-25", &mcp.ClientOptions{
			ToolListChangedHandler:   func(context.Context, *mcp.ToolListChangedRequest) { cl.tools.add() },
			ResourceUpdatedHandler:   func(context.Context, *mcp.ResourceUpdatedNotificationRequest) { cl.update.add() },
			PromptListChangedHandler: func(context.Context, *mcp.PromptListChangedRequest) { cl.prompts.add() },
		})
		clients = append(clients, cl)
	}
	lh.waitStreams(t, "pc", 2)
	ctx := testCtx(t)
	for _, cl := range clients {
		toolNamesOf(t, cl.cs)
		if err := cl.cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	if n := gamma.subscribes.Load(); n != 2 {
		t.Errorf("per_client upstream got %d resources/subscribe, want one per session (2)", n)
	}
	addEcho(gamma.s, "fresh")
	for i, cl := range clients {
		cl.tools.waitFor(t, 1, "per_client session "+string(rune('A'+i)))
	}
	if err := gamma.s.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	for _, cl := range clients {
		cl.update.waitFor(t, 1, "per_client subscriber")
	}
	// A second change proves the first gave one notification each.
	addEcho(gamma.s, "fresher")
	for _, cl := range clients {
		cl.tools.waitFor(t, 2, "per_client session after a second change")
	}
	// The clients listed tools only; their other lists were taken then, so
	// a swap that changes none of them announces nothing, and a real
	// prompt change exactly one prompts/list_changed.
	for _, cl := range clients {
		waitBaselines(t, lh.gw, "pc", cl.cs.ID(), 4)
	}
	lh.swap(t, func(c *metamcpv1.Config) {
		c.Namespaces[len(c.Namespaces)-1].Members[0].DenyTools = []string{"no-such-tool"}
	})
	gamma.s.AddPrompt(&mcp.Prompt{Name: "late"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	for _, cl := range clients {
		cl.prompts.waitFor(t, 1, "per_client session after a prompt was added")
	}
	addEcho(gamma.s, "freshest")
	for _, cl := range clients {
		cl.tools.waitFor(t, 3, "per_client session after a third tool")
		if n := cl.prompts.get(); n != 1 {
			t.Errorf("%d prompts/list_changed, want 1", n)
		}
	}
}

// waitBaselines waits until scope has n baselines for endpoint.
func waitBaselines(t *testing.T, g *Gateway, endpoint, scope string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := &g.state.lists
		w.mu.Lock()
		got := 0
		for k := range w.baselines.Keys() {
			if k.Endpoint == endpoint && k.Scope == scope {
				got++
			}
		}
		w.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d baselines of %s for %q, want %d", got, endpoint, scope, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSubscriptionsAcrossReplicas: a session subscribes through one
// replica; its unsubscribe, and later its end, reach another replica,
// which tells the first through the session bus: the upstream hears
// resources/unsubscribe each time.
func TestSubscriptionsAcrossReplicas(t *testing.T) {
	lh := newLiveHarness(t)
	other := New(Options{Config: lh.holder, Pool: realPool(t, nil, upstream.PoolOptions{}, lh.holder), Logger: testLogger(t), Bus: lh.gw.bus, Sessions: lh.gw.sessions, Version: "test"})
	srv := httptest.NewServer(other.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(other.Close)
	urlA, urlB := lh.url("main", "mcp"), srv.URL+"/metamcp/main/mcp"

	post := func(url, sid, body string) (string, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		if sid != "" {
			req.Header.Set(headerSessionID, sid)
			req.Header.Set(headerProtocolVersion, version20251125)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("POST %s: status %d: %v", body, resp.StatusCode, err)
		}
		if m["error"] != nil {
			t.Fatalf("POST %s: %v", body, m["error"])
		}
		return resp.Header.Get(headerSessionID), m
	}
	sid, _ := post(urlA, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
	sub := `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"fixture://alpha/readme"}}`
	post(urlA, sid, sub)
	post(urlB, sid, `{"jsonrpc":"2.0","id":3,"method":"resources/unsubscribe","params":{"uri":"fixture://alpha/readme"}}`)
	waitCount(t, &lh.alpha.unsubscribe, 1, "upstream unsubscribes after an unsubscribe through the other replica")

	post(urlA, sid, sub)
	deleteMCP(t, urlB, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid})
	waitCount(t, &lh.alpha.unsubscribe, 2, "upstream unsubscribes after the session ended through the other replica")
	if n := lh.alpha.subscribes.Load(); n != 2 {
		t.Errorf("upstream subscribes = %d, want 2", n)
	}
}

// TestListChangedWithoutLists: a client that never lists still hears of a
// real change only: the gateway took the endpoint's baselines when its
// stream opened.
func TestListChangedWithoutLists(t *testing.T) {
	lh := newLiveHarness(t)
	tools, prompts := newCounter(), newCounter()
	lh.connectWith(t, "main", keyAlice, "2025-11-25", &mcp.ClientOptions{
		ToolListChangedHandler:   func(context.Context, *mcp.ToolListChangedRequest) { tools.add() },
		PromptListChangedHandler: func(context.Context, *mcp.PromptListChangedRequest) { prompts.add() },
	})
	lh.waitStreams(t, "main", 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := &lh.gw.state.lists
		w.mu.Lock()
		n := 0
		for k := range w.baselines.Keys() {
			if k.Endpoint == "main" && k.Scope == "" {
				n++
			}
		}
		w.mu.Unlock()
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d baselines of endpoint main after its stream opened, want 4", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Changes of nothing the client could see: no notification.
	lh.swap(t, func(c *metamcpv1.Config) { c.Namespaces[0].Members[1].DenyTools = []string{"no-such-tool"} })
	lh.gw.upstreamNotification("beta", "", &rpc.Message{Method: "notifications/prompts/list_changed"})
	// Real changes, one per kind: one notification each proves the above
	// gave none.
	addEcho(lh.beta.s, "late")
	tools.waitFor(t, 1, "tools after beta added one")
	lh.beta.s.AddPrompt(&mcp.Prompt{Name: "late"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	prompts.waitFor(t, 1, "prompts after beta added one")
	// Everything sent before the next tools notification has arrived by
	// then (one stream, in order): still one prompts notification.
	addEcho(lh.beta.s, "later")
	tools.waitFor(t, 2, "tools after beta added another")
	if n := prompts.get(); n != 1 {
		t.Errorf("%d prompts notifications, want 1", n)
	}
}

// TestBridgedCallClientLeaves: a stateless client that could be asked for
// input goes away while its bridged call runs: the upstream call is
// cancelled and nothing stays pending.
func TestBridgedCallClientLeaves(t *testing.T) {
	lh := newLiveHarness(t)
	started := make(chan struct{}, 1)
	var cancelled atomic.Int32
	mcp.AddTool(lh.alpha.s, &mcp.Tool{Name: "wait", Description: "Waits until the call is cancelled"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		started <- struct{}{}
		<-ctx.Done()
		cancelled.Add(1)
		return nil, nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__wait","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, lh.url("main", "mcp"), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set(headerProtocolVersion, version20260728)
	req.Header.Set("Authorization", "Bearer "+keyBob)
	go func() {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Error("the upstream tool never started")
		}
		cancel()
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the request answered %d, want it cancelled", resp.StatusCode)
	}
	waitFor(t, "the upstream call cancelled", func() bool { return cancelled.Load() == 1 })
	waitFor(t, "no bridged call pending", func() bool { return lh.gw.pendingBridges() == 0 })
}
