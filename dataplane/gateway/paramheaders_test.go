package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// locateSchema has two valid x-mcp-header annotations, one nested.
const locateSchema = `{"type":"object","properties":{
	"region":{"type":"string","x-mcp-header":"Region"},
	"zone":{"type":"object","properties":{"id":{"type":"integer","x-mcp-header":"Zone-Id"}}},
	"note":{"type":"string"}}}`

// paramServers is defaultServers with alpha offering a tool "locate"
// whose inputSchema is locateSchema.
func paramServers(t *testing.T) map[string]*mcp.Server {
	servers := defaultServers(t)
	servers["alpha"].AddTool(&mcp.Tool{Name: "locate", Description: "Says where", InputSchema: json.RawMessage(locateSchema)},
		func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "located " + string(req.Params.Arguments)}}}, nil
		})
	return servers
}

// TestParamHeaders: a 2026-07-28 tools/call whose Mcp-Param headers
// contradict its arguments is refused with -32020, by the annotations the
// upstream listed; the replica lists the tools itself when no client did.
func TestParamHeaders(t *testing.T) {
	h := newHarness(t, testConfig(), paramServers(t), nil)
	call := func(tool, args string) string {
		return `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`
	}
	for _, tc := range []struct {
		name       string
		tool, args string
		headers    map[string]string
		wantStatus int
		want       string
	}{
		{"headers agree", "alpha__locate", `{"region":"eu-west","zone":{"id":42}}`,
			map[string]string{"Mcp-Param-Region": "eu-west", "Mcp-Param-Zone-Id": "42"}, 200, `located`},
		{"header name in another case, integer as 42.0", "alpha__locate", `{"region":"eu-west","zone":{"id":42}}`,
			map[string]string{"mcp-param-region": "eu-west", "MCP-PARAM-ZONE-ID": "42.0"}, 200, `located`},
		{"Base64-wrapped value", "alpha__locate", `{"region":" é "}`,
			map[string]string{"Mcp-Param-Region": "=?base64?IMOpIA==?="}, 200, `located`},
		{"no Mcp-Param header, no annotated argument", "alpha__locate", `{"note":"n"}`, nil, 200, `located`},
		{"a header no annotation names", "alpha__locate", `{"note":"n"}`,
			map[string]string{"Mcp-Param-Note": "anything"}, 200, `located`},
		{"a header left out", "alpha__locate", `{"region":"eu-west","zone":{"id":42}}`,
			map[string]string{"Mcp-Param-Zone-Id": "42"}, 400, `missing the Mcp-Param-Region header`},
		{"a request that gives its version in _meta alone", "alpha__locate",
			`{"region":"eu-west"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`,
			map[string]string{headerProtocolVersion: ""}, 400, `missing the MCP-Protocol-Version header`},
		{"a tool without annotations", "alpha__echo", `{"text":"x"}`,
			map[string]string{"Mcp-Param-Region": "eu-west"}, 200, `alpha:x`},
		{"another string", "alpha__locate", `{"region":"eu-west"}`,
			map[string]string{"Mcp-Param-Region": "us-east"}, 400, `Mcp-Param-Region \"us-east\" does not match the argument \"region\"`},
		{"another integer", "alpha__locate", `{"zone":{"id":42}}`,
			map[string]string{"Mcp-Param-Zone-Id": "43"}, 400, `"code":-32020`},
		{"a header for an absent argument", "alpha__locate", `{"note":"n"}`,
			map[string]string{"Mcp-Param-Region": "eu-west"}, 400, `the argument \"region\" is absent or null`},
		{"a header for a null argument", "alpha__locate", `{"region":null}`,
			map[string]string{"Mcp-Param-Region": "eu-west"}, 400, `"code":-32020`},
		{"invalid Base64", "alpha__locate", `{"region":"eu-west"}`,
			map[string]string{"Mcp-Param-Region": "=?base64?***?="}, 400, `not valid Base64`},
		{"a number where the schema says string", "alpha__locate", `{"region":7}`,
			map[string]string{"Mcp-Param-Region": "7"}, 200, `located`},
		{"an object where the schema says string", "alpha__locate", `{"region":{"a":1}}`,
			map[string]string{"Mcp-Param-Region": "{\"a\":1}"}, 400, `"code":-32020`},
	} {
		hh := map[string]string{headerProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tc.tool, "Authorization": "Bearer " + keyAlice}
		for k, v := range tc.headers {
			hh[k] = v
			if v == "" {
				delete(hh, k)
			}
		}
		status, _, body := post(t, h.url("main", "mcp"), withMeta(call(tc.tool, tc.args)), hh)
		if status != tc.wantStatus || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d with %s", tc.name, status, body, tc.wantStatus, tc.want)
		}
	}
}

// headerRecorder keeps the Mcp-Param headers of the requests it sends.
type headerRecorder struct {
	keyTransport
	mu   sync.Mutex
	seen []string
}

func (r *headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	for k, v := range req.Header {
		if strings.HasPrefix(k, paramHeaderPrefix) {
			r.seen = append(r.seen, k+": "+v[0])
		}
	}
	r.mu.Unlock()
	return r.keyTransport.RoundTrip(req)
}

