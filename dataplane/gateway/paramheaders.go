package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Mcp-Param headers (2026-07-28, SEP-2243). A tool's inputSchema may mark a
// string, integer or boolean property with "x-mcp-header": "Region"; a
// client calling that tool then mirrors the argument into the header
// Mcp-Param-Region, so that an intermediary can act on it without reading
// the body. The gateway acts on the body, so it refuses a call whose
// headers contradict it (-32020), as it does for Mcp-Method and Mcp-Name:
// a header whose argument is absent or null, one that does not decode, one
// whose value differs, and (when the request's Mcp-Protocol-Version header
// says 2026-07-28) one left out. Headers no annotation of the tool names
// are ignored.

// paramHeaderPrefix starts the name of every Mcp-Param header.
const paramHeaderPrefix = "Mcp-Param-"

// paramBinding is one x-mcp-header annotation of a tool: the argument at
// path (property names from inputSchema.properties down) is mirrored into
// the header Mcp-Param-{header}.
type paramBinding struct {
	path   []string
	header string
}

// schemaProperty holds what an inputSchema property says about Mcp-Param
// headers.
type schemaProperty struct {
	Type       json.RawMessage           `json:"type"`
	Header     json.RawMessage           `json:"x-mcp-header"`
	Properties map[string]schemaProperty `json:"properties"`
}

// toolParamBindings returns the x-mcp-header annotations of a listed tool,
// nil when it has none. One annotation the specification does not allow
// (on another type than string, integer or boolean, a name that is not an
// HTTP token, a name used twice) makes the tool's definition invalid: then
// none of its annotations is enforced.
func toolParamBindings(tool json.RawMessage) []paramBinding {
	if !bytes.Contains(tool, []byte("x-mcp-header")) {
		return nil
	}
	var t struct {
		InputSchema schemaProperty `json:"inputSchema"`
	}
	if json.Unmarshal(tool, &t) != nil {
		return nil
	}
	var out []paramBinding
	seen := map[string]bool{}
	valid := true
	var walk func(props map[string]schemaProperty, prefix []string, depth int)
	walk = func(props map[string]schemaProperty, prefix []string, depth int) {
		if depth > 16 {
			return
		}
		for name, p := range props {
			path := append(append([]string(nil), prefix...), name)
			if len(p.Header) > 0 {
				var header, typ string
				if json.Unmarshal(p.Header, &header) != nil || json.Unmarshal(p.Type, &typ) != nil ||
					(typ != "string" && typ != "integer" && typ != "boolean") || !snapshot.IsHTTPToken(header) || seen[strings.ToLower(header)] {
					valid = false
					return
				}
				seen[strings.ToLower(header)] = true
				out = append(out, paramBinding{path: path, header: header})
			}
			walk(p.Properties, path, depth+1)
		}
	}
	walk(t.InputSchema.Properties, nil, 0)
	if !valid {
		return nil
	}
	return out
}

// paramHeaders returns the request's Mcp-Param headers by their name after
// the prefix, lower-cased; nil when it has none.
func paramHeaders(h http.Header) map[string]string {
	var out map[string]string
	for k, v := range h {
		if len(k) > len(paramHeaderPrefix) && strings.EqualFold(k[:len(paramHeaderPrefix)], paramHeaderPrefix) && len(v) > 0 {
			if out == nil {
				out = make(map[string]string, 2)
			}
			out[strings.ToLower(k[len(paramHeaderPrefix):])] = v[0]
		}
	}
	return out
}

// checkParamHeaders checks a 2026-07-28 tools/call's Mcp-Param headers
// against its arguments, by the tool's annotations as its upstream listed
// them. A request whose Mcp-Protocol-Version header says 2026-07-28 must
// send the header of every annotated argument it gives (that revision
// requires it: a filter on a header is not to be passed by leaving it
// out); one that gives its version in _meta alone is checked only for the
// headers it sends. A replica that has not listed the tool's server since
// its config changed lists that server's tools first, once (every
// tools/list through the replica records the annotations again). When
// that fails, or the server did not list the tool, nothing is checked and
// the call goes on to fail or succeed on its own.
func (g *Gateway) checkParamHeaders(ctx context.Context, c *call, r *http.Request, params json.RawMessage) *rpc.Error {
	headers := paramHeaders(r.Header)
	required := standardHeadersRequired(r)
	if headers == nil && !required {
		return nil
	}
	name, ok := c.params.str(params, "name")
	if !ok {
		return nil
	}
	m, _, _ := routeTool(c.t.ep, name)
	if m == nil {
		return nil // refused as an unknown tool
	}
	rr := g.routes.get(c.t)
	tool, known := rr.Tool(name)
	if !known {
		g.learnToolParams(ctx, c, rr, m)
		if tool, known = rr.Tool(name); !known {
			return nil
		}
	}
	if len(tool.params) == 0 {
		return nil
	}
	args, _ := c.params.raw(params, "arguments")
	return matchParamHeaders(headers, tool.params, args, required)
}

// maxLearnPages bounds the tools/list pages read to learn annotations.
const maxLearnPages = 20

// learnToolParams lists m's tools, page by page, for the annotations that
// rewriteItem records in rr: once per revision, endpoint and server when
// it succeeds; concurrent calls wait for one listing. Only m is asked, so
// a slow server holds up no call to another.
func (g *Gateway) learnToolParams(ctx context.Context, c *call, rr *resourceRoutes, m *snapshot.Member) {
	server := m.Server.GetName()
	rr.learnMu.Lock()
	l := rr.learning[server]
	if l == nil {
		if rr.learning == nil {
			rr.learning = map[string]*learnState{}
		}
		l = &learnState{}
		rr.learning[server] = l
	}
	rr.learnMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	index := slices.Index(c.t.ep.Members, m)
	j := listJob{index: index, member: m}
	for range maxLearnPages {
		p := g.fetchPage(ctx, c, catalog.Tools, j)
		if p.err != nil {
			return
		}
		for _, item := range p.items {
			g.rewriteItem(c, catalog.Tools, j, item, rr)
		}
		if p.next == "" {
			break
		}
		j.cursor = p.next
	}
	l.done = true
}

