package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

func toolNames(t testing.TB, cs *mcp.ClientSession) []string {
	t.Helper()
	var names []string
	for tool, err := range cs.Tools(testCtx(t), nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func callText(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	if len(res.Content) != 1 {
		t.Fatalf("tools/call %s: %d content items, want 1", name, len(res.Content))
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("tools/call %s: content %T, want text", name, res.Content[0])
	}
	return tc.Text, res.IsError
}

// TestClientsAtEveryRevision runs a go-sdk client at each protocol revision
// against the gateway in front of three real go-sdk servers.
func TestClientsAtEveryRevision(t *testing.T) {
	cfg := testConfig(
		&metamcpv1.NamespaceMember{Server: "alpha"},
		&metamcpv1.NamespaceMember{Server: "beta", Prefix: proto.String("b")},
		&metamcpv1.NamespaceMember{Server: "gamma", DenyTools: []string{"fail", "whoami", "add"}},
	)
	h := newHarness(t, cfg, nil, nil)
	tests := []struct {
		name    string
		version string // "" = default client
		want    string // negotiated
	}{
		{"2026-07-28 default client", "", "2026-07-28"},
		{"2025-11-25", "2025-11-25", "2025-11-25"},
		{"2025-06-18", "2025-06-18", "2025-06-18"},
		{"2025-03-26", "2025-03-26", "2025-03-26"},
		{"2024-11-05 SSE", version20241105, "2024-11-05"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := h.connect(t, "main", keyAlice, tc.version)
			ctx := testCtx(t)
			ir := cs.InitializeResult()
			if ir.ProtocolVersion != tc.want {
				t.Errorf("negotiated %q, want %q", ir.ProtocolVersion, tc.want)
			}
			if ir.ServerInfo == nil || ir.ServerInfo.Name != "metamcp" {
				t.Errorf("serverInfo = %+v, want metamcp", ir.ServerInfo)
			}
			if ir.Capabilities == nil || ir.Capabilities.Tools == nil || ir.Capabilities.Completions == nil {
				t.Errorf("capabilities = %+v, want tools and completions", ir.Capabilities)
			}
			if !strings.Contains(ir.Instructions, "Use beta wisely.") {
				t.Errorf("instructions %q do not merge the upstreams'", ir.Instructions)
			}

			want := []string{"alpha__add", "alpha__echo", "alpha__fail", "alpha__whoami", "b__add", "b__echo", "b__fail", "b__whoami", "gamma__echo"}
			if got := toolNames(t, cs); !slices.Equal(got, want) {
				t.Errorf("tools = %v, want %v", got, want)
			}
			if got, _ := callText(t, cs, "b__echo", map[string]any{"text": "hi"}); got != "beta:hi" {
				t.Errorf("b__echo = %q, want beta:hi", got)
			}
			if got, _ := callText(t, cs, "alpha__add", map[string]any{"a": 2, "b": 3}); got != "5" {
				t.Errorf("alpha__add = %q, want 5", got)
			}
			if got, isErr := callText(t, cs, "gamma__echo", map[string]any{"text": "x"}); got != "gamma:x" || isErr {
				t.Errorf("gamma__echo = %q (isError %v)", got, isErr)
			}
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "gamma__fail"}); err == nil || !strings.Contains(err.Error(), "unknown tool") {
				t.Errorf("denied gamma__fail: err = %v, want unknown tool", err)
			}

			// Resources: listed from all, read routed by URI and by template.
			var uris []string
			for r, err := range cs.Resources(ctx, nil) {
				if err != nil {
					t.Fatalf("resources/list: %v", err)
				}
				uris = append(uris, r.URI)
			}
			slices.Sort(uris)
			if want := []string{"fixture://alpha/readme", "fixture://beta/readme", "fixture://gamma/readme"}; !slices.Equal(uris, want) {
				t.Errorf("resources = %v, want %v", uris, want)
			}
			var tmpls []string
			for r, err := range cs.ResourceTemplates(ctx, nil) {
				if err != nil {
					t.Fatalf("resources/templates/list: %v", err)
				}
				tmpls = append(tmpls, r.URITemplate)
			}
			if len(tmpls) != 3 {
				t.Errorf("templates = %v, want 3", tmpls)
			}
			rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "fixture://beta/readme"})
			if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "beta readme" {
				t.Errorf("read beta readme: %+v, %v", rr, err)
			}
			rr, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "fixture://gamma/items/42"})
			if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "gamma item fixture://gamma/items/42" {
				t.Errorf("read gamma item: %+v, %v", rr, err)
			}

			// Prompts: prefixed, routed back.
			var prompts []string
			for p, err := range cs.Prompts(ctx, nil) {
				if err != nil {
					t.Fatalf("prompts/list: %v", err)
				}
				prompts = append(prompts, p.Name)
			}
			slices.Sort(prompts)
			if want := []string{"alpha__greet", "b__greet", "gamma__greet"}; !slices.Equal(prompts, want) {
				t.Errorf("prompts = %v, want %v", prompts, want)
			}
			gp, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "b__greet", Arguments: map[string]string{"who": "ann"}})
			if err != nil || len(gp.Messages) != 1 || gp.Messages[0].Content.(*mcp.TextContent).Text != "hello ann from beta" {
				t.Errorf("get b__greet: %+v, %v", gp, err)
			}

			// Completion by prompt reference and by resource template.
			cr, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "b__greet"}, Argument: mcp.CompleteParamsArgument{Name: "who", Value: "an"}})
			if err != nil || len(cr.Completion.Values) != 1 || cr.Completion.Values[0] != "beta:greet:an-done" {
				t.Errorf("complete b__greet: %+v, %v", cr, err)
			}
			cr, err = cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/resource", URI: "fixture://gamma/items/{id}"}, Argument: mcp.CompleteParamsArgument{Name: "id", Value: "4"}})
			if err != nil || len(cr.Completion.Values) != 1 || cr.Completion.Values[0] != "gamma:fixture://gamma/items/{id}:4-done" {
				t.Errorf("complete gamma template: %+v, %v", cr, err)
			}
			if err := cs.Ping(ctx, nil); err != nil && tc.want != "2026-07-28" {
				t.Errorf("ping: %v", err)
			}
		})
	}
}

