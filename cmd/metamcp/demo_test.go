package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestDemoServer runs `metamcp demo-server` as a process and uses every tool,
// the resource and the prompt through a go-sdk client.
func TestDemoServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "demo-test", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: exec.Command(metamcpBin, "demo-server")}, nil)
	if err != nil {
		t.Fatalf("connect to metamcp demo-server: %v", err)
	}
	defer cs.Close()

	if got := cs.InitializeResult().ServerInfo.Name; got != "metamcp-demo" {
		t.Errorf("server name = %q, want metamcp-demo", got)
	}

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := []string{"add", "echo", "now", "random_number"}; !slices.Equal(names, want) {
		t.Errorf("tools = %v, want %v", names, want)
	}

	call := func(name string, args map[string]any) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("call %s: %v", name, err)
		}
		return res
	}
	text := func(res *mcp.CallToolResult) string {
		t.Helper()
		if len(res.Content) == 0 {
			t.Fatalf("result has no content: %+v", res)
		}
		tc, ok := res.Content[0].(*mcp.TextContent)
		if !ok {
			t.Fatalf("content is %T, want text", res.Content[0])
		}
		return tc.Text
	}
	structured := func(res *mcp.CallToolResult, v any) {
		t.Helper()
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("structured content %s: %v", b, err)
		}
	}

	if got := text(call("echo", map[string]any{"text": "hello, gateway"})); got != "hello, gateway" {
		t.Errorf("echo = %q", got)
	}
	var sum struct{ Sum float64 }
	structured(call("add", map[string]any{"a": 2, "b": 40.5}), &sum)
	if sum.Sum != 42.5 {
		t.Errorf("add 2 + 40.5 = %v", sum.Sum)
	}
	now := text(call("now", nil))
	if _, err := time.Parse(time.RFC3339, now); err != nil {
		t.Errorf("now = %q, not RFC 3339: %v", now, err)
	}
	if res := call("now", map[string]any{"timezone": "Nowhere/Atlantis"}); !res.IsError || !strings.Contains(text(res), "unknown time zone") {
		t.Errorf("now with a bad time zone: isError=%v %q", res.IsError, text(res))
	}
	for range 20 {
		var r struct{ Value int }
		structured(call("random_number", map[string]any{"min": 3, "max": 5}), &r)
		if r.Value < 3 || r.Value > 5 {
			t.Fatalf("random_number 3..5 = %d", r.Value)
		}
	}
	if res := call("random_number", map[string]any{"min": 5, "max": 3}); !res.IsError {
		t.Errorf("random_number with max < min did not fail")
	}

	res, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Resources) != 1 || res.Resources[0].URI != demoReadmeURI {
		t.Errorf("resources = %+v, want one: %s", res.Resources, demoReadmeURI)
	}
	read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: demoReadmeURI})
	if err != nil {
		t.Fatal(err)
	}
	if len(read.Contents) != 1 || !strings.Contains(read.Contents[0].Text, "MetaMCP demo server") {
		t.Errorf("read %s = %+v", demoReadmeURI, read.Contents)
	}

	prompts, err := cs.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "summarize" {
		t.Errorf("prompts = %+v, want summarize", prompts.Prompts)
	}
	p, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summarize", Arguments: map[string]string{"text": "MCP gateways aggregate servers."}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 1 || !strings.Contains(p.Messages[0].Content.(*mcp.TextContent).Text, "MCP gateways aggregate servers.") {
		t.Errorf("summarize prompt = %+v", p.Messages)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summarize"}); err == nil {
		t.Errorf("summarize without text did not fail")
	}
}
