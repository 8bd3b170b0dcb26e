package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/internal/testharness"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestDataPlaneServesMCP runs a control plane, a data plane process and the
// demo server as a stdio upstream, configured with mmctl, and uses it with a
// go-sdk client at a stateless and a session-based protocol revision: tools
// are listed prefixed and called, the resource read and the prompt got; a
// config change made with mmctl (a tool renamed, a tool disabled, a server
// added) shows in the next tools/list of the same client session, without
// restarting anything. Stopping the data plane leaves no upstream process.
func TestDataPlaneServesMCP(t *testing.T) {
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-1", "--allowed-hosts", "mcp.internal", "--allowed-origins", "https://app.example.com")

	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "namespace", "dev", "--server", "demo")
	cp.ok(t, "create", "endpoint", "dev", "--namespace", "dev")
	r := cp.ok(t, "create", "apikey", "alice", "--endpoint", "dev", "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || !strings.HasPrefix(created.Key, "mm_") {
		t.Fatalf("create apikey: no key in the JSON output (%v):\n%s", err, r)
	}
	waitApplied(t, cp, cp.revisionNum(t), dp)
	url := "http://" + dp.addr + "/metamcp/dev/mcp"

	// Without a key: 403 saying so, and nothing that sends an OAuth client
	// into a sign-in the endpoint does not offer.
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("WWW-Authenticate") != "" || !strings.Contains(string(body), "needs an API key") {
		t.Errorf("no API key: %d %q %s, want 403 saying an API key is needed, without WWW-Authenticate", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}

	// DNS rebinding protection: Host and Origin allow lists from the flags.
	for _, tc := range []struct {
		host, origin string
		want         string // what the 403 says
	}{
		{"evil.example", "", "is not allowed"},
		{"mcp.internal", "", "needs an API key"}, // allowed; then the key is missing
		{dp.addr, "https://evil.example", "is not allowed"},
		{dp.addr, "https://app.example.com", "needs an API key"},
	} {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tc.host
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), tc.want) {
			t.Errorf("Host %s Origin %q: HTTP %d %s, want 403 saying %q", tc.host, tc.origin, resp.StatusCode, body, tc.want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sessions := map[string]*mcp.ClientSession{}
	for _, version := range []string{"", "2025-06-18"} { // "": the client's newest (stateless)
		client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "v0"}, nil)
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint:   url,
			HTTPClient: &http.Client{Transport: bearer{key: created.Key}},
		}, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("connect at %q: %v\ndata plane logs:\n%s", version, err, dp.logs)
		}
		defer cs.Close()
		sessions[version] = cs
	}

	for version, cs := range sessions {
		if got := toolNames(ctx, t, cs); !slices.Equal(got, []string{"demo__add", "demo__echo", "demo__now", "demo__random_number"}) {
			t.Errorf("%q: tools = %v", version, got)
		}
		if got := callText(ctx, t, cs, "demo__echo", map[string]any{"text": "through the gateway"}); got != "through the gateway" {
			t.Errorf("%q: demo__echo = %q", version, got)
		}
		read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://readme"})
		if err != nil || len(read.Contents) == 0 || !strings.Contains(read.Contents[0].Text, "demo server") {
			t.Errorf("%q: read demo://readme: %v %+v", version, err, read)
		}
		p, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "demo__summarize", Arguments: map[string]string{"text": "abc"}})
		if err != nil || len(p.Messages) == 0 {
			t.Errorf("%q: get prompt demo__summarize: %v %+v", version, err, p)
		}
	}

	// Rename echo, disable random_number, add a second server: the next
	// tools/list of the same sessions shows it.
	cp.ok(t, "create", "server", "demo2", "--command", metamcpBin, "--arg", "demo-server")
	cp.okIn(t, `kind: Namespace
name: dev
members:
  - server: demo
    toolOverrides:
      echo: {name: say}
      random_number: {disabled: true}
  - server: demo2
    prefix: d2
    allowTools: ["add"]
`, "apply", "-f", "-")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	for version, cs := range sessions {
		want := []string{"d2__add", "demo__add", "demo__now", "demo__say"}
		if got := toolNames(ctx, t, cs); !slices.Equal(got, want) {
			t.Errorf("%q: tools after the change = %v, want %v", version, got, want)
		}
		if got := callText(ctx, t, cs, "demo__say", map[string]any{"text": "renamed"}); got != "renamed" {
			t.Errorf("%q: demo__say = %q", version, got)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__random_number"})
		if err == nil && !res.IsError {
			t.Errorf("%q: a call to the disabled demo__random_number succeeded", version)
		}
	}
	// The data plane reports its upstreams' health; mmctl shows it.
	eventually(t, "dp-1 reports the demo upstreams healthy", func() (bool, string) {
		reg, current := cp.dataPlanes(t)
		healthy := 0
		for _, u := range reg["dp-1"].GetUpstreams() {
			if (u.GetServer() == "demo" || u.GetServer() == "demo2") && u.GetState() == metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY && u.GetProcesses() > 0 {
				healthy++
			}
		}
		return healthy == 2, fmt.Sprintf("%s upstreams: %v", describeDataPlanes(reg, current), reg["dp-1"].GetUpstreams())
	})
	for _, cs := range sessions {
		cs.Close()
	}

	dp.stop(t)
	if left := testharness.Leftovers(10*time.Second, metamcpBin, "demo-server"); len(left) > 0 {
		t.Errorf("demo-server processes left after the data plane stopped: %v", left)
	}
}