func TestOverridesAndFilters(t *testing.T) {
	ro := true
	cfg := testConfig(
		&metamcpv1.NamespaceMember{Server: "alpha", AllowTools: []string{"e*", "a?d", "fail"}, DenyTools: []string{"fail"}},
		&metamcpv1.NamespaceMember{Server: "beta", Prefix: proto.String(""), ToolOverrides: map[string]*metamcpv1.ToolOverride{
			"echo":   {Name: "say", Title: "Say", Description: "Says it", Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: &ro}},
			"whoami": {Disabled: true},
		}},
	)
	h := newHarness(t, cfg, nil, nil)
	cs := h.connect(t, "main", keyAlice, "2025-11-25")
	ctx := testCtx(t)
	var tools []*mcp.Tool
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		tools = append(tools, tool)
	}
	var names []string
	for _, tool := range tools {
		names = append(names, tool.Name)
		if tool.Name == "say" {
			if tool.Title != "Say" || tool.Description != "Says it" || tool.Annotations == nil || !tool.Annotations.ReadOnlyHint {
				t.Errorf("overridden tool = %+v (annotations %+v)", tool, tool.Annotations)
			}
			if tool.InputSchema == nil {
				t.Error("override lost the input schema")
			}
		}
	}
	slices.Sort(names)
	if want := []string{"add", "alpha__add", "alpha__echo", "fail", "say"}; !slices.Equal(names, want) {
		t.Errorf("tools = %v, want %v", names, want)
	}
	if got, _ := callText(t, cs, "say", map[string]any{"text": "yo"}); got != "beta:yo" {
		t.Errorf("say = %q", got)
	}
	for _, name := range []string{"echo", "whoami", "alpha__fail", "alpha__whoami", "nosuch__tool"} {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"text": "x"}})
		if err == nil || !strings.Contains(err.Error(), "unknown tool") {
			t.Errorf("call %s: err = %v, want unknown tool", name, err)
		}
	}
	if got, isErr := callText(t, cs, "fail", nil); !isErr || got != "beta failed on purpose" {
		t.Errorf("fail = %q isError %v", got, isErr)
	}
}

