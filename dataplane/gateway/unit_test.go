package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// TestObjectIndex checks that lookups through an objectIndex answer as
// rpc.RawField and rpc.StringField do, over one object after another (the index
// must follow the object it is asked about), and past the members it holds.
func TestObjectIndex(t *testing.T) {
	var many strings.Builder
	many.WriteString("{")
	for i := range 12 {
		fmt.Fprintf(&many, `"k%d":"v%d",`, i, i)
	}
	many.WriteString(`"name":"last"}`)
	objs := []string{
		`{"name":"fx__echo","arguments":{"name":"inner"},"_meta":{"io.modelcontextprotocol/clientCapabilities":{"roots":{}}}}`,
		`{"name":"a","name":"b"}`,
		`{"\u006eame":"esc\"aped","uri":"file:///x"}`,
		`{"name":1,"requestState":"s"}`,
		` { "name" : "spaced" } `,
		`{}`,
		`[1]`,
		``,
		many.String(),
	}
	var x objectIndex
	for round := range 2 {
		for _, obj := range objs {
			b := []byte(obj)
			for _, key := range []string{"name", "arguments", "_meta", "uri", "requestState", "k11", "absent"} {
				raw, rok := x.raw(b, key)
				wantRaw, wantROK := rpc.RawField(b, key)
				if string(raw) != string(wantRaw) || rok != wantROK {
					t.Errorf("round %d: raw(%s, %q) = %s, %v; want %s, %v", round, obj, key, raw, rok, wantRaw, wantROK)
				}
				wantStr, wantSOK := rpc.StringField(b, key)
				for range 2 { // the second from the last-string memo
					str, sok := x.str(b, key)
					if str != wantStr || sok != wantSOK {
						t.Errorf("round %d: str(%s, %q) = %q, %v; want %q, %v", round, obj, key, str, sok, wantStr, wantSOK)
					}
				}
			}
		}
	}
}

// TestForwardParams checks the one-pass forwardParams against what it
// stands for: rpc.ReplaceStringField of the name, then stripRequestMeta.
func TestForwardParams(t *testing.T) {
	var many strings.Builder
	many.WriteString(`{"name":"n",`)
	for i := range 10 {
		fmt.Fprintf(&many, `"k%d":%d,`, i, i)
	}
	many.WriteString(`"_meta":{"io.modelcontextprotocol/clientInfo":{},"progressToken":1}}`)
	objs := []string{
		`{"name":"fx__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"progressToken":"p"}}`,
		`{"_meta":{"io.modelcontextprotocol/clientInfo":{"name":"c"}},"name":"a","name":"b"}`,
		`{"name":"x","arguments":{"s":"\"io.modelcontextprotocol/"}}`,
		`{"name":"x","_meta":"io.modelcontextprotocol/ not an object"}`,
		`{"name":"x","_meta":{"progressToken":2}}`,
		`{"arguments":{}}`,
		`{}`,
		many.String(),
	}
	for _, obj := range objs {
		for _, rename := range []string{"", "echo", "q\"uote"} {
			for _, strip := range []bool{false, true} {
				b := []byte(obj)
				want := b
				if rename != "" {
					want = rpc.ReplaceStringField(nil, want, "name", rename)
				}
				if strip {
					want = stripRequestMeta(want)
				}
				var x objectIndex
				if got := x.forwardParams(b, rename, strip); string(got) != string(want) {
					t.Errorf("forwardParams(%s, %q, %v) = %s, want %s", obj, rename, strip, got, want)
				}
			}
		}
	}
}

