package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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

// mrtrUpstream is an upstream that speaks 2026-07-28 multi round-trip: its
// tool "ask" answers input_required (an elicitation) until called again
// with the answer and its requestState.
type mrtrUpstream struct {
	rounds atomic.Int32
}

func (u *mrtrUpstream) Session(context.Context, string, string) (upstream.Session, error) {
	return u, nil
}
func (u *mrtrUpstream) CloseClient(string) {}
func (u *mrtrUpstream) Server() string     { return "mrtr" }
func (u *mrtrUpstream) Info() *upstream.Info {
	return &upstream.Info{ProtocolVersion: version20260728, Capabilities: json.RawMessage(`{"tools":{}}`)}
}
func (u *mrtrUpstream) Notify(context.Context, string, json.RawMessage) error { return nil }

func (u *mrtrUpstream) Call(_ context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	switch method {
	case "tools/list":
		return json.RawMessage(`{"tools":[{"name":"ask","inputSchema":{"type":"object"}}]}`), nil
	case "tools/call":
		u.rounds.Add(1)
		state, _ := rpc.StringField(params, "requestState")
		if state != "upstream-s1" {
			return json.RawMessage(`{"resultType":"input_required","inputRequests":{"e1":{"method":"elicitation/create","params":{"message":"name?","requestedSchema":{"type":"object","properties":{"name":{"type":"string"}}}}}},"requestState":"upstream-s1"}`), nil
		}
		var p struct {
			InputResponses map[string]struct {
				Action  string         `json:"action"`
				Content map[string]any `json:"content"`
			} `json:"inputResponses"`
		}
		if err := json.Unmarshal(params, &p); err != nil {
			return nil, err
		}
		e := p.InputResponses["e1"]
		name, _ := e.Content["name"].(string)
		return json.RawMessage(`{"content":[{"type":"text","text":` + string(rpc.AppendString(nil, e.Action+" "+name)) + `}]}`), nil
	}
	return json.RawMessage(`{}`), nil
}

// TestUpstreamInputRequired: an upstream that answers input_required
// (2026-07-28) serves a session-based client, which the gateway asks with
// an elicitation/create request and whose answer it sends back upstream
// with the upstream's requestState; and a 2026-07-28 client, to which the
// result and the retry pass through unchanged.
func TestUpstreamInputRequired(t *testing.T) {
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "mrtr"})
	cfg.Servers = append(cfg.Servers, stdioServer("mrtr"))
	up := &mrtrUpstream{}
	h := newHarness(t, cfg, map[string]*mcp.Server{}, func(o *Options) { o.Pool = fixedPool(up) })
	for _, version := range []string{"2025-11-25", ""} {
		answer := "ann" + version
		cs := h.connectWith(t, "main", keyAlice, version, &mcp.ClientOptions{
			ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				if req.Params.Message != "name?" {
					t.Errorf("elicitation message %q", req.Params.Message)
				}
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": answer}}, nil
			},
		})
		before := up.rounds.Load()
		res, err := cs.CallTool(testCtx(t), &mcp.CallToolParams{Name: "mrtr__ask"})
		if err != nil {
			t.Fatalf("version %q: %v", version, err)
		}
		if got := res.Content[0].(*mcp.TextContent).Text; got != "accept "+answer {
			t.Errorf("version %q: result %q, want %q", version, got, "accept "+answer)
		}
		if n := up.rounds.Load() - before; n != 2 {
			t.Errorf("version %q: %d upstream calls, want 2", version, n)
		}
	}
}