// learnState is learnToolParams' state for one server.
type learnState struct {
	mu   sync.Mutex // held while the server's tools are listed
	done bool       // they were, to the end
}

// matchParamHeaders checks headers (from paramHeaders) against the
// arguments object args for each binding; with required, the header of an
// argument given as a string, integer or boolean must be there.
func matchParamHeaders(headers map[string]string, bindings []paramBinding, args json.RawMessage, required bool) *rpc.Error {
	for _, b := range bindings {
		hv := headers[strings.ToLower(b.header)]
		arg, found := argumentAt(args, b.path)
		where := strings.Join(b.path, ".")
		if hv == "" {
			if required && found && isPrimitive(arg) {
				return &rpc.Error{Code: codeHeaderMismatch, Message: "missing the " + paramHeaderPrefix + b.header + " header, which protocol version 2026-07-28 requires with the argument " + quote(where) + " (the tool's x-mcp-header)"}
			}
			continue
		}
		if !found || string(arg) == "null" {
			return paramMismatch(b.header, "is sent, but the argument "+quote(where)+" is absent or null")
		}
		decoded, ok := decodeParamHeader(hv)
		if !ok {
			return paramMismatch(b.header, "is not valid Base64 inside =?base64?...?=")
		}
		if !paramEqual(decoded, arg) {
			return paramMismatch(b.header, quote(hv)+" does not match the argument "+quote(where))
		}
	}
	return nil
}

func paramMismatch(header, why string) *rpc.Error {
	return &rpc.Error{Code: codeHeaderMismatch, Message: "header mismatch: " + paramHeaderPrefix + header + " " + why}
}

// argumentAt returns the raw value at path in the arguments object.
func argumentAt(args json.RawMessage, path []string) (json.RawMessage, bool) {
	cur := args
	for _, key := range path {
		if len(cur) == 0 || cur[0] != '{' {
			return nil, false
		}
		v, ok := rpc.RawField(cur, key)
		if !ok {
			return nil, false
		}
		cur = v
	}
	return cur, true
}

// decodeParamHeader decodes a value wrapped as =?base64?...?=; any other
// value is literal.
func decodeParamHeader(v string) (string, bool) {
	inner, ok := strings.CutPrefix(v, "=?base64?")
	if !ok {
		return v, true
	}
	inner, ok = strings.CutSuffix(inner, "?=")
	if !ok {
		return v, true
	}
	b, err := base64.StdEncoding.DecodeString(inner)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// isPrimitive reports whether a raw argument is one a Mcp-Param header can
// carry: a string, a boolean or an integer.
func isPrimitive(arg json.RawMessage) bool {
	if len(arg) == 0 {
		return false
	}
	if arg[0] == '"' || string(arg) == "true" || string(arg) == "false" {
		return true
	}
	_, ok := safeInteger(string(arg))
	return ok
}

// safeInteger parses s as an integer that a float64 holds exactly (42.0
// is one); false for anything else.
func safeInteger(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53-1
}

// paramEqual compares a decoded header value with the raw argument: a
// string by its text, a boolean as true or false, an integer by number (42
// and 42.0 agree). Any other argument (an object, an array, a fraction)
// matches no header.
func paramEqual(hv string, arg json.RawMessage) bool {
	switch {
	case len(arg) == 0:
		return false
	case arg[0] == '"':
		var s string
		return json.Unmarshal(arg, &s) == nil && s == hv
	case string(arg) == "true" || string(arg) == "false":
		return hv == string(arg)
	}
	body, ok := safeInteger(string(arg))
	if !ok {
		return false
	}
	h, err := strconv.ParseFloat(strings.TrimSpace(hv), 64)
	return err == nil && h == body
}

// requestMeta is what a request of c to m's 2026-07-28 upstream carries
// besides its params: the client's capabilities, and for a tools/call the
// Mcp-Param headers of the tool's annotated arguments, which that revision
// requires (the upstream refuses the call without them). The annotations
// are the upstream's own, as listed (learnt once when they were not).
func (g *Gateway) requestMeta(ctx context.Context, c *call, m *snapshot.Member, method string, params json.RawMessage) *upstream.RequestMeta {
	meta := &upstream.RequestMeta{Capabilities: c.caps}
	if method != "tools/call" || c.tool == "" || c.t.ep == nil {
		return meta
	}
	rr := g.routes.get(c.t)
	tool, known := rr.Tool(c.tool)
	if !known {
		g.learnToolParams(ctx, c, rr, m)
		if tool, known = rr.Tool(c.tool); !known {
			return meta
		}
	}
	if len(tool.params) == 0 {
		return meta
	}
	args, _ := rpc.RawField(params, "arguments")
	for _, b := range tool.params {
		arg, ok := argumentAt(args, b.path)
		if !ok || !isPrimitive(arg) {
			continue
		}
		v := string(arg)
		if arg[0] == '"' {
			if json.Unmarshal(arg, &v) != nil {
				continue
			}
		}
		if meta.ParamHeaders == nil {
			meta.ParamHeaders = make(map[string]string, len(tool.params))
		}
		meta.ParamHeaders[b.header] = upstream.EncodeHeaderValue(v)
	}
	return meta
}
