package gateway

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/toolreport"
)

// accessConfig is testConfig where endpoint "main" has access rules: alice
// may use alpha's tools, bob beta's but not beta__fail, and both the tools
// annotated read-only (alpha__add is overridden to be).
func accessConfig() *metamcpv1.Config {
	cfg := testConfig(
		&metamcpv1.NamespaceMember{Server: "alpha", ToolOverrides: map[string]*metamcpv1.ToolOverride{
			"add": {Annotations: &metamcpv1.ToolAnnotations{ReadOnlyHint: new(true)}},
		}},
		&metamcpv1.NamespaceMember{Server: "beta"},
	)
	cfg.Endpoints[0].AccessRules = []*metamcpv1.AccessRule{
		{Name: "alice-alpha", Principals: []string{"alice"}, Servers: []string{"alpha"}},
		{Name: "bob-beta", Principals: []string{"bob"}, Tools: []string{"beta__*"}, Prompts: []string{"beta__*"}, Resources: []string{"fixture://beta/*"}},
		{Name: "no-fail", Effect: metamcpv1.AccessEffect_ACCESS_EFFECT_DENY, Principals: []string{"bob"}, Tools: []string{"*__fail"}},
		{Name: "read-only", Tools: []string{"*"}, Condition: "tool.annotations.readOnlyHint == true"},
		{Name: "small-echo", Principals: []string{"carol*"}, Tools: []string{"alpha__echo"}, Condition: "size(arguments.text) < 5"},
	}
	return cfg
}

func toolSet(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	res, err := cs.ListTools(testCtx(t), nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	sort.Strings(names)
	return names
}

func TestAccessRules(t *testing.T) {
	report := toolreport.New()
	cfg := accessConfig()
	cfg.ApiKeys = append(cfg.ApiKeys, keyEntry("caroline", "mm_caroline_0123456789abcdef", []string{"*"}, time.Time{}))
	h := newHarness(t, cfg, nil, func(o *Options) { o.ToolReport = report })
	alice := h.connect(t, "main", keyAlice, "")
	bob := h.connect(t, "main", keyBob, "2025-11-25")

	if got, want := toolSet(t, alice), []string{"alpha__add", "alpha__echo", "alpha__fail", "alpha__whoami"}; !slices.Equal(got, want) {
		t.Errorf("alice's tools = %q, want %q", got, want)
	}
	if got, want := toolSet(t, bob), []string{"alpha__add", "beta__add", "beta__echo", "beta__whoami"}; !slices.Equal(got, want) {
		t.Errorf("bob's tools = %q, want %q", got, want)
	}

	call := func(cs *mcp.ClientSession, name string, args map[string]any) (string, error) {
		res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			return "", err
		}
		return res.Content[0].(*mcp.TextContent).Text, nil
	}
	if out, err := call(alice, "alpha__whoami", nil); err != nil || out != "alpha" {
		t.Errorf("alice calls alpha__whoami: %q, %v", out, err)
	}
	if out, err := call(bob, "beta__whoami", nil); err != nil || out != "beta" {
		t.Errorf("bob calls beta__whoami: %q, %v", out, err)
	}
	if out, err := call(bob, "alpha__add", map[string]any{"a": 1, "b": 2}); err != nil || out != "3" {
		t.Errorf("bob calls the read-only alpha__add: %q, %v", out, err)
	}
	for _, tc := range []struct {
		who        *mcp.ClientSession
		name, want string
	}{
		{alice, "beta__whoami", `tool "beta__whoami" is not allowed for "alice" on endpoint "main": no access rule allows it`},
		{bob, "alpha__whoami", `tool "alpha__whoami" is not allowed for "bob" on endpoint "main": no access rule allows it`},
		{bob, "beta__fail", `denied by rule "no-fail"`},
	} {
		_, err := call(tc.who, tc.name, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}

	// Prompts and resources follow the rules too.
	if _, err := bob.GetPrompt(testCtx(t), &mcp.GetPromptParams{Name: "alpha__greet", Arguments: map[string]string{"who": "x"}}); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("bob gets alpha__greet: %v, want a refusal", err)
	}
	if _, err := bob.GetPrompt(testCtx(t), &mcp.GetPromptParams{Name: "beta__greet", Arguments: map[string]string{"who": "x"}}); err != nil {
		t.Errorf("bob gets beta__greet: %v", err)
	}
	if _, err := bob.ReadResource(testCtx(t), &mcp.ReadResourceParams{URI: "fixture://alpha/readme"}); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("bob reads alpha's readme: %v, want a refusal", err)
	}
	res, err := bob.ListResources(testCtx(t), nil)
	if err != nil || len(res.Resources) != 1 || res.Resources[0].URI != "fixture://beta/readme" {
		t.Errorf("bob's resources: %v, %v", res, err)
	}

	// A condition on the arguments: carol may echo short texts only; the
	// tool is listed, the call decided on its arguments.
	carol := h.connect(t, "main", "mm_caroline_0123456789abcdef", "")
	if got := toolSet(t, carol); !slices.Contains(got, "alpha__echo") {
		t.Errorf("carol's tools = %q, want alpha__echo listed", got)
	}
	if out, err := call(carol, "alpha__echo", map[string]any{"text": "hi"}); err != nil || out != "alpha:hi" {
		t.Errorf("carol echoes a short text: %q, %v", out, err)
	}
	if _, err := call(carol, "alpha__echo", map[string]any{"text": "much too long"}); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("carol echoes a long text: %v, want a refusal", err)
	}

	// The tool report has the whole, unfiltered list.
	var all []string
	for _, l := range report.Changed(true) {
		if l.GetEndpoint() == "main" {
			for _, tool := range l.GetTools() {
				all = append(all, tool.GetName())
			}
		}
	}
	if len(all) != 8 {
		t.Errorf("tool report of main = %q, want the 8 tools of alpha and beta", all)
	}
}