func TestSlowUpstreamLeftOut(t *testing.T) {
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "slow"}, &metamcpv1.NamespaceMember{Server: "alpha"})
	h := newHarness(t, cfg, nil, nil)
	for _, version := range []string{"", "2025-11-25"} {
		cs := h.connect(t, "main", keyAlice, version)
		start := time.Now()
		got := toolNames(t, cs)
		if want := []string{"alpha__add", "alpha__echo", "alpha__fail", "alpha__whoami"}; !slices.Equal(got, want) {
			t.Errorf("%q: tools = %v, want %v", version, got, want)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("%q: tools/list took %v: the slow upstream's 300ms list timeout was not applied (the default is 1m)", version, d)
		}
	}
}

func TestFailingUpstreamNamed(t *testing.T) {
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "alpha"}, &metamcpv1.NamespaceMember{Server: "down"}, &metamcpv1.NamespaceMember{Server: "slow"})
	h := newHarness(t, cfg, nil, nil)
	cs := h.connect(t, "main", keyAlice, "2025-11-25")
	ctx := testCtx(t)
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "down__echo", Arguments: map[string]any{"text": "x"}})
	if err == nil || !strings.Contains(err.Error(), `"down"`) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("call to a dead upstream: err = %v, want an error naming \"down\"", err)
	}
	// A call that outlives the server's call timeout (300ms) names it.
	start := time.Now()
	_, err = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "slow__greet", Arguments: map[string]string{"who": "x"}})
	if err == nil || !strings.Contains(err.Error(), `upstream "slow" did not answer in time (300ms)`) {
		t.Errorf("call to a stalled upstream: %v, want a timeout naming it", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the 300ms call timeout took %v (the default is 1m)", d)
	}
	// The dead and the slow upstream are left out of the list.
	if got := toolNames(t, cs); len(got) != 4 {
		t.Errorf("tools with a dead and a slow upstream = %v, want alpha's 4", got)
	}
	// When no upstream answers, the list is an error naming them, not empty.
	h.cfg.set(t, testConfig(&metamcpv1.NamespaceMember{Server: "down"}, &metamcpv1.NamespaceMember{Server: "slow"}))
	_, err = cs.ListTools(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), `"down"`) || !strings.Contains(err.Error(), `"slow"`) {
		t.Errorf("tools/list with no upstream answering: %v, want an error naming both", err)
	}
	_, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "fixture://nowhere/x"})
	if err == nil {
		t.Error("read of an unknown resource succeeded")
	}
}

