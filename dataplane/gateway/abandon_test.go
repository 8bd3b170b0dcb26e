package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/test/fixtures/fixture"
)

// TestAbandonedInputRequired: 2026-07-28 clients of one principal share
// one process of a per_client stdio server. One client abandons a call at
// its input_required round (it never retries); the others' calls, which
// ask the client something too, are still theirs: each gets its own
// input_required round and completes, while the abandoned call waits.
func TestAbandonedInputRequired(t *testing.T) {
	bin := fixture.Build(t)
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "local"})
	cfg.Servers = append(cfg.Servers, &metamcpv1.Server{Name: "local", SessionMode: metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT,
		Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: bin,
			Args: fixture.StdioArgs("local", "--tools", "echo,elicit")}}})
	holder := &configHolder{}
	holder.set(t, cfg)
	h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) {
		o.Config = holder
		o.Pool = realPool(t, nil, upstream.PoolOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, holder)
	})
	url := h.url("main", "mcp")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`
	elicit := func(id int, message, extra string) map[string]any {
		t.Helper()
		_, m := statelessPost(t, url, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"local__elicit","arguments":{"message":%q},%s%s}}`, id, message, extra, meta))
		res, _ := m["result"].(map[string]any)
		if res == nil {
			t.Fatalf("%s: %v", message, m)
		}
		return res
	}
	// shown returns the message of the one elicitation an input_required
	// result asks, and its key.
	shown := func(res map[string]any) (string, string) {
		t.Helper()
		reqs, _ := res["inputRequests"].(map[string]any)
		if res["resultType"] != "input_required" || len(reqs) != 1 {
			t.Fatalf("%v, want input_required with one request", res)
		}
		for key, r := range reqs {
			params, _ := r.(map[string]any)["params"].(map[string]any)
			msg, _ := params["message"].(string)
			return key, msg
		}
		return "", ""
	}
	if _, msg := shown(elicit(1, "abandoned?", "")); msg != "abandoned?" {
		t.Fatalf("the first client was asked %q", msg)
	}
	// The first client goes away. Others keep calling, each on its own.
	for i := range 3 {
		message := fmt.Sprintf("other %d?", i)
		first := elicit(10+i, message, "")
		key, msg := shown(first)
		if msg != message {
			t.Fatalf("call %d was asked %q, want %q", i, msg, message)
		}
		answer, _ := json.Marshal(map[string]any{key: map[string]any{"action": "accept", "content": map[string]any{"answer": fmt.Sprint(i)}}})
		done := elicit(20+i, message, `"requestState":"`+first["requestState"].(string)+`","inputResponses":`+string(answer)+`,`)
		if content, _ := done["content"].([]any); len(content) != 1 || !strings.Contains(fmt.Sprint(content[0]), "accept "+fmt.Sprint(i)) || done["isError"] == true {
			t.Fatalf("call %d after its answer: %v", i, done)
		}
	}
}