// TestAccessRulesOnAnotherReplica: a replica that has never listed the
// tools still decides a condition on annotations: it learns them first.
func TestAccessRulesOnAnotherReplica(t *testing.T) {
	h := newHarness(t, accessConfig(), nil, nil)
	status, _, body := post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__add","arguments":{"a":1,"b":2},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`,
		map[string]string{"Authorization": "Bearer " + keyBob, headerProtocolVersion: version20260728})
	if status != 200 || !strings.Contains(body, `"text":"3"`) {
		t.Errorf("bob calls the read-only alpha__add on a fresh replica: %d %s", status, body)
	}
	status, _, body = post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`,
		map[string]string{"Authorization": "Bearer " + keyBob, headerProtocolVersion: version20260728})
	var msg struct {
		Error struct {
			Code int64           `json:"code"`
			Data json.RawMessage `json:"data"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(body), &msg)
	if msg.Error.Code != codeForbidden || !strings.Contains(string(msg.Error.Data), `"endpoint":"main"`) {
		t.Errorf("bob calls alpha__echo statelessly: %d %s, want error %d with the endpoint in its data", status, body, codeForbidden)
	}
}

// TestAccessRulesChangeNotifies: a change of the rules alone (no upstream
// list changed) sends list_changed to the endpoint's listening clients,
// whose lists it may change.
func TestAccessRulesChangeNotifies(t *testing.T) {
	h := newHarness(t, accessConfig(), nil, nil)
	h.gw.ConfigChanged() // the data plane does on each snapshot, the first included
	changed := make(chan struct{}, 10)
	cs := h.connectWith(t, "main", keyAlice, "2025-11-25", &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	if got := toolSet(t, cs); slices.Contains(got, "beta__echo") {
		t.Fatalf("alice sees beta__echo before the change: %q", got)
	}
	h.waitStreams(t, "main", 1)
	cfg := accessConfig()
	cfg.Endpoints[0].AccessRules[0].Servers = []string{"alpha", "beta"}
	h.cfg.set(t, cfg)
	h.gw.ConfigChanged()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no tools/list_changed after the access rules changed")
	}
	if got := toolSet(t, cs); !slices.Contains(got, "beta__echo") {
		t.Errorf("alice's tools after the change = %q, want beta__echo", got)
	}
}