func TestPaginationAcrossUpstreams(t *testing.T) {
	servers := defaultServers(t)
	servers["alpha"] = fixtureServer("alpha", &mcp.ServerOptions{PageSize: 1})
	servers["beta"] = fixtureServer("beta", &mcp.ServerOptions{PageSize: 3})
	h := newHarness(t, testConfig(), servers, nil)
	for _, version := range []string{"", "2025-06-18"} {
		cs := h.connect(t, "main", keyAlice, version)
		// One raw page first: it must carry a cursor.
		res, err := cs.ListTools(testCtx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.NextCursor == "" || len(res.Tools) != 1+3 {
			t.Errorf("%q: first page has %d tools and cursor %q, want 4 and a cursor", version, len(res.Tools), res.NextCursor)
		}
		got := toolNames(t, cs)
		want := []string{"alpha__add", "alpha__echo", "alpha__fail", "alpha__whoami", "beta__add", "beta__echo", "beta__fail", "beta__whoami"}
		if !slices.Equal(got, want) {
			t.Errorf("%q: all pages = %v, want %v", version, got, want)
		}
	}
}

func TestConfigChangeAppliesToNextRequest(t *testing.T) {
	h := newHarness(t, testConfig(&metamcpv1.NamespaceMember{Server: "alpha"}), nil, nil)
	cs := h.connect(t, "main", keyAlice, "2025-11-25")
	stateless := h.connect(t, "main", keyAlice, "")
	if got := toolNames(t, cs); len(got) != 4 {
		t.Fatalf("tools = %v", got)
	}
	h.cfg.set(t, testConfig(
		&metamcpv1.NamespaceMember{Server: "alpha", ToolOverrides: map[string]*metamcpv1.ToolOverride{"echo": {Name: "shout"}, "fail": {Disabled: true}}},
		&metamcpv1.NamespaceMember{Server: "gamma", AllowTools: []string{"whoami"}},
	))
	want := []string{"alpha__add", "alpha__shout", "alpha__whoami", "gamma__whoami"}
	for _, c := range []*mcp.ClientSession{cs, stateless} {
		if got := toolNames(t, c); !slices.Equal(got, want) {
			t.Errorf("after the change: tools = %v, want %v", got, want)
		}
		if got, _ := callText(t, c, "alpha__shout", map[string]any{"text": "a"}); got != "alpha:a" {
			t.Errorf("alpha__shout = %q", got)
		}
		if got, _ := callText(t, c, "gamma__whoami", nil); got != "gamma" {
			t.Errorf("gamma__whoami = %q", got)
		}
	}
}

func TestCallRecords(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	begin := time.Now()
	cs := h.connect(t, "main", keyBob, "2025-11-25")
	callText(t, cs, "alpha__echo", map[string]any{"text": "x"})
	callText(t, cs, "beta__fail", nil)
	_, _ = cs.ReadResource(testCtx(t), &mcp.ReadResourceParams{URI: "fixture://alpha/readme"})
	_, _ = cs.GetPrompt(testCtx(t), &mcp.GetPromptParams{Name: "alpha__greet", Arguments: map[string]string{"who": "x"}})
	_, _ = cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "nope"})
	_, _ = cs.ListTools(testCtx(t), nil)
	want := []struct {
		method, target, server string
		outcome                metamcpv1.CallOutcome
	}{
		{"initialize", "", "", metamcpv1.CallOutcome_CALL_OUTCOME_OK},
		{"tools/call", "alpha__echo", "alpha", metamcpv1.CallOutcome_CALL_OUTCOME_OK},
		{"tools/call", "beta__fail", "beta", metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR},
		{"resources/read", "fixture://alpha/readme", "alpha", metamcpv1.CallOutcome_CALL_OUTCOME_OK},
		{"prompts/get", "alpha__greet", "alpha", metamcpv1.CallOutcome_CALL_OUTCOME_OK},
		{"tools/call", "nope", "", metamcpv1.CallOutcome_CALL_OUTCOME_ERROR},
		{"tools/list", "", "", metamcpv1.CallOutcome_CALL_OUTCOME_OK},
	}
	session := ""
	for _, w := range want {
		select {
		case r := <-h.calls:
			// The record's time is when the call began; its duration, how
			// long it took: both inside the test's own span.
			if at, d := r.GetTime().AsTime(), r.GetDuration().AsDuration(); at.Before(begin.Truncate(time.Microsecond)) || at.After(time.Now()) || d <= 0 || d > time.Since(begin) {
				t.Errorf("record %s %s: time %v, duration %v; the test began at %v", r.GetMethod(), r.GetTarget(), at, d, begin)
			}
			if r.GetMethod() != w.method || r.GetTarget() != w.target || r.GetServer() != w.server || r.GetOutcome() != w.outcome ||
				r.GetEndpoint() != "main" || r.GetPrincipal() != "bob" || r.GetPrincipalKind() != "apikey" || r.GetClientIp() != "127.0.0.1" ||
				r.GetRequestBytes() == 0 || r.GetTime() == nil || r.GetClientName() != "gateway-test" || r.GetProtocolVersion() != "2025-11-25" {
				t.Errorf("record = %v, want %+v", r, w)
			}
			if session == "" {
				session = r.GetSessionId()
			}
			if r.GetSessionId() == "" || r.GetSessionId() != session || len(session) > 32 {
				t.Errorf("record %s: session %q, want the session's own short id %q on every record", r.GetMethod(), r.GetSessionId(), session)
			}
			if w.outcome == metamcpv1.CallOutcome_CALL_OUTCOME_ERROR && (r.GetErrorCode() != codeInvalidParams || r.GetError() == "") {
				t.Errorf("record %s: error %d %q, want the JSON-RPC error", r.GetTarget(), r.GetErrorCode(), r.GetError())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no call record for %+v", w)
		}
	}
}

// nextRecord returns the next record of method, skipping others.
func nextRecord(t *testing.T, h *harness, method string) *metamcpv1.CallRecord {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-h.calls:
			if r.GetMethod() == method {
				return r
			}
		case <-deadline:
			t.Fatalf("no %s record", method)
			return nil
		}
	}
}

