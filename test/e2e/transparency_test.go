package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metamcp/metamcp/test/fixtures/fixture"
	"github.com/metamcp/metamcp/test/fixtures/rawmcp"
)

// TestTransparency puts the raw fixture (a hand-written Streamable HTTP MCP
// server answering with the fixed bytes of package rawmcp) behind a data
// plane process and drives the gateway with raw HTTP at session-based
// revisions and at 2026-07-28: tool results with an unknown content type,
// unknown fields at every level, custom _meta keys, structuredContent and
// isError; a JSON-RPC error with a custom code and structured data; a tool
// definition with an output schema and unknown fields; a resource read with
// caching hints; and, the other way, a request's unknown fields, arguments
// and _meta as the upstream receives them. A session-based client gets every byte as the upstream sent
// it; a 2026-07-28 client the same, save the gateway's own
// io.modelcontextprotocol/ keys in the result's _meta and the resultType
// "complete" that revision requires of every result.
func TestTransparency(t *testing.T) {
	fx := fixture.Build(t)
	rawURL := fixture.Start(t, fx, "rawhttp", "raw")
	cp := startControlPlane(t)
	dp := startDataPlane(t, cp, "dp-tp")
	cp.ok(t, "create", "server", "raw", "--url", rawURL)
	base, key := gatewayEndpoint(t, cp, dp, "tp", "raw")

	for _, version := range []string{"2025-11-25", "2025-06-18", "2026-07-28"} {
		t.Run(version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := &rawMCP{url: base + "/mcp", key: key}
			stateless := version >= "2026-07-28"
			if stateless {
				c.version = version
			} else {
				c.initialize(ctx, t, version)
			}
			// params adds the per-request _meta of 2026-07-28 to a stateless request.
			params := func(p string) string {
				if !stateless {
					return p
				}
				keys := `"io.modelcontextprotocol/protocolVersion":"` + version + `",` +
					`"io.modelcontextprotocol/clientInfo":{"name":"e2e-raw","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}`
				if strings.Contains(p, `"_meta":{`) {
					return strings.Replace(p, `"_meta":{`, `"_meta":{`+keys+",", 1)
				}
				if p == "{}" {
					return `{"_meta":{` + keys + "}}"
				}
				return strings.TrimSuffix(p, "}") + `,"_meta":{` + keys + "}}"
			}

			for _, tool := range []string{rawmcp.ToolHologram, rawmcp.ToolHologramError, rawmcp.ToolEscapes} {
				resp := c.call(ctx, t, "tools/call", params(`{"name":"raw__`+tool+`","arguments":{}}`))
				if resp.Error != nil {
					t.Errorf("tools/call raw__%s: error %s", tool, resp.Error)
					continue
				}
				checkTransparent(t, "tools/call raw__"+tool+" result", resp.Result, []byte(rawmcp.ToolResults[tool]), stateless)
			}

			// The request the upstream gets: only the name changes (and, at
			// 2026-07-28, the client's io.modelcontextprotocol/ keys go).
			sent := `{"name":"raw__echo_request","arguments":{"b":[1,{"c":null}],"a":"caf\u00e9 \u003c"},"x-param-extra":{"k":[true]},"_meta":{"com.example/req":"r1"}}`
			wantUp := strings.Replace(sent, "raw__echo_request", rawmcp.ToolEchoRequest, 1)
			resp := c.call(ctx, t, "tools/call", params(sent))
			var echoed struct {
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			}
			if err := json.Unmarshal(resp.Result, &echoed); err != nil || len(echoed.Content) != 1 {
				t.Errorf("tools/call raw__echo_request: %v %s %s", err, resp.Result, resp.Error)
			} else {
				got := echoed.Content[0].Text
				checkTransparent(t, "tools/call params as the upstream got them", []byte(got), []byte(wantUp), stateless)
				if strings.Contains(got, "io.modelcontextprotocol/") {
					t.Errorf("the client's per-request io.modelcontextprotocol/ _meta reached a 2025-11-25 upstream: %s", got)
				}
			}

			resp = c.call(ctx, t, "tools/call", params(`{"name":"raw__`+rawmcp.ToolRPCError+`","arguments":{}}`))
			if want := rawmcp.ToolErrors[rawmcp.ToolRPCError]; !bytes.Equal(resp.Error, []byte(want)) {
				t.Errorf("tools/call raw__%s: error\n got %s\nwant %s\n(result %s)", rawmcp.ToolRPCError, resp.Error, want, resp.Result)
			}

			// The tool definition: only the name changes (the prefix).
			resp = c.call(ctx, t, "tools/list", params(`{}`))
			if resp.Error != nil {
				t.Fatalf("tools/list: error %s", resp.Error)
			}
			got := findByName(t, resp.Result, "tools", "raw__hologram")
			want := findByName(t, json.RawMessage(rawmcp.ToolsList), "tools", "hologram")
			checkMembers(t, "tools/list raw__hologram", got, want, map[string]bool{"name": true}, false)

			uri := rawmcp.ResourceURI("raw")
			resp = c.call(ctx, t, "resources/read", params(`{"uri":"`+uri+`"}`))
			if resp.Error != nil {
				t.Errorf("resources/read %s: error %s", uri, resp.Error)
			} else {
				checkTransparent(t, "resources/read "+uri+" result", resp.Result, []byte(fmt.Sprintf(rawmcp.ReadResult, uri)), stateless)
			}
		})
	}
}

