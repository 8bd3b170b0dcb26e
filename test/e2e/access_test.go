package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestAccessRulesEndToEnd: two principals on one endpoint, with access
// rules applied from YAML, see different tools/list results through a real
// data plane and are each refused on the other's tools with an error naming
// the endpoint's rule; `mmctl auth can-i` (fed by the tool list the data
// plane reports) says the same for every tool.
func TestAccessRulesEndToEnd(t *testing.T) {
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-access")
	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "namespace", "dev", "--server", "demo")
	yaml := filepath.Join(t.TempDir(), "endpoint.yaml")
	if err := os.WriteFile(yaml, []byte(`apiVersion: metamcp/v1
kind: Endpoint
name: team
namespace: dev
accessRules:
  - name: alice-maths
    principals: [alice]
    tools: [demo__add, demo__echo]
  - name: bots-read-only
    apiKeys: [bot]
    tools: ["*"]
    condition: tool.annotations.readOnlyHint
  - name: bots-no-echo
    effect: deny
    apiKeys: [bot]
    tools: [demo__echo]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.ok(t, "apply", "-f", yaml)
	aliceKey := createKey(t, cp, "alice", "team")
	botKey := createKey(t, cp, "bot", "team")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	url := "http://" + dp.addr + "/metamcp/team/mcp"

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connect := func(key string) *mcp.ClientSession {
		client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "v0"}, nil)
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{key: key}}}, nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		return cs
	}
	alice, bot := connect(aliceKey), connect(botKey)
	aliceTools, botTools := toolNames(ctx, t, alice), toolNames(ctx, t, bot)
	slices.Sort(aliceTools)
	slices.Sort(botTools)
	if want := []string{"demo__add", "demo__echo"}; !slices.Equal(aliceTools, want) {
		t.Errorf("alice's tools = %q, want %q", aliceTools, want)
	}
	// The bot: the read-only tools (echo, add, now) but echo, which a deny rule takes away.
	if want := []string{"demo__add", "demo__now"}; !slices.Equal(botTools, want) {
		t.Errorf("bot's tools = %q, want %q", botTools, want)
	}
	for _, tc := range []struct {
		cs         *mcp.ClientSession
		who, tool  string
		args       map[string]any
		wantRefuse string
	}{
		{alice, "alice", "demo__add", map[string]any{"a": 2, "b": 3}, ""},
		{alice, "alice", "demo__now", nil, `tool "demo__now" is not allowed for "alice" on endpoint "team": no access rule allows it`},
		{bot, "bot", "demo__now", nil, ""},
		{bot, "bot", "demo__echo", map[string]any{"text": "x"}, `denied by rule "bots-no-echo"`},
		{bot, "bot", "demo__random_number", nil, "no access rule allows it"},
	} {
		_, err := tc.cs.CallTool(ctx, &mcp.CallToolParams{Name: tc.tool, Arguments: tc.args})
		switch {
		case tc.wantRefuse == "" && err != nil:
			t.Errorf("%s calls %s: %v", tc.who, tc.tool, err)
		case tc.wantRefuse != "" && (err == nil || !strings.Contains(err.Error(), tc.wantRefuse)):
			t.Errorf("%s calls %s: %v, want a refusal saying %q", tc.who, tc.tool, err, tc.wantRefuse)
		}
	}

	// can-i agrees, once the data plane has reported the endpoint's tools.
	eventually(t, "the data plane reported the tools of team", func() (bool, string) {
		r := cp.mmctl(t, "auth", "can-i", "team", "--as", "alice")
		return r.code == 0 && strings.Contains(r.stdout, "demo__random_number"), r.String()
	})
	for _, tc := range []struct {
		args    []string
		allowed []string
	}{
		{[]string{"--as", "alice"}, aliceTools},
		{[]string{"--as", "bot", "--api-key", "bot"}, botTools},
	} {
		for _, tool := range []string{"demo__add", "demo__echo", "demo__now", "demo__random_number"} {
			r := cp.mmctl(t, append(append([]string{"auth", "can-i", "team"}, tc.args...), tool)...)
			want := slices.Contains(tc.allowed, tool)
			if got := r.code == 0 && strings.HasPrefix(r.stdout, "yes"); got != want || (r.code != 0 && r.code != 1) {
				t.Errorf("can-i %v %s: %s, want allowed=%v as the data plane decided", tc.args, tool, r, want)
			}
		}
	}
}