func TestCallRecordRefusals(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	url := h.srvURL + "/metamcp/main/mcp"
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	// An endpoint of API keys refuses a missing or bad key with 403 (see
	// authenticate); the record says unauthorized all the same.
	if code, _, _ := post(t, url, body, map[string]string{"traceparent": tp}); code != http.StatusForbidden {
		t.Fatalf("no key: status %d, want 403", code)
	}
	r := nextRecord(t, h, "")
	if r.GetOutcome() != metamcpv1.CallOutcome_CALL_OUTCOME_UNAUTHORIZED || r.GetHttpStatus() != 403 || r.GetEndpoint() != "main" ||
		r.GetPrincipal() != "" || r.GetTraceId() != "4bf92f3577b34da6a3ce929d0e0e4736" || r.GetError() == "" || r.GetClientIp() != "127.0.0.1" {
		t.Errorf("401 record = %v", r)
	}
	if code, _, _ := post(t, url, body, map[string]string{"Authorization": "Bearer mm_unknown"}); code != http.StatusForbidden {
		t.Fatalf("unknown key: status %d, want 403", code)
	}
	if r := nextRecord(t, h, ""); r.GetOutcome() != metamcpv1.CallOutcome_CALL_OUTCOME_UNAUTHORIZED {
		t.Errorf("unknown key record = %v", r)
	}
	// carol's key is for endpoint other only.
	if code, _, _ := post(t, url, body, map[string]string{"Authorization": "Bearer " + keyOther}); code != http.StatusForbidden {
		t.Fatalf("key of another endpoint: status %d, want 403", code)
	}
	if r := nextRecord(t, h, ""); r.GetOutcome() != metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN || r.GetHttpStatus() != 403 || r.GetPrincipal() != "carol" || r.GetKeyId() != "carol" || r.GetPrincipalKind() != "apikey" {
		t.Errorf("403 record = %v", r)
	}
}

func TestCallRecordAnnotationsAndPayloads(t *testing.T) {
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "alpha", ToolOverrides: map[string]*metamcpv1.ToolOverride{
		"echo": {Annotations: &metamcpv1.ToolAnnotations{DestructiveHint: proto.Bool(true)}},
		"add":  {Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: proto.Bool(true)}},
	}})
	cfg.Endpoints[0].Audit = &metamcpv1.AuditSettings{CaptureArguments: true, CaptureResults: true, MaxPayloadBytes: 80, RedactKeys: []string{"ssn"}}
	h := newHarness(t, cfg, nil, nil)
	cs := h.connect(t, "main", keyBob, "2025-11-25")
	// No tools/list first: the gateway learns the annotations itself.
	// (echo refuses the extra arguments: the result is a long tool error.)
	_, _ = cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "alpha__echo", Arguments: map[string]any{"text": "x", "password": "hunter2", "nested": map[string]any{"SSN": "123"}}})
	r := nextRecord(t, h, "tools/call")
	if !r.GetDestructive() || r.GetReadOnly() {
		t.Errorf("echo record: destructive %v, read-only %v; want destructive", r.GetDestructive(), r.GetReadOnly())
	}
	if r.GetArguments() != `{"nested":{"SSN":"[REDACTED]"},"password":"[REDACTED]","text":"x"}` {
		t.Errorf("arguments = %s", r.GetArguments())
	}
	if !strings.HasPrefix(r.GetResult(), `{"content":`) || len(r.GetResult()) != 80 || !r.GetPayloadTruncated() {
		t.Errorf("result = %s (truncated %v), want it cut to 80 bytes", r.GetResult(), r.GetPayloadTruncated())
	}
	callText(t, cs, "alpha__add", map[string]any{"a": 1, "b": 2})
	if r := nextRecord(t, h, "tools/call"); r.GetDestructive() || !r.GetReadOnly() {
		t.Errorf("add record: destructive %v, read-only %v; want read-only", r.GetDestructive(), r.GetReadOnly())
	}
}