func TestRouteTool(t *testing.T) {
	cfg := testConfig(
		&metamcpv1.NamespaceMember{Server: "alpha"},
		&metamcpv1.NamespaceMember{Server: "beta", Prefix: proto.String("alphax")}, // longer prefix that starts like alpha's (one that extends it with the separator is refused)
		&metamcpv1.NamespaceMember{Server: "gamma", Prefix: proto.String(""), DenyTools: []string{"secret*"}, ToolOverrides: map[string]*metamcpv1.ToolOverride{
			"search": {Name: "find"},
			"drop":   {Disabled: true},
		}},
	)
	c, _, err := snapshot.Compile(&metamcpv1.Snapshot{Revision: 1, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ep := c.Endpoints["main"]
	tests := []struct {
		exposed, server, upstream string
		ok                        bool
	}{
		{"alpha__echo", "alpha", "echo", true},
		{"alphax__echo", "beta", "echo", true},
		{"alpha__x__echo", "alpha", "x__echo", true},
		{"echo", "gamma", "echo", true},
		{"find", "gamma", "search", true},
		{"search", "", "", false}, // renamed away
		{"drop", "", "", false},   // disabled
		{"secret_sauce", "", "", false},
		{"alpha__", "gamma", "alpha__", true}, // not alpha's: nothing after the separator
	}
	for _, tc := range tests {
		m, up, ok := routeTool(ep, tc.exposed)
		server := ""
		if m != nil {
			server = m.Server.GetName()
		}
		if ok != tc.ok || (ok && (server != tc.server || up != tc.upstream)) {
			t.Errorf("routeTool(%q) = %s/%s %v, want %s/%s %v", tc.exposed, server, up, ok, tc.server, tc.upstream, tc.ok)
		}
	}
}

func TestStripRequestMeta(t *testing.T) {
	long := strings.Repeat("t", 600)
	tests := []struct{ in, want string }{
		{`{"name":"x"}`, `{"name":"x"}`},
		{`{"name":"x","_meta":{"progressToken":1,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}`, `{"name":"x","_meta":{"progressToken":1}}`},
		{`{"_meta":{"io.modelcontextprotocol/clientInfo":{"name":"c"}},"arguments":{"io.modelcontextprotocol/x":1}}`, `{"_meta":{},"arguments":{"io.modelcontextprotocol/x":1}}`},
		{`{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"t"}}}`, `{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"t"}}}`},
		// Kept members longer than stripRequestMeta's stack buffer.
		{`{"_meta":{"progressToken":"` + long + `","io.modelcontextprotocol/logLevel":"debug","x":1}}`, `{"_meta":{"progressToken":"` + long + `","x":1}}`},
	}
	for _, tc := range tests {
		if got := string(stripRequestMeta([]byte(tc.in))); got != tc.want {
			t.Errorf("stripRequestMeta(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestWithServerInfo(t *testing.T) {
	g := &Gateway{info: serverInfo("1.2.3")}
	g.infoMeta = serverInfoMeta(g.info)
	info := `"io.modelcontextprotocol/serverInfo":{"name":"metamcp","version":"1.2.3"}`
	// responseBytes also starts a result that has no resultType with the
	// one 2026-07-28 requires; one that has it keeps it.
	const complete = `{"resultType":"complete",`
	for _, tc := range []struct{ name, result, want, wantResp string }{
		{"no _meta", `{"content":[]}`, `{"content":[],"_meta":{` + info + `}}`, complete + `"content":[],"_meta":{` + info + `}}`},
		{"empty result", `{}`, `{"_meta":{` + info + `}}`, complete + `"_meta":{` + info + `}}`},
		{"other _meta keys kept", `{"content":[],"_meta":{"a":1}}`, `{"content":[],"_meta":{"a":1,` + info + `}}`, complete + `"content":[],"_meta":{"a":1,` + info + `}}`},
		{"upstream's serverInfo replaced", `{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up"},"b":2}}`, `{"_meta":{` + info + `,"b":2}}`, complete + `"_meta":{` + info + `,"b":2}}`},
		{"resultType kept", `{"resultType":"input_required","inputRequests":{}}`, `{"resultType":"input_required","inputRequests":{},"_meta":{` + info + `}}`,
			`{"resultType":"input_required","inputRequests":{},"_meta":{` + info + `}}`},
		{"not an object", `[1]`, `[1]`, `[1]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(g.withServerInfo(json.RawMessage(tc.result))); got != tc.want {
				t.Errorf("withServerInfo(%s) = %s, want %s", tc.result, got, tc.want)
			}
			resp := string(g.responseBytes(json.RawMessage(`5`), json.RawMessage(tc.result), nil, true))
			if want := `{"jsonrpc":"2.0","id":5,"result":` + tc.wantResp + `}`; resp != want {
				t.Errorf("responseBytes = %s, want %s", resp, want)
			}
		})
	}
}

// TestUpstreamErrorAtLimit: a call refused because the server's sessions or
// processes are all in use says so, not that the upstream did not answer in
// time (it was never asked), even when the call's own deadline ended the wait.
func TestUpstreamErrorAtLimit(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err := &upstream.Error{Server: "fs", Err: &upstream.LimitError{Limit: 16, What: "processes", Field: "maxProcesses"}}
	got := upstreamError(ctx, "fs", err, 30*time.Second)
	if !strings.Contains(got.Message, `upstream "fs" is unavailable: all 16 processes its limits allow (limits.maxProcesses) are in use`) ||
		strings.Contains(got.Message, "in time (") {
		t.Errorf("at the limit: %q", got.Message)
	}
	if got := upstreamError(ctx, "fs", context.DeadlineExceeded, 30*time.Second); !strings.Contains(got.Message, "did not answer in time (30s)") {
		t.Errorf("a timeout: %q", got.Message)
	}
}