// bearer adds an API key to every request.
type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

func toolNames(ctx context.Context, t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func callText(ctx context.Context, t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) string {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	if res.IsError || len(res.Content) == 0 {
		t.Fatalf("call %s: error result %+v", name, res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("call %s: content %T, want text", name, res.Content[0])
	}
	return tc.Text
}

// TestGatewayUpstreamsAndRevisions puts six upstreams behind one endpoint of
// a data plane process: the demo server and a Go fixture on stdio, a fixture
// over Streamable HTTP, a fixture over legacy SSE,
// @modelcontextprotocol/server-everything through npx, and a server that
// never answers. A go-sdk client at each protocol revision (2026-07-28
// stateless, 2025-11-25, 2025-06-18 and 2025-03-26 sessions, 2024-11-05 over
// SSE) lists and calls prefixed tools, reads resources, gets a prompt and
// completes its argument, while the silent upstream is left out of every
// list. Then the stdio fixture crashes mid-session: the client gets an error
// naming it, and a later call in the same session reaches a new process.
func TestGatewayUpstreamsAndRevisions(t *testing.T) {
	fx := fixture.Build(t)
	webURL := fixture.Start(t, fx, "http", "web")
	legacyURL := fixture.Start(t, fx, "sse", "legacy")
	silent := silentServer(t)

	cp := startControlPlane(t)
	// Exactly the stdio servers this test configures.
	dp := startDataPlane(t, cp, "dp-1", "--stdio-allow", metamcpBin+" demo-server",
		"--stdio-allow", fx+" --transport stdio --name fx --tools *",
		"--stdio-allow", "npx -y @modelcontextprotocol/server-everything")
	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "server", "fx", "--command", fx, "--arg", "--transport", "--arg", "stdio", "--arg", "--name", "--arg", "fx", "--arg", "--tools", "--arg", "echo,crash,whoami")
	cp.ok(t, "create", "server", "web", "--url", webURL)
	cp.ok(t, "create", "server", "legacy", "--url", legacyURL, "--transport", "sse")
	// npx may need a while on its first start.
	cp.ok(t, "create", "server", "everything", "--stdio", "npx -y @modelcontextprotocol/server-everything", "--list-timeout", "30s", "--init-timeout", "30s")
	cp.ok(t, "create", "server", "silent", "--url", "http://"+silent+"/mcp", "--init-timeout", "2s", "--list-timeout", "2s")
	cp.ok(t, "create", "namespace", "dev", "--server", "demo", "--server", "fx", "--server", "web", "--server", "legacy", "--server", "everything:ev", "--server", "silent")
	cp.ok(t, "create", "endpoint", "dev", "--namespace", "dev")
	r := cp.ok(t, "create", "apikey", "alice", "--endpoint", "dev", "-o", "json")
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Key == "" {
		t.Fatalf("create apikey: %v\n%s", err, r)
	}
	waitApplied(t, cp, cp.revisionNum(t), dp)
	base := "http://" + dp.addr + "/metamcp/dev"
	httpClient := &http.Client{Transport: bearer{key: created.Key}}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type rev struct {
		name      string
		transport mcp.Transport
		version   string
	}
	revisions := []rev{
		{"2026-07-28", &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: httpClient}, ""},
		{"2025-11-25", &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: httpClient}, "2025-11-25"},
		{"2025-06-18", &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: httpClient}, "2025-06-18"},
		{"2025-03-26", &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: httpClient}, "2025-03-26"},
		{"2024-11-05", &mcp.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: httpClient}, "2024-11-05"},
	}
	wantTools := []string{"demo__echo", "fx__whoami", "web__echo", "legacy__echo", "ev__echo"}
	var first *mcp.ClientSession
	for i, rv := range revisions {
		client := mcp.NewClient(&mcp.Implementation{Name: "e2e-" + rv.name, Version: "v0"}, nil)
		cs, err := client.Connect(ctx, rv.transport, &mcp.ClientSessionOptions{ProtocolVersion: rv.version})
		if err != nil {
			t.Fatalf("%s: connect: %v\ndata plane logs:\n%s", rv.name, err, dp.logs)
		}
		defer cs.Close()
		if i == 0 {
			first = cs
		}
		if got := cs.InitializeResult().ProtocolVersion; got != rv.name {
			t.Errorf("%s: negotiated %s", rv.name, got)
		}
		// npx's first start may outlast a list: wait (bounded) for its tools.
		var names []string
		eventuallyWithin(t, 90*time.Second, rv.name+": all tools listed", func() (bool, string) {
			names = toolNames(ctx, t, cs)
			return containsAll(names, wantTools), fmt.Sprintf("tools %v lack some of %v\ndata plane logs:\n%s", names, wantTools, testharness.Tail(dp.logs.String(), 40))
		})
		for _, n := range names {
			if strings.HasPrefix(n, "silent__") {
				t.Errorf("%s: the silent server has a tool %s", rv.name, n)
			}
		}
		for _, tool := range []string{"demo__echo", "fx__echo", "web__echo", "legacy__echo"} {
			if got := callText(ctx, t, cs, tool, map[string]any{"text": rv.name}); got != rv.name {
				t.Errorf("%s: %s = %q", rv.name, tool, got)
			}
		}
		if got := callText(ctx, t, cs, "ev__echo", map[string]any{"message": "hi"}); !strings.Contains(got, "hi") {
			t.Errorf("%s: ev__echo = %q", rv.name, got)
		}
		for uri, want := range map[string]string{"fixture://web/readme": "This is web.", "fixture://legacy/items/7": "item 7", "demo://readme": "demo server"} {
			res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
			if err != nil || len(res.Contents) == 0 || !strings.Contains(res.Contents[0].Text, want) {
				t.Errorf("%s: read %s: %v %+v", rv.name, uri, err, res)
			}
		}
		p, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "legacy__greet", Arguments: map[string]string{"name": "Ada"}})
		if err != nil || len(p.Messages) == 0 || p.Messages[0].Content.(*mcp.TextContent).Text != "Hello, Ada!" {
			t.Errorf("%s: get prompt legacy__greet: %v %+v", rv.name, err, p)
		}
		c, err := cs.Complete(ctx, &mcp.CompleteParams{
			Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "web__greet"},
			Argument: mcp.CompleteParamsArgument{Name: "name", Value: "a"},
		})
		if err != nil || !slices.Equal(c.Completion.Values, []string{"alice"}) {
			t.Errorf("%s: complete web__greet name=a: %v %+v", rv.name, err, c)
		}
	}

	// The stdio fixture dies mid-session: an error naming it, then a new
	// process serves the same client session.
	before := callText(ctx, t, first, "fx__whoami", nil)
	res, err := first.CallTool(ctx, &mcp.CallToolParams{Name: "fx__crash"})
	switch {
	case err != nil:
		if !strings.Contains(err.Error(), `"fx"`) {
			t.Errorf("fx__crash error does not name the server: %v", err)
		}
	case !res.IsError:
		t.Errorf("fx__crash succeeded: %+v", res)
	}
	eventually(t, "fx__whoami answered by a new process", func() (bool, string) {
		res, err := first.CallTool(ctx, &mcp.CallToolParams{Name: "fx__whoami"})
		if err != nil || res.IsError || len(res.Content) == 0 {
			return false, fmt.Sprintf("%v %+v", err, res)
		}
		got := res.Content[0].(*mcp.TextContent).Text
		return strings.HasPrefix(got, "fx ") && got != before, "still " + got
	})

	// mmctl restart server: the data plane replaces fx's process, and the
	// same client session goes on with the new one.
	restarted := callText(ctx, t, first, "fx__whoami", nil)
	r = cp.ok(t, "restart", "server", "fx")
	if !strings.Contains(r.stdout, "server/fx restarted") {
		t.Errorf("mmctl restart server fx: %s", r)
	}
	eventually(t, "fx__whoami answered by the restarted process", func() (bool, string) {
		got := callText(ctx, t, first, "fx__whoami", nil)
		return strings.HasPrefix(got, "fx ") && got != restarted, "still " + got
	})

	// Stopping the data plane with five client sessions open (one an SSE
	// stream) is prompt and leaves no stdio upstream behind. (npx's node is
	// not checked: other tests on this machine may run it too.)
	dp.stop(t)
	if left := testharness.Leftovers(10*time.Second, metamcpBin, "demo-server"); len(left) > 0 {
		t.Errorf("demo-server processes left after the data plane stopped: %v", left)
	}
	if left := testharness.Leftovers(10*time.Second, fx, "--transport", "stdio", "--name", "fx", "--tools", "echo,crash,whoami"); len(left) > 0 {
		t.Errorf("fixture processes left after the data plane stopped: %v", left)
	}
}

// silentServer accepts connections and never answers; it stops at cleanup.
func silentServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