// post sends one raw JSON-RPC message and returns status, headers and body.
func post(t testing.TB, url, body string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

func TestAuth(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	tests := []struct {
		name       string
		endpoint   string
		headers    map[string]string
		query      string
		wantStatus int
		wantBody   string
	}{
		{"no key", "main", nil, "", 403, "needs an API key"},
		{"wrong key", "main", map[string]string{"Authorization": "Bearer mm_wrong"}, "", 403, "not valid"},
		{"key for another endpoint", "main", map[string]string{"Authorization": "Bearer " + keyOther}, "", 403, "may not call"},
		{"expired key", "main", map[string]string{"Authorization": "Bearer " + keyExpired}, "", 403, "expired"},
		{"bearer key", "main", map[string]string{"Authorization": "Bearer " + keyAlice}, "", 200, `"protocolVersion":"2025-06-18"`},
		{"X-API-Key", "main", map[string]string{"X-API-Key": keyBob}, "", 200, `"serverInfo":{"name":"metamcp"`},
		{"query key", "main", nil, "?api_key=" + keyBob, 200, `"result"`},
		{"query key where not allowed", "other", nil, "?api_key=" + keyBob, 403, "needs an API key"},
		{"star key", "other", map[string]string{"Authorization": "Bearer " + keyBob}, "", 200, `"result"`},
		{"anonymous endpoint", "open", nil, "", 200, `"result"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := post(t, h.url(tc.endpoint, "mcp")+tc.query, initBody, tc.headers)
			if status != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
				t.Errorf("status %d body %s, want %d containing %q", status, body, tc.wantStatus, tc.wantBody)
			}
			// A key-only endpoint must not send OAuth clients into a
			// sign-in that cannot succeed.
			if wa := hdr.Get("WWW-Authenticate"); wa != "" {
				t.Errorf("WWW-Authenticate = %q on a key-only endpoint, want none", wa)
			}
			if status == 200 && hdr.Get(headerSessionID) == "" {
				t.Error("initialize answered without Mcp-Session-Id")
			}
		})
	}
	// No OAuth metadata for a key-only endpoint: it answers as an unknown one.
	for _, ep := range []string{"main", "nosuch"} {
		resp, err := http.Get(h.srvURL + "/.well-known/oauth-protected-resource/metamcp/" + ep + "/mcp")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("metadata of %s: %d, want 404", ep, resp.StatusCode)
		}
	}
}

func TestRequestRefusals(t *testing.T) {
	h := newHarness(t, testConfig(), nil, func(o *Options) {
		o.MaxBodyBytes = 1024
		o.AllowedHosts = []string{"mcp.example.com"}
		o.AllowedOrigins = []string{"https://app.example.com"}
	})
	anon := map[string]string{}
	big := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 2000) + `"}}`
	tests := []struct {
		name       string
		endpoint   string
		body       string
		headers    map[string]string
		wantStatus int
		wantBody   string
	}{
		{"foreign Host", "open", initBody, map[string]string{"Host": "evil.example.net"}, 403, "Host"},
		{"allowed Host", "open", initBody, map[string]string{"Host": "mcp.example.com"}, 200, `"result"`},
		{"foreign Origin", "open", initBody, map[string]string{"Origin": "https://evil.example.net"}, 403, "Origin"},
		{"allowed Origin", "open", initBody, map[string]string{"Origin": "https://app.example.com"}, 200, `"result"`},
		{"oversized body", "open", big, anon, 413, `"code":-32600`},
		{"malformed JSON", "open", `{"jsonrpc":"2.0","id":1,"method":`, anon, 400, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700`},
		{"batch", "open", `[` + initBody + `]`, anon, 400, "batches"},
		{"unknown endpoint", "nosuch", initBody, anon, 404, "no endpoint"},
		{"streamable switched off", "nohttp", initBody, anon, 404, "does not serve"},
		{"no session", "open", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, anon, 400, "Mcp-Session-Id"},
		{"unknown session", "open", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, map[string]string{headerSessionID: "nope"}, 404, "session not found"},
		{"unsupported stateless version", "open", `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}`,
			map[string]string{headerProtocolVersion: "2099-01-01"}, 400, "-32022"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := post(t, h.url(tc.endpoint, "mcp"), tc.body, tc.headers)
			if status != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
				t.Errorf("status %d body %s, want %d containing %q", status, body, tc.wantStatus, tc.wantBody)
			}
			if strings.Contains(body, `"main"`) || strings.Contains(body, "other") {
				t.Errorf("error body lists endpoints: %s", body)
			}
		})
	}
	resp, err := http.Get(h.url("nosse", "sse"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("SSE on an endpoint that switched it off: %d, want 404", resp.StatusCode)
	}
}

func TestSessionLifecycle(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	status, hdr, _ := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := hdr.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d, session %q", status, sid)
	}
	list := `{"jsonrpc":"2.0","id":"x","method":"tools/list"}`
	// Bound to its principal: bob's key is refused, alice's works.
	if status, _, body := post(t, h.url("main", "mcp"), list, map[string]string{"Authorization": "Bearer " + keyBob, headerSessionID: sid}); status != 403 {
		t.Errorf("another principal's request: %d %s, want 403", status, body)
	}
	if status, hdr, body := post(t, h.url("main", "mcp"), list, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 200 || !strings.HasPrefix(body, `{"jsonrpc":"2.0","id":"x","result":{"tools":[`) || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("owner's request: %d %s", status, body)
	}
	// Notifications are accepted.
	if status, _, _ := post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","method":"notifications/initialized"}`, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 202 {
		t.Errorf("notification: %d, want 202", status)
	}
	// GET without Accept: text/event-stream is refused; with it, it opens
	// the standalone stream, which DELETE ends.
	req, _ := http.NewRequest(http.MethodGet, h.url("main", "mcp"), nil)
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	req.Header.Set(headerSessionID, sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 406 {
		t.Errorf("GET without Accept: %d, want 406", resp.StatusCode)
	}
	status, stream := openStream(t, h.url("main", "mcp"), keyAlice, sid)
	if status != 200 {
		t.Errorf("GET: %d, want an event stream", status)
	}
	streamEnded := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream)
		streamEnded <- err
	}()
	// DELETE ends it.
	if status := deleteMCP(t, h.url("main", "mcp"), map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 204 {
		t.Errorf("DELETE: %d, want 204", status)
	}
	if status, _, _ := post(t, h.url("main", "mcp"), list, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid}); status != 404 {
		t.Errorf("after DELETE: %d, want 404", status)
	}
	if !slices.Contains(h.ups.closedClients(), sid) {
		t.Errorf("DELETE did not close the per-client upstream sessions of %q", sid)
	}
	select {
	case err := <-streamEnded:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("DELETE did not end the session's stream")
	}
}

func TestIdleSessionSwept(t *testing.T) {
	h := newHarness(t, testConfig(), nil, func(o *Options) { o.SessionIdleTTL = 300 * time.Millisecond })
	list := `{"jsonrpc":"2.0","id":"x","method":"tools/list"}`
	_, hdr, _ := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	idle := hdr.Get(headerSessionID)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(h.ups.closedClients(), idle) {
		if time.Now().After(deadline) {
			t.Fatal("idle session not swept within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status, _, _ := post(t, h.url("main", "mcp"), list, map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: idle}); status != 404 {
		t.Errorf("after the sweep: %d, want 404", status)
	}
}

func TestStatelessRaw(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	hdr := map[string]string{headerProtocolVersion: "2026-07-28", "Authorization": "Bearer " + keyAlice}
	status, rh, body := post(t, h.url("main", "mcp"), withMeta(`{"jsonrpc":"2.0","id":7,"method":"server/discover"}`), hdr)
	if status != 200 || rh.Get(headerSessionID) != "" {
		t.Fatalf("discover: %d, session %q, %s", status, rh.Get(headerSessionID), body)
	}
	var resp struct {
		Result struct {
			SupportedVersions []string        `json:"supportedVersions"`
			Capabilities      json.RawMessage `json:"capabilities"`
			Meta              map[string]struct {
				Name string `json:"name"`
			} `json:"_meta"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(resp.Result.SupportedVersions, "2026-07-28") || resp.Result.Meta[metaServerInfo].Name != "metamcp" {
		t.Errorf("discover = %s", body)
	}
	// The result keeps the upstream's own fields and gets the serverInfo
	// key and resultType.
	status, _, body = post(t, h.url("main", "mcp"), withMeta(`{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"q"}}}`), hdr)
	if status != 200 || !strings.Contains(body, `"alpha:q"`) || !strings.Contains(body, `"io.modelcontextprotocol/serverInfo":{"name":"metamcp"`) ||
		!strings.Contains(body, `{"resultType":"complete",`) {
		t.Errorf("stateless call: %d %s", status, body)
	}

	// Mcp-Method and Mcp-Name must agree with the body: a load balancer
	// may act on the headers while the gateway acts on the body.
	call := withMeta(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"h"}}}`)
	for _, tc := range []struct {
		name, method, tool string
		wantStatus         int
		want               string
	}{
		{"headers agree", "tools/call", "alpha__echo", 200, `"alpha:h"`},
		{"no standard headers", "", "", 400, `missing the Mcp-Method header`},
		{"no Mcp-Name", "tools/call", "", 400, `missing the Mcp-Name header`},
		{"other method", "tools/list", "", 400, `"code":-32020`},
		{"other name", "tools/call", "beta__echo", 400, `"code":-32020`},
	} {
		// Sent as they are: not completed by fixture.StandardHeaders.
		hh := map[string]string{headerProtocolVersion: "2026-07-28", "Authorization": "Bearer " + keyAlice, fixture.OmitStandardHeaders: "1"}
		if tc.method != "" {
			hh["Mcp-Method"] = tc.method
		}
		if tc.tool != "" {
			hh["Mcp-Name"] = tc.tool
		}
		status, _, body := post(t, h.url("main", "mcp"), call, hh)
		if status != tc.wantStatus || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d with %s", tc.name, status, body, tc.wantStatus, tc.want)
		}
	}
}

func TestMCPPathEndpoint(t *testing.T) {
	tests := []struct {
		path, name string
		ok         bool
	}{
		{"/metamcp/main/mcp", "main", true},
		{"/metamcp/a.b-c_d/mcp", "a.b-c_d", true},
		{"/metamcp//mcp", "", false},
		{"/metamcp/./mcp", "", false},
		{"/metamcp/../mcp", "", false},
		{"/metamcp/a/b/mcp", "", false},
		{"/metamcp/main/sse", "", false},
		{"/metamcp/mcp", "", false},
		{"/metamcp/main/mcp/", "", false},
		{"/other/main/mcp", "", false},
	}
	for _, tc := range tests {
		if name, ok := mcpPathEndpoint(tc.path); name != tc.name || ok != tc.ok {
			t.Errorf("mcpPathEndpoint(%q) = %q, %v; want %q, %v", tc.path, name, ok, tc.name, tc.ok)
		}
	}
}

// TestRoutesPathForms checks that a path the fast route leaves to the
// ServeMux (escaped, or not in canonical form) is answered as before.
func TestRoutesPathForms(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/metamcp/open/mcp", 200, `"result"`},   // fast route
		{"/metamcp/%6Fpen/mcp", 200, `"result"`}, // escaped: the mux unescapes it
		{"/metamcp/no%20such/mcp", 404, `no endpoint \"no such\"`},
		{"/metamcp/no%2Fsuch/mcp", 404, `no endpoint \"no/such\"`},
	}
	for _, tc := range tests {
		status, _, body := post(t, h.srvURL+tc.path, initBody, nil)
		if status != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
			t.Errorf("POST %s: %d %s, want %d containing %q", tc.path, status, body, tc.wantStatus, tc.wantBody)
		}
	}
}

// withMeta returns a 2026-07-28 request body with the _meta that revision
// requires of every request (its protocolVersion, and clientCapabilities,
// empty) added to the params. A body that has a _meta already is returned as
// it is: a test of what a _meta holds writes it whole.
func withMeta(body string) string {
	const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	if strings.Contains(body, `"_meta"`) {
		return body
	}
	if i := strings.Index(body, `"params":{`); i >= 0 {
		j := i + len(`"params":{`)
		if strings.HasPrefix(body[j:], "}") {
			return body[:j] + meta + body[j:]
		}
		return body[:j] + meta + "," + body[j:]
	}
	return strings.TrimSuffix(body, "}") + `,"params":{` + meta + `}}`
}

func TestCallRecordAccessDenied(t *testing.T) {
	h := newHarness(t, accessConfig(), nil, nil)
	alice := h.connect(t, "main", keyAlice, "2025-11-25")
	if _, err := alice.CallTool(testCtx(t), &mcp.CallToolParams{Name: "beta__whoami"}); err == nil {
		t.Fatal("alice called beta__whoami, which her rules refuse")
	}
	r := nextRecord(t, h, "tools/call")
	if r.GetOutcome() != metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN || r.GetTarget() != "beta__whoami" || r.GetPrincipal() != "alice" ||
		r.GetErrorCode() != codeForbidden || !strings.Contains(r.GetError(), "not allowed") {
		t.Errorf("record of a call the access rules refused = %v", r)
	}
}