// checkTransparent compares a result as the client got it with the bytes
// the upstream sent: equal bytes for a session-based client; for a
// stateless one, every member's bytes equal, and _meta's members equal save
// the gateway's own io.modelcontextprotocol/ keys.
func checkTransparent(t *testing.T, what string, got, want []byte, stateless bool) {
	t.Helper()
	checkMembers(t, what, got, want, nil, stateless)
	if !stateless && !bytes.Equal(got, want) {
		t.Errorf("%s: not byte for byte the upstream's\n got %s\nwant %s", what, got, want)
	}
}

// checkMembers compares two JSON objects member by member, each member's
// raw bytes exactly, except the members named in skip. With stateless, the
// _meta members are compared the same way, ignoring the
// io.modelcontextprotocol/ keys that each hop's protocol layer owns (a _meta
// the upstream did not send may appear holding only those).
func checkMembers(t *testing.T, what string, got, want []byte, skip map[string]bool, stateless bool) {
	t.Helper()
	compareObjects(t, what, got, want, skip, stateless, false)
}

// compareObjects is checkMembers; reserved says this object is a _meta
// whose io.modelcontextprotocol/ keys are not compared.
func compareObjects(t *testing.T, what string, got, want []byte, skip map[string]bool, stateless, reserved bool) {
	t.Helper()
	g, w := objectMembers(t, what+" (got)", got), objectMembers(t, what+" (want)", want)
	isReserved := func(k string) bool { return reserved && strings.HasPrefix(k, "io.modelcontextprotocol/") }
	for k, wv := range w {
		if skip[k] || isReserved(k) {
			continue
		}
		gv, ok := g[k]
		switch {
		case !ok:
			t.Errorf("%s: member %q lost (want %s)\n got %s", what, k, wv, got)
		case k == "_meta" && stateless:
			compareObjects(t, what+" _meta", gv, wv, nil, false, true)
		case !bytes.Equal(gv, wv):
			t.Errorf("%s: member %q changed\n got %s\nwant %s", what, k, gv, wv)
		}
	}
	for k, gv := range g {
		if _, ok := w[k]; ok || skip[k] || isReserved(k) {
			continue
		}
		if k == "_meta" && stateless {
			compareObjects(t, what+" _meta", gv, []byte("{}"), nil, false, true)
			continue
		}
		if k == "resultType" && stateless && string(gv) == `"complete"` {
			continue // 2026-07-28 requires it; a session-based upstream sends none
		}
		t.Errorf("%s: member %q added: %s", what, k, gv)
	}
}

func objectMembers(t *testing.T, what string, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: not a JSON object (%v): %s", what, err, b)
	}
	return m
}

// findByName returns the element of list (a member of result) whose name is name.
func findByName(t *testing.T, result json.RawMessage, list, name string) json.RawMessage {
	t.Helper()
	var items []json.RawMessage
	if err := json.Unmarshal(objectMembers(t, list, result)[list], &items); err != nil {
		t.Fatalf("%s: %v in %s", list, err, result)
	}
	var names []string
	for _, it := range items {
		var n struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(it, &n)
		if n.Name == name {
			return it
		}
		names = append(names, n.Name)
	}
	slices.Sort(names)
	t.Fatalf("%s: no %q among %v", list, name, names)
	return nil
}
