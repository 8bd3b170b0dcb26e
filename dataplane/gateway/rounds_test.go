package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// addTwiceTool adds to s the tool "twice", which asks for input in two
// rounds the 2026-07-28 way (InputRequests): "first", then "second" with
// requestState "after-first", then answers "done NAME". A session-based
// go-sdk server fulfils the first round itself, with a server-to-client
// request, and returns the second as a result with inputRequests and no
// resultType.
func addTwiceTool(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{Name: "twice", Description: "Asks for input in two rounds"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		in := req.Params.InputResponses
		if second, ok := in["second"].(*mcp.ElicitResult); ok && req.Params.RequestState == "after-first" {
			name, _ := second.Content["name"].(string)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done " + name}}}, nil, nil
		}
		if _, ok := in["first"].(*mcp.ElicitResult); ok {
			return &mcp.CallToolResult{
				InputRequests: mcp.InputRequestMap{"second": &mcp.ElicitParams{Message: "second?", RequestedSchema: jsonSchemaName}},
				RequestState:  "after-first",
			}, nil, nil
		}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"first": &mcp.ElicitParams{Message: "first?", RequestedSchema: jsonSchemaName}}}, nil, nil
	})
}

// statelessPost posts a 2026-07-28 request and decodes its answer.
func statelessPost(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	status, _, resp := post(t, url, body, map[string]string{headerProtocolVersion: version20260728, "Authorization": "Bearer " + keyBob})
	var m map[string]any
	if err := json.Unmarshal([]byte(resp), &m); err != nil {
		t.Fatalf("status %d: %s", status, resp)
	}
	return status, m
}

// TestSecondInputRound: a session-based upstream whose tool asks for input
// twice. A 2026-07-28 client gets the first round bridged, and the second
// as the input_required result it is (with the upstream's own key and
// requestState), not a "complete" one carrying inputRequests; its retry
// completes the call. A session-based client is asked both rounds as
// server-to-client requests.
func TestSecondInputRound(t *testing.T) {
	lh := newLiveHarness(t)
	addTwiceTool(lh.alpha.s)
	url := lh.url("main", "mcp")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`
	call := func(id int, extra string) map[string]any {
		t.Helper()
		_, m := statelessPost(t, url, `{"jsonrpc":"2.0","id":`+itoa(int64(id))+`,"method":"tools/call","params":{"name":"alpha__twice","arguments":{},`+extra+meta+`}}`)
		res, _ := m["result"].(map[string]any)
		if res == nil {
			t.Fatalf("call %d: %v", id, m)
		}
		return res
	}
	first := call(1, "")
	reqs, _ := first["inputRequests"].(map[string]any)
	if first["resultType"] != "input_required" || len(reqs) != 1 {
		t.Fatalf("first answer %v, want input_required with one request", first)
	}
	answers := map[string]any{}
	for key := range reqs {
		answers[key] = map[string]any{"action": "accept", "content": map[string]any{"name": "one"}}
	}
	ab, _ := json.Marshal(answers)
	second := call(2, `"requestState":"`+first["requestState"].(string)+`","inputResponses":`+string(ab)+`,`)
	reqs, _ = second["inputRequests"].(map[string]any)
	if second["resultType"] != "input_required" || reqs["second"] == nil || second["requestState"] != "after-first" {
		t.Fatalf("second answer %v, want input_required asking \"second\" with requestState after-first", second)
	}
	done := call(3, `"requestState":"after-first","inputResponses":{"second":{"action":"accept","content":{"name":"ann"}}},`)
	if content, _ := done["content"].([]any); done["resultType"] != "complete" || len(content) != 1 || content[0].(map[string]any)["text"] != "done ann" {
		t.Fatalf("third answer %v, want done ann", done)
	}

	asked := []string{}
	cs := lh.connectWith(t, "main", keyAlice, version20251125, &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked = append(asked, req.Params.Message)
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "bo"}}, nil
		},
	})
	res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "alpha__twice"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "done bo" || len(asked) != 2 {
		t.Fatalf("session client: %+v after being asked %v, want done bo after first? and second?", res, asked)
	}
}

// TestUndeclaredCapabilityRefusedAlike: a tool of a session-based upstream
// asks for an elicitation and the roots at once; a 2026-07-28 client that
// declared elicitation but not roots gets the same answer every time: a
// missing-capability error (-32021, HTTP 400) naming roots, not an
// input_required round for the elicitation when it happened to come first.
func TestUndeclaredCapabilityRefusedAlike(t *testing.T) {
	lh := newLiveHarness(t)
	mcp.AddTool(lh.alpha.s, &mcp.Tool{Name: "nameroots", Description: "Asks for a name and the roots at once"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if len(req.Params.InputResponses) > 0 {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "answered"}}}, nil, nil
		}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{
			"name":  &mcp.ElicitParams{Message: "name?", RequestedSchema: jsonSchemaName},
			"roots": &mcp.ListRootsParams{}, //nolint:staticcheck // roots still pass through
		}}, nil, nil
	})
	url := lh.url("main", "mcp")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`
	for i := range 60 {
		status, m := statelessPost(t, url, `{"jsonrpc":"2.0","id":`+itoa(int64(i))+`,"method":"tools/call","params":{"name":"alpha__nameroots","arguments":{},`+meta+`}}`)
		e, _ := m["error"].(map[string]any)
		data, _ := e["data"].(map[string]any)
		need, _ := data["requiredCapabilities"].(map[string]any)
		if status != http.StatusBadRequest || e["code"] != float64(codeMissingClientCapability) || need["roots"] == nil {
			t.Fatalf("call %d: status %d, %v; want 400 and -32021 requiring roots", i, status, m)
		}
	}
}
