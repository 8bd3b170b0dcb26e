package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/telemetry"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/identity"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// This file is the main call path: a client request from dispatch
// (authorization, rate limits) to the upstream that serves it; tools/call,
// prompts/get and resources/read take it, routed by exposed name (tools,
// prompts) or URI (resources, dispatch.go). The other methods are in
// dispatch.go, the input_required rounds in inputrequired.go.

// call is one client request being served.
type call struct {
	t target
	// principal is the caller's name (who.Name): sessions, upstream
	// sessions of stateless callers and records are keyed by it.
	principal string
	// who is the caller (nil only in calls the gateway makes for itself,
	// such as refreshing list baselines).
	who *identity.Principal
	// clientID is the downstream session id ("" for stateless requests).
	clientID  string
	version   string
	stateless bool
	clientIP  string
	reqBytes  int
	// caps are the client's capabilities: the session's, or for a stateless
	// request those its _meta declares.
	caps json.RawMessage
	// tool is the exposed name of the tool a tools/call calls, once routed:
	// a 2026-07-28 upstream gets the Mcp-Param headers of its annotations.
	tool string
	// bridge is the stateless call's bridge to input_required (inputrequired.go).
	bridge *bridge
	// params indexes the request's params for the steps that look into
	// them (see objectIndex).
	params objectIndex

	// For the call's audit record (record.go).
	clientInfo json.RawMessage // the client's Implementation object
	session    string          // the session's own id (session.Info.ID)
	trace      string          // the traceparent header
	hints      uint8           // the tool's annotations (toolHint bits)
	payload    json.RawMessage // the arguments, when the endpoint captures them
	// rateLimited: a rate-limit policy refused the call; shadowLimits are
	// the shadow policies that would have (ratelimit.go).
	rateLimited  bool
	shadowLimits []string
	// obs is what the data plane's telemetry knows of the request (nil without).
	obs *telemetry.Request
	// refused is set (stateless calls) when the gateway refused an upstream
	// request for a capability the client did not declare: the call's
	// answer is then that error, not what the upstream made of the refusal.
	// Made for stateless tools/call, prompts/get and resources/read (call
	// values are copied; the record is shared).
	refused *atomic.Pointer[rpc.Error]
}