// TestB2BadInput: malformed subscriptions/listen, resources/subscribe and
// input_required retries get clear errors, never a hang or an empty answer.
func TestB2BadInput(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	sid := ""
	post := func(session bool, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, h.url("main", "mcp"), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		if session {
			req.Header.Set(headerSessionID, sid)
			req.Header.Set(headerProtocolVersion, version20251125)
		} else {
			req.Header.Set(headerProtocolVersion, version20260728)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v := resp.Header.Get(headerSessionID); v != "" {
			sid = v
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("%s: status %d: %v", body, resp.StatusCode, err)
		}
		return m
	}
	req, _ := http.NewRequest(http.MethodPost, h.url("main", "mcp"), strings.NewReader(initBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sid = resp.Header.Get(headerSessionID)
	for _, tc := range []struct {
		session bool
		body    string
		want    string
	}{
		{false, `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{}}`, "params.notifications"},
		{false, `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":[]}}`, "invalid subscriptions/listen params"},
		{false, `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"fixture://alpha/readme"}}`, "subscriptions/listen"},
		{true, `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{}}`, "params.uri"},
		{true, `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"fixture://alpha/readme"}}`, "resources.subscribe"},
		{true, `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{}}}`, "2026-07-28"},
		{false, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__echo","requestState":"` + requestStatePrefix + `x","inputResponses":[]}}`, "from scratch"},
	} {
		body := tc.body
		if !tc.session {
			body = withMeta(body)
		}
		m := post(tc.session, body)
		e, _ := m["error"].(map[string]any)
		if msg, _ := e["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.body, m, tc.want)
		}
	}
	// Nothing to listen for: the listen request ends at once with its result.
	m := post(false, withMeta(`{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{}}}`))
	if res, _ := m["result"].(map[string]any); res["resultType"] != "complete" {
		t.Errorf("empty listen: %v", m)
	}
}

// TestInputRequiredGathersConcurrentRequests: requests an upstream makes
// at the same time, as go-sdk does for the input requests of one handler,
// reach a stateless client in one input_required round, and its answers in
// one retry complete the call.
func TestInputRequiredGathersConcurrentRequests(t *testing.T) {
	lh := newLiveHarness(t)
	mcp.AddTool(lh.alpha.s, &mcp.Tool{Name: "both", Description: "Asks for a name and the roots at once"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			// Bounded: a request the test leaves unanswered (when it
			// fails) must not hold the upstream server's Close.
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			var name string
			var roots int
			var errs [2]error
			wg.Add(2)
			go func() {
				defer wg.Done()
				res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "your name?", RequestedSchema: jsonSchemaName})
				if errs[0] = err; err == nil {
					name, _ = res.Content["name"].(string)
				}
			}()
			go func() {
				defer wg.Done()
				res, err := req.Session.ListRoots(ctx, nil) //nolint:staticcheck // roots still pass through
				if errs[1] = err; err == nil {
					roots = len(res.Roots)
				}
			}()
			wg.Wait()
			if err := errors.Join(errs[:]...); err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s with %d roots", name, roots)}}}, nil, nil
		})
	post := func(body string) map[string]any {
		t.Helper()
		status, _, resp := post(t, lh.url("main", "mcp"), body, map[string]string{headerProtocolVersion: version20260728, "Authorization": "Bearer " + keyBob})
		var m map[string]any
		if err := json.Unmarshal([]byte(resp), &m); err != nil {
			t.Fatalf("status %d: %s", status, resp)
		}
		return m
	}
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{},"roots":{}}}`
	// The two requests leave go-sdk microseconds apart, but on a loaded
	// machine the second may reach the gateway after the gathering gap:
	// then it comes in a second round. Either way each is asked once, and
	// the answers complete the call.
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__both","arguments":{},` + meta + `}}`
	asked := map[string]int{}
	var done map[string]any
	for round := 1; ; round++ {
		m := post(call)
		res, _ := m["result"].(map[string]any)
		if res["resultType"] != "input_required" {
			done = m
			break
		}
		reqs, _ := res["inputRequests"].(map[string]any)
		if len(reqs) == 0 || round > 2 {
			t.Fatalf("round %d: %v, want the two requests in at most two rounds", round, m)
		}
		answers := map[string]any{}
		for key, v := range reqs {
			method, _ := v.(map[string]any)["method"].(string)
			asked[method]++
			switch method {
			case "elicitation/create":
				answers[key] = map[string]any{"action": "accept", "content": map[string]any{"name": "ann"}}
			case "roots/list":
				answers[key] = map[string]any{"roots": []any{map[string]any{"uri": "file:///a"}, map[string]any{"uri": "file:///b"}}}
			default:
				t.Fatalf("input request %v", v)
			}
		}
		ab, _ := json.Marshal(answers)
		state, _ := res["requestState"].(string)
		call = `{"jsonrpc":"2.0","id":` + strconv.Itoa(round+1) + `,"method":"tools/call","params":{"name":"alpha__both","arguments":{},"requestState":"` + state +
			`","inputResponses":` + string(ab) + `,` + meta + `}}`
	}
	if asked["elicitation/create"] != 1 || asked["roots/list"] != 1 {
		t.Errorf("input requests asked %v, want each once", asked)
	}
	res, _ := done["result"].(map[string]any)
	if content, _ := res["content"].([]any); len(content) != 1 || content[0].(map[string]any)["text"] != "ann with 2 roots" {
		t.Fatalf("after the retries: %v", done)
	}
}

// TestGatherInputsTakesQueuedRequests: requests already queued when a round
// is built go in that round, however late the gathering runs.
func TestGatherInputsTakesQueuedRequests(t *testing.T) {
	inputs := make(chan *inputWait, maxPendingInputs)
	for range 3 {
		inputs <- &inputWait{}
	}
	if got := gatherInputs(inputs, nil, nil); len(got) != 3 {
		t.Errorf("gathered %d requests, want the 3 queued", len(got))
	}
}
