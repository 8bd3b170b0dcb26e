package gateway

import (
	"context"
	"encoding/json"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/toolreport"
	"github.com/metamcp/metamcp/pkg/authz"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Per-caller authorization: an endpoint's access rules (compiled into
// snapshot.Endpoint.Policy) decide which tools, prompts and resources each
// principal may list and use. Lists are filtered after the gateway took its
// list_changed baselines, which stay the upstreams' view, shared by all
// callers; a change of the rules themselves is announced to every listener
// of the endpoint (accessChanged). Calls are decided before anything
// reaches the upstream.

// codeForbidden is the JSON-RPC error of a call the access rules refuse.
// The gateway's own code in the implementation-defined server-error range,
// so that a client can tell it from an upstream's error.
const codeForbidden = -32003

// authzItem describes a listed item for the access rules, nil when the item
// is not one they decide (it has no name).
func authzItem(c *call, k catalog.Kind, item json.RawMessage, rr *resourceRoutes) *authz.Item {
	it := &authz.Item{}
	var ok bool
	switch k {
	case catalog.Tools:
		it.Kind = authz.Tool
		if it.Name, ok = rpc.StringField(item, "name"); !ok {
			return nil
		}
		it.Annotations = authz.ParseAnnotations(item)
	case catalog.Prompts:
		it.Kind = authz.Prompt
		if it.Name, ok = rpc.StringField(item, "name"); !ok {
			return nil
		}
	case catalog.Resources:
		it.Kind = authz.Resource
		if it.Name, ok = rpc.StringField(item, "uri"); !ok {
			return nil
		}
	case catalog.Templates:
		it.Kind = authz.Resource
		if it.Name, ok = rpc.StringField(item, "uriTemplate"); !ok {
			return nil
		}
	default:
		return nil
	}
	it.Server = attribute(c.t.ep, k, item, rr)
	return it
}

// filterList returns the list result res as c's caller may see it, by the
// endpoint's access rules; res itself when the endpoint has none.
func (g *Gateway) filterList(c *call, k catalog.Kind, res json.RawMessage) json.RawMessage {
	pol := c.t.ep.Policy
	if pol == nil || len(res) == 0 {
		return res
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(res, &obj) != nil {
		return res
	}
	var items []json.RawMessage
	if json.Unmarshal(obj[k.Field], &items) != nil {
		return res
	}
	var rr *resourceRoutes
	if k == catalog.Resources || k == catalog.Templates {
		rr = g.routes.get(c.t)
	}
	kept := items[:0]
	for _, item := range items {
		it := authzItem(c, k, item, rr)
		if it == nil {
			continue
		}
		if pol.Decide(c.who, *it, nil).Allowed {
			kept = append(kept, item)
		}
	}
	if len(kept) == len(items) {
		return res
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return res
	}
	if len(kept) == 0 {
		b = []byte("[]")
	}
	obj[k.Field] = b
	out, err := json.Marshal(obj)
	if err != nil {
		return res
	}
	return out
}

// authorize decides a tools/call, prompts/get or resources/read by the
// endpoint's access rules. A refusal names the rule (or says that none
// allows it), never the upstream behind the item.
func (g *Gateway) authorize(ctx context.Context, c *call, msg *rpc.Message) *rpc.Error {
	pol := c.t.ep.Policy
	if pol == nil {
		return nil
	}
	it := authz.Item{}
	args := authz.NoArguments
	var ok bool
	switch msg.Method {
	case "tools/call":
		it.Kind = authz.Tool
		if it.Name, ok = c.params.str(msg.Params, "name"); !ok {
			return nil // refused as malformed further on
		}
		m, _, found := routeTool(c.t.ep, it.Name)
		if !found {
			return nil // refused as an unknown tool further on
		}
		it.Server = m.Server.GetName()
		rr := g.routes.get(c.t)
		tool, known := rr.Tool(it.Name)
		if !known {
			// A replica that has not listed the tool's server since the
			// config changed learns its tools first, once.
			g.learnToolParams(ctx, c, rr, m)
			tool, known = rr.Tool(it.Name)
		}
		it.Annotations, it.AnnotationsUnknown = tool.annotations, !known
		if a, ok := c.params.raw(msg.Params, "arguments"); ok && len(a) > 0 && a[0] == '{' {
			args = a
		}
	case "prompts/get":
		it.Kind = authz.Prompt
		if it.Name, ok = c.params.str(msg.Params, "name"); !ok {
			return nil
		}
		if m, _ := routeName(c.t.ep, it.Name); m != nil {
			it.Server = m.Server.GetName()
		}
	case "resources/read":
		it.Kind = authz.Resource
		if it.Name, ok = c.params.str(msg.Params, "uri"); !ok {
			return nil
		}
		if ms := g.resourceMembers(c, it.Name); len(ms) > 0 {
			it.Server = ms[0].Server.GetName()
		}
	default:
		return nil
	}
	d := pol.Decide(c.who, it, args)
	if d.Allowed && !d.Conditional {
		return nil
	}
	reason := d.Reason()
	if d.Allowed {
		// Undecided at call time: only unknown annotations leave a
		// condition so, and an unknown is never a grant.
		reason = "its access rules cannot be decided: the tool's annotations are not known (its server did not list it)"
	}
	g.log.Info("access refused", "endpoint", c.t.name, "principal", c.principal, "kind", it.Kind.String(), "name", it.Name, "rule", d.Rule)
	data, _ := json.Marshal(map[string]string{"endpoint": c.t.name, "rule": d.Rule, "reason": reason})
	return &rpc.Error{
		Code:    codeForbidden,
		Message: it.Kind.String() + " " + quote(it.Name) + " is not allowed for " + quote(c.principal) + " on endpoint " + quote(c.t.name) + ": " + reason,
		Data:    data,
	}
}

// accessPrint fingerprints an endpoint's access rules, to tell when they change.
func accessPrint(ep *snapshot.Endpoint) string {
	var b []byte
	for _, r := range ep.Endpoint.GetAccessRules() {
		m, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		b = append(b, m...)
		b = append(b, 0)
	}
	return string(b)
}

// accessChanged tells every client of endpoint t listening here that its
// lists may have changed: its access rules did, and so may what each
// caller sees, whatever the upstreams list.
func (g *Gateway) accessChanged(t target) {
	for _, a := range g.audiences(t) {
		for _, kk := range catalog.Groups {
			g.notifyListChanged(a, kk.Mask, kk.Method)
		}
	}
}

// reportTools hands a complete, unfiltered tools/list result to the tool report.
func (g *Gateway) reportTools(c *call, params, res json.RawMessage) {
	if g.opts.ToolReport == nil || len(res) == 0 {
		return
	}
	if cur, _ := rpc.StringField(params, "cursor"); cur != "" {
		return
	}
	if !g.opts.ToolReport.Due(c.t.name, c.t.snap.Revision) {
		return
	}
	var p struct {
		Tools      []json.RawMessage `json:"tools"`
		NextCursor string            `json:"nextCursor"`
	}
	if json.Unmarshal(res, &p) != nil || p.NextCursor != "" {
		return
	}
	tools := make([]*metamcpv1.ListedTool, 0, len(p.Tools))
	for _, item := range p.Tools {
		name, ok := rpc.StringField(item, "name")
		if !ok {
			continue
		}
		server := ""
		if m, _ := routeName(c.t.ep, name); m != nil {
			server = m.Server.GetName()
		}
		tools = append(tools, toolreport.Tool(name, server, item))
	}
	g.opts.ToolReport.Set(c.t.name, c.t.snap.Revision, tools)
}