// refuse records that an upstream request of c's call needed a capability
// the client did not declare (the first one stays).
func (c *call) refuse(msg *rpc.Message) {
	need := map[string]string{"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}[msg.Method]
	if need == "" {
		need = "elicitation" // URL-mode elicitation: the capability's url
	}
	if c.refused == nil {
		return
	}
	data := []byte(`{"requiredCapabilities":{"` + need + `":{}}}`)
	c.refused.CompareAndSwap(nil, &rpc.Error{
		Code:    codeMissingClientCapability,
		Message: "the upstream needs the " + need + " capability of the client (" + quote(msg.Method) + "), which the request's _meta " + quote(metaClientCaps) + " does not declare",
		Data:    data,
	})
}

// refusal is the error refuse recorded, or nil.
func (c *call) refusal() *rpc.Error {
	if c.refused == nil {
		return nil
	}
	return c.refused.Load()
}

var emptyObject = json.RawMessage("{}")

// dispatch serves one client request and returns its raw result or error.
func (g *Gateway) dispatch(ctx context.Context, c *call, msg *rpc.Message) (json.RawMessage, *rpc.Error) {
	if bridgeable(msg.Method) { // tools/call, prompts/get, resources/read
		if rerr := g.authorize(ctx, c, msg); rerr != nil {
			g.recordDenied(c, msg, rerr)
			return nil, rerr
		}
	}
	// Counted once authorized: a refused request takes no budget.
	if rerr := g.rateLimit(ctx, c, msg); rerr != nil {
		return nil, rerr
	}
	if bridgeable(msg.Method) {
		if c.stateless {
			c.refused = new(atomic.Pointer[rpc.Error])
			if needsBridge(c, msg) {
				res, rerr := g.bridgedCall(ctx, c, msg)
				if refused := c.refusal(); refused != nil {
					return nil, refused
				}
				return res, rerr
			}
			// Nothing the upstream might ask could reach this client: the
			// call runs here, and an upstream request gets an error.
			res, rerr := g.dispatchCall(ctx, c, msg)
			if refused := c.refusal(); refused != nil {
				return nil, refused
			}
			return res, rerr
		}
		return g.sessionCall(ctx, c, msg)
	}
	start := time.Now()
	res, rerr := g.dispatchOther(ctx, c, msg)
	g.record(c, msg.Method, "", "", start, res, rerr)
	return res, rerr
}

// dispatchCall is dispatch for the bridgeable methods.
func (g *Gateway) dispatchCall(ctx context.Context, c *call, msg *rpc.Message) (json.RawMessage, *rpc.Error) {
	switch msg.Method {
	case "tools/call":
		return g.callTool(ctx, c, msg.Params)
	case "prompts/get":
		return g.getPrompt(ctx, c, msg.Params)
	default:
		return g.readResource(ctx, c, msg.Params)
	}
}

// callTool serves tools/call: route by exposed name without asking any
// upstream, rewrite params.name, forward the raw params.
func (g *Gateway) callTool(ctx context.Context, c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	return g.forwardByName(ctx, c, "tools/call", "tool", params, func(ep *snapshot.Endpoint, name string) (*snapshot.Member, string) {
		m, upstreamName, _ := routeTool(ep, name)
		return m, upstreamName
	}, unknownTool)
}

// getPrompt serves prompts/get, routed by exposed prompt name.
func (g *Gateway) getPrompt(ctx context.Context, c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	return g.forwardByName(ctx, c, "prompts/get", "prompt", params, routeName, func(name string) *rpc.Error {
		return &rpc.Error{Code: codeInvalidParams, Message: "unknown prompt " + quote(name) + ": list the prompts with prompts/list"}
	})
}

// forwardByName serves a request whose params.name is an exposed (prefixed)
// name: route finds the member and the upstream's own name, params.name is
// rewritten to it, and the raw params go to that member's upstream.
func (g *Gateway) forwardByName(ctx context.Context, c *call, method, what string, params json.RawMessage,
	route func(*snapshot.Endpoint, string) (*snapshot.Member, string), unknown func(string) *rpc.Error,
) (json.RawMessage, *rpc.Error) {
	start := time.Now()
	name, ok := c.params.str(params, "name")
	if !ok {
		return nil, &rpc.Error{Code: codeInvalidParams, Message: method + " needs params.name (the " + what + "'s name)"}
	}
	m, upstreamName := route(c.t.ep, name)
	if m == nil || upstreamName == "" {
		e := unknown(name)
		if rm := c.t.ep.RefusedMember(name); rm != nil {
			e = &rpc.Error{Code: codeServerError, Message: what + " " + quote(name) + " is not available on this data plane: it does not run server " + quote(rm.Spec.GetServer()) + ": " + rm.Refused}
		}
		g.record(c, method, name, "", start, nil, e)
		return nil, e
	}
	rename := ""
	if upstreamName != name {
		rename = upstreamName
	}
	if method == "tools/call" {
		c.tool = name
	}
	if g.opts.Calls != nil {
		g.auditCall(ctx, c, method, m, name, upstreamName, params)
	}
	// A stateless request's _meta is stripped here, in the same pass as
	// the rename: callUpstream's strip then finds nothing to do.
	fwd := c.params.forwardParams(params, rename, c.stateless)
	res, rerr := g.callUpstream(ctx, c, m, method, fwd, g.callTimeout(m.Server))
	g.record(c, method, name, m.Server.GetName(), start, res, rerr)
	return res, rerr
}

// routeName finds the member whose prefix and separator start an exposed
// tool or prompt name (longest prefix first) and returns the rest.
func routeName(ep *snapshot.Endpoint, exposed string) (*snapshot.Member, string) {
	var best *snapshot.Member
	bestLen := -1
	sep := ep.Separator
	for _, m := range ep.Members {
		if m.Server == nil {
			continue
		}
		if m.Prefix == "" {
			if bestLen < 0 {
				best, bestLen = m, 0
			}
			continue
		}
		l := len(m.Prefix) + len(sep)
		if l > bestLen && len(exposed) > l && strings.HasPrefix(exposed, m.Prefix) && strings.HasPrefix(exposed[len(m.Prefix):], sep) {
			best, bestLen = m, l
		}
	}
	if best == nil {
		return nil, ""
	}
	return best, exposed[bestLen:]
}

// routeTool maps an exposed tool name to its member and upstream tool name,
// applying overrides in reverse and the namespace's filters.
func routeTool(ep *snapshot.Endpoint, exposed string) (*snapshot.Member, string, bool) {
	m, rest := routeName(ep, exposed)
	if m == nil || rest == "" {
		return nil, "", false
	}
	upstream := rest
	if ov := m.Spec.GetToolOverrides(); len(ov) > 0 {
		renamed := false
		for orig, o := range ov {
			if o.GetName() == rest {
				upstream, renamed = orig, true
				break
			}
		}
		if !renamed {
			// A renamed tool is not reachable under its old name.
			if o, ok := ov[rest]; ok && o.GetName() != "" && o.GetName() != rest {
				return nil, "", false
			}
		}
	}
	if !snapshot.ToolAllowed(m.Spec, upstream) {
		return nil, "", false
	}
	return m, upstream, true
}

func unknownTool(name string) *rpc.Error {
	return &rpc.Error{Code: codeInvalidParams, Message: "unknown tool " + quote(name) + ": list the tools with tools/list"}
}

// isToolError reports whether a raw tools/call result has "isError": true.
func isToolError(res json.RawMessage) bool {
	v, ok := rpc.RawField(res, "isError")
	return ok && string(v) == "true"
}

// session returns an upstream session for m within ctx.
func (g *Gateway) session(ctx context.Context, c *call, m *snapshot.Member) (upstream.Session, *rpc.Error) {
	if g.pool == nil {
		return nil, &rpc.Error{Code: codeServerError, Message: "upstream " + quote(m.Server.GetName()) + " is unavailable: the data plane has no upstream pool"}
	}
	clientID := c.clientID
	if clientID == "" && m.Server.GetSessionMode() == metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT {
		// Stateless (2026-07-28) requests have no session: a per_client
		// server gets one upstream session per endpoint and principal.
		clientID = "stateless/" + c.t.name + "/" + c.principal
	}
	s, err := g.pool.Session(ctx, m.Server.GetName(), clientID)
	if err != nil {
		return nil, upstreamError(ctx, m.Server.GetName(), err, 0)
	}
	return s, nil
}

// callUpstream sends one request to m's upstream, bounded by timeout.
func (g *Gateway) callUpstream(ctx context.Context, c *call, m *snapshot.Member, method string, params json.RawMessage, timeout time.Duration) (json.RawMessage, *rpc.Error) {
	if c.stateless {
		// From the params index when params are the request's; params
		// forwardParams made already are left at a quick check.
		params = c.params.forwardParams(params, "", true)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if r, ok := upstream.CallerFrom(ctx).(*relay); ok {
		// The client may cancel the call (notifications/cancelled).
		slot, live := r.track(cancel)
		if !live {
			return nil, &rpc.Error{Code: codeServerError, Message: msgCancelledByClient}
		}
		defer r.untrack(slot)
	}
	s, rerr := g.session(ctx, c, m)
	if rerr != nil {
		return nil, rerr
	}
	if upstream.Stateless(s) {
		// A 2026-07-28 upstream hears of the client with each request.
		ctx = upstream.WithRequestMeta(ctx, g.requestMeta(ctx, c, m, method, params))
	}
	res, err := s.Call(ctx, method, params)
	if err != nil {
		var re *rpc.Error
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, upstreamError(ctx, m.Server.GetName(), err, timeout)
	}
	return res, nil
}

func (g *Gateway) callTimeout(s *metamcpv1.Server) time.Duration {
	if d := s.GetTimeouts().GetCall(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return g.opts.DefaultCallTimeout
}

// upstreamError turns a failure to reach an upstream into a JSON-RPC error naming it.
func upstreamError(ctx context.Context, server string, err error, timeout time.Duration) *rpc.Error {
	var big *upstream.ResponseTooLargeError
	if errors.As(err, &big) {
		return &rpc.Error{Code: codeServerError, Message: "upstream " + quote(server) + " sent " + big.Error()}
	}
	var le *upstream.LimitError
	if errors.As(err, &le) {
		// Not "did not answer": it was never asked.
		return &rpc.Error{Code: codeServerError, Message: "upstream " + quote(server) + " is unavailable: " + le.Error()}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		msg := "upstream " + quote(server) + msgNoAnswerInTime
		if timeout > 0 {
			msg += " (" + timeout.String() + ")"
		}
		return &rpc.Error{Code: codeServerError, Message: msg}
	}
	if errors.Is(err, context.Canceled) {
		return &rpc.Error{Code: codeServerError, Message: "request to upstream " + quote(server) + msgCancelled}
	}
	cause := err
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Err != nil {
		cause = ue.Err
	}
	return &rpc.Error{Code: codeServerError, Message: "upstream " + quote(server) + " is unavailable: " + upstream.ClientText(server, cause)}
}