// TestParamHeadersGoSDKClient: a go-sdk client at 2026-07-28 sends the
// Mcp-Param headers the listed annotations ask for, and its calls pass.
func TestParamHeadersGoSDKClient(t *testing.T) {
	h := newHarness(t, testConfig(), paramServers(t), nil)
	rec := &headerRecorder{keyTransport: keyTransport{key: keyAlice}}
	client := mcp.NewClient(&mcp.Implementation{Name: "param-test", Version: "1"}, nil)
	ctx := testCtx(t)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: h.url("main", "mcp"), HTTPClient: &http.Client{Transport: rec}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.Close() }()
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "alpha__locate", Arguments: map[string]any{"region": "eu-west", "zone": map[string]any{"id": 7}}})
	if err != nil || res.IsError {
		t.Fatalf("call: %v %+v", err, res)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, want := range []string{"Mcp-Param-Region: eu-west", "Mcp-Param-Zone-Id: 7"} {
		if !slices.Contains(rec.seen, want) {
			t.Errorf("the client did not send %q (sent %q): the gateway's list lost the annotation", want, rec.seen)
		}
	}
}

func TestToolParamBindings(t *testing.T) {
	names := func(tool string) []string {
		var out []string
		for _, b := range toolParamBindings(json.RawMessage(tool)) {
			out = append(out, strings.Join(b.path, ".")+"="+b.header)
		}
		slices.Sort(out)
		return out
	}
	valid := `{"name":"t","inputSchema":{"type":"object","properties":{
		"a":{"type":"string","x-mcp-header":"A"},
		"obj":{"type":"object","properties":{"n":{"type":"boolean","x-mcp-header":"N"},"i":{"type":"integer","x-mcp-header":"I"}}},
		"plain":{"type":"string"}}}}`
	if got := names(valid); !slices.Equal(got, []string{"a=A", "obj.i=I", "obj.n=N"}) {
		t.Errorf("bindings = %q", got)
	}
	for _, bad := range []string{
		`{"type":"object","x-mcp-header":"Obj"}`,
		`{"type":"number","x-mcp-header":"Num"}`,
		`{"type":"string","x-mcp-header":"Has Space"}`,
		`{"type":"string","x-mcp-header":"a"}`, // A again, in another case
		`{"type":"string","x-mcp-header":5}`,
		`{"type":"string","x-mcp-header":""}`,
	} {
		tool := strings.Replace(valid, `"plain":{"type":"string"}`, `"bad":`+bad, 1)
		if got := names(tool); got != nil {
			t.Errorf("with %s: bindings = %q, want none (the tool is invalid)", bad, got)
		}
	}
	if got := names(`{"name":"plain","inputSchema":{"type":"object"}}`); got != nil {
		t.Errorf("a tool without annotations: %q", got)
	}
}

func TestParamEqual(t *testing.T) {
	for _, tc := range []struct {
		header, arg string
		want        bool
	}{
		{"x", `"x"`, true},
		{"x", `"y"`, false},
		{"true", `true`, true},
		{"True", `true`, false},
		{"42", `42`, true},
		{"42.0", `42`, true},
		{"42", `42.5`, false},
		{"9007199254740993", `9007199254740993`, false}, // past 2^53
		{"-3", `-3`, true},
		{"x", `{"a":1}`, false},
		{"x", `["x"]`, false},
	} {
		if got := paramEqual(tc.header, json.RawMessage(tc.arg)); got != tc.want {
			t.Errorf("paramEqual(%q, %s) = %v, want %v", tc.header, tc.arg, got, tc.want)
		}
	}
}

// TestParamHeadersLearnPerServer: while one server's tools are being listed
// for their annotations (here: a list that does not answer), a call to a
// tool of another server is checked and served.
func TestParamHeadersLearnPerServer(t *testing.T) {
	servers := paramServers(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := fixtureServer("slow", nil)
	slow.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/list" {
				once.Do(func() { close(entered) })
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return next(ctx, method, req)
		}
	})
	servers["slow"] = slow
	cfg := testConfig(&metamcpv1.NamespaceMember{Server: "slow"}, &metamcpv1.NamespaceMember{Server: "alpha"})
	for _, s := range cfg.Servers {
		s.Timeouts = nil // the harness's default: a minute
	}
	h := newHarness(t, cfg, servers, nil)
	hdr := func(tool string) map[string]string {
		return map[string]string{headerProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool, "Authorization": "Bearer " + keyAlice}
	}
	slowDone := make(chan string, 1)
	go func() {
		_, _, body := post(t, h.url("main", "mcp"), withMeta(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow__echo","arguments":{"text":"s"}}}`), hdr("slow__echo"))
		slowDone <- body
	}()
	select {
	case <-entered:
	case body := <-slowDone:
		t.Fatalf("slow__echo answered before slow's tools/list was asked: %s", body)
	case <-time.After(30 * time.Second):
		t.Fatal("slow's tools/list was not asked within 30s")
	}
	h2 := hdr("alpha__locate")
	h2["Mcp-Param-Region"] = "eu"
	status, _, body := post(t, h.url("main", "mcp"), withMeta(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"alpha__locate","arguments":{"region":"eu"}}}`), h2)
	if status != 200 || !strings.Contains(body, "located") {
		t.Errorf("alpha__locate while slow lists: %d %s", status, body)
	}
	close(release)
	if body := <-slowDone; !strings.Contains(body, "slow:s") {
		t.Errorf("slow__echo after its list: %s", body)
	}
}
