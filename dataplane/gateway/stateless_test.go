package gateway

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestStatelessRequestRules: what 2026-07-28 (SEP-2575) requires of a
// request without a session, and the HTTP status of each refusal: the
// MCP-Protocol-Version header, and in params._meta the same protocolVersion,
// a supported one, and the client's capabilities; the session-based methods
// that revision dropped, and unknown ones, get 404 and -32601. The official
// conformance suite checks the same (test/e2e TestConformanceSuite).
func TestStatelessRequestRules(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	const (
		v    = `"io.modelcontextprotocol/protocolVersion":"2026-07-28"`
		caps = `"io.modelcontextprotocol/clientCapabilities":{}`
	)
	req := func(method, meta string) string {
		if meta == "" {
			return `{"jsonrpc":"2.0","id":4,"method":"` + method + `","params":{}}`
		}
		return `{"jsonrpc":"2.0","id":4,"method":"` + method + `","params":{"_meta":{` + meta + `}}}`
	}
	for _, tc := range []struct {
		name, body, header string
		wantStatus         int
		want               []string
	}{
		{"conforming", req("tools/list", v+","+caps), "2026-07-28", 200, []string{`{"resultType":"complete",`, `"tools":[`}},
		{"protocolVersion with an escape", req("tools/list", `"io.modelcontextprotocol/protocolVersion":"2026\u002d07-28",`+caps), "2026-07-28", 200, []string{`"tools":[`}},
		{"protocolVersion not a string", req("tools/list", `"io.modelcontextprotocol/protocolVersion":20260728,`+caps), "2026-07-28", 400, []string{`"code":-32602`}},
		{"version in _meta alone", req("tools/list", v+","+caps), "", 400, []string{`"code":-32020`, "missing the MCP-Protocol-Version header"}},
		{"no _meta", req("tools/list", ""), "2026-07-28", 400, []string{`"code":-32602`, "missing params._meta"}},
		{"no protocolVersion in _meta", req("tools/list", caps), "2026-07-28", 400, []string{`"code":-32602`, "io.modelcontextprotocol/protocolVersion"}},
		{"header and _meta differ", req("server/discover", `"io.modelcontextprotocol/protocolVersion":"v999.0.0",`+caps), "2026-07-28", 400,
			[]string{`"code":-32020`, `MCP-Protocol-Version \"2026-07-28\" does not match`}},
		{"unsupported version", req("server/discover", `"io.modelcontextprotocol/protocolVersion":"v999.0.0",`+caps), "v999.0.0", 400,
			[]string{`"code":-32022`, `"supported":["2026-07-28","2025-11-25","2025-06-18","2025-03-26"]`, `"requested":"v999.0.0"`}},
		{"no clientCapabilities", req("tools/list", v), "2026-07-28", 400, []string{`"code":-32602`, "io.modelcontextprotocol/clientCapabilities"}},
		{"clientCapabilities not an object", req("tools/list", v+`,"io.modelcontextprotocol/clientCapabilities":[]`), "2026-07-28", 400,
			[]string{`"code":-32602`, "io.modelcontextprotocol/clientCapabilities"}},
		{"clientInfo not an object", req("tools/list", v+","+caps+`,"io.modelcontextprotocol/clientInfo":"me"`), "2026-07-28", 400,
			[]string{`"code":-32602`, "io.modelcontextprotocol/clientInfo"}},
		{"initialize", req("initialize", v+","+caps), "2026-07-28", 404, []string{`"code":-32601`, "server/discover"}},
		{"ping", req("ping", v+","+caps), "2026-07-28", 404, []string{`"code":-32601`}},
		{"logging/setLevel", req("logging/setLevel", v+","+caps), "2026-07-28", 404, []string{`"code":-32601`, "io.modelcontextprotocol/logLevel"}},
		{"resources/subscribe", req("resources/subscribe", v+","+caps), "2026-07-28", 404, []string{`"code":-32601`, "subscriptions/listen"}},
		{"resources/unsubscribe", req("resources/unsubscribe", v+","+caps), "2026-07-28", 404, []string{`"code":-32601`}},
		{"unknown method", req("unknown/method", v+","+caps), "2026-07-28", 404, []string{`"code":-32601`}},
		{"invalid params", `{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{"_meta":{` + v + "," + caps + `}}}`, "2026-07-28", 400,
			[]string{`"code":-32602`}},
	} {
		hh := map[string]string{"Authorization": "Bearer " + keyAlice}
		if tc.header != "" {
			hh[headerProtocolVersion] = tc.header
		}
		status, _, body := post(t, h.url("main", "mcp"), tc.body, hh)
		if status != tc.wantStatus {
			t.Errorf("%s: status %d (%s), want %d", tc.name, status, body, tc.wantStatus)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: %s, want it to hold %s", tc.name, body, w)
			}
		}
		if status != 200 && !strings.Contains(body, `"id":4`) {
			t.Errorf("%s: the error %s does not carry the request's id", tc.name, body)
		}
	}

	// The unsupported-version error lists what server/discover does.
	_, _, body := post(t, h.url("main", "mcp"), withMeta(`{"jsonrpc":"2.0","id":5,"method":"server/discover"}`),
		map[string]string{"Authorization": "Bearer " + keyAlice, headerProtocolVersion: "2026-07-28"})
	var d struct {
		Result struct {
			ResultType        string   `json:"resultType"`
			SupportedVersions []string `json:"supportedVersions"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(body), &d); err != nil || d.Result.ResultType != "complete" ||
		!slices.Equal(d.Result.SupportedVersions, streamableVersions) {
		t.Errorf("server/discover: %s, want resultType complete and supportedVersions %v", body, streamableVersions)
	}

	// A session's results and errors are as before: no resultType, and 200
	// for an unknown method.
	status, rh, _ := post(t, h.url("main", "mcp"), initBody, map[string]string{"Authorization": "Bearer " + keyAlice})
	sid := rh.Get(headerSessionID)
	if status != 200 || sid == "" {
		t.Fatalf("initialize: %d, session %q", status, sid)
	}
	sh := map[string]string{"Authorization": "Bearer " + keyAlice, headerSessionID: sid, headerProtocolVersion: "2025-06-18"}
	if status, _, body := post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","id":6,"method":"tools/list"}`, sh); status != 200 || strings.Contains(body, "resultType") {
		t.Errorf("session tools/list: %d %s, want 200 without resultType", status, body)
	}
	if status, _, body := post(t, h.url("main", "mcp"), `{"jsonrpc":"2.0","id":7,"method":"unknown/method"}`, sh); status != 200 || !strings.Contains(body, `"code":-32601`) {
		t.Errorf("session unknown method: %d %s, want 200 with -32601", status, body)
	}
}
