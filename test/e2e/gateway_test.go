package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
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
	dp := startDataPlane(t, cp, "dp-1")

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

	// Without a key: 401 with the resource metadata pointer.
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Errorf("no API key: %d %q, want 401 with resource_metadata", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
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
	if left := processesRunning(t, metamcpBin, "demo-server"); len(left) > 0 {
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

// processesRunning lists the pids whose command line is exactly args, after a
// bounded wait for them to go.
func processesRunning(t *testing.T, args ...string) []string {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	var found []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		found = found[:0]
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, "cmdline"))
			if err == nil && string(b) == want {
				found = append(found, filepath.Base(d))
			}
		}
		if len(found) == 0 || time.Now().After(deadline) {
			return found
		}
		time.Sleep(100 * time.Millisecond)
	}
}
