package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// dispatchOther serves the requests that are not forwarded by name.
func (g *Gateway) dispatchOther(ctx context.Context, c *call, msg *rpc.Message) (json.RawMessage, *rpc.Error) {
	switch msg.Method {
	case "tools/list":
		return g.listObserved(ctx, c, catalog.Tools, msg.Params)
	case "prompts/list":
		return g.listObserved(ctx, c, catalog.Prompts, msg.Params)
	case "resources/list":
		return g.listObserved(ctx, c, catalog.Resources, msg.Params)
	case "resources/templates/list":
		return g.listObserved(ctx, c, catalog.Templates, msg.Params)
	case "completion/complete":
		return g.complete(ctx, c, msg.Params)
	case "ping":
		return emptyObject, nil
	case "server/discover":
		if !c.stateless {
			// As go-sdk does: discover belongs to 2026-07-28; a session-based
			// client falls back to initialize on this error.
			return nil, &rpc.Error{Code: codeMethodNotFound, Message: `"server/discover" is only supported in protocol version >= 2026-07-28`}
		}
		return g.discoverResult(ctx, c), nil
	case "logging/setLevel":
		return g.setLevel(c, msg.Params)
	case "initialize":
		return nil, &rpc.Error{Code: codeInvalidRequest, Message: "initialize is not allowed here: the session is already initialized"}
	case "resources/subscribe":
		return g.subscribeResource(ctx, c, msg.Params)
	case "resources/unsubscribe":
		return g.unsubscribeResource(ctx, c, msg.Params)
	case "subscriptions/listen":
		// Stateless requests take their own path (listen.go).
		return nil, &rpc.Error{Code: codeMethodNotFound, Message: `"subscriptions/listen" is only supported in protocol version >= 2026-07-28: a session gets notifications on its standalone stream (GET), and resources/subscribe subscribes to a resource`}
	default:
		return nil, &rpc.Error{Code: codeMethodNotFound, Message: "method " + quote(msg.Method) + " not found"}
	}
}

func (g *Gateway) listTimeout(s *metamcpv1.Server) time.Duration {
	if d := s.GetTimeouts().GetList(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return g.opts.DefaultListTimeout
}

// readResource serves resources/read, routed by URI: a URI seen in a
// resources/list, else a matching template, else every member in order.
func (g *Gateway) readResource(ctx context.Context, c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	start := time.Now()
	uri, ok := rpc.StringField(params, "uri")
	if !ok {
		return nil, &rpc.Error{Code: codeInvalidParams, Message: `resources/read needs params.uri`}
	}
	candidates := g.resourceMembers(c, uri)
	var last *rpc.Error
	for _, m := range candidates {
		res, rerr := g.callUpstream(ctx, c, m, "resources/read", params, g.callTimeout(m.Server))
		if rerr == nil {
			g.record(c, "resources/read", uri, m.Server.GetName(), start, res, nil)
			if c.stateless {
				res = readCacheHints(c, m, res)
			}
			return res, nil
		}
		last = rerr
		if len(candidates) == 1 {
			g.record(c, "resources/read", uri, m.Server.GetName(), start, nil, rerr)
			return nil, rerr
		}
	}
	if last == nil || len(candidates) > 1 {
		last = &rpc.Error{Code: codeResourceNotFound, Message: "resource " + quote(uri) + " not found in any server of this endpoint"}
	}
	g.record(c, "resources/read", uri, "", start, nil, last)
	return nil, last
}

// resourceMembers returns the members that may hold uri, best first.
func (g *Gateway) resourceMembers(c *call, uri string) []*snapshot.Member {
	rr := g.routes.get(c.t)
	if server, ok := rr.Lookup(uri); ok {
		if m := memberByServer(c.t.ep, server); m != nil {
			return []*snapshot.Member{m}
		}
	}
	var out []*snapshot.Member
	for _, m := range c.t.ep.Members {
		if m.Server != nil {
			out = append(out, m)
		}
	}
	return out
}

func memberByServer(ep *snapshot.Endpoint, server string) *snapshot.Member {
	for _, m := range ep.Members {
		if m.Server != nil && m.Server.GetName() == server {
			return m
		}
	}
	return nil
}

// complete serves completion/complete, routed by its reference.
func (g *Gateway) complete(ctx context.Context, c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	ref, ok := rpc.RawField(params, "ref")
	if !ok {
		return nil, &rpc.Error{Code: codeInvalidParams, Message: "completion/complete needs params.ref"}
	}
	typ, _ := rpc.StringField(ref, "type")
	switch typ {
	case "ref/prompt":
		name, _ := rpc.StringField(ref, "name")
		m, upstreamName := routeName(c.t.ep, name)
		if m == nil || upstreamName == "" {
			return nil, &rpc.Error{Code: codeInvalidParams, Message: "unknown prompt " + quote(name)}
		}
		newRef := rpc.ReplaceStringField(nil, ref, "name", upstreamName)
		fwd := rpc.ReplaceField(make([]byte, 0, len(params)+8), params, "ref", newRef)
		return g.callUpstream(ctx, c, m, "completion/complete", fwd, g.callTimeout(m.Server))
	case "ref/resource":
		uri, _ := rpc.StringField(ref, "uri")
		var last *rpc.Error
		for _, m := range g.resourceMembers(c, uri) {
			res, rerr := g.callUpstream(ctx, c, m, "completion/complete", params, g.callTimeout(m.Server))
			if rerr == nil {
				return res, nil
			}
			last = rerr
		}
		if last == nil {
			last = &rpc.Error{Code: codeInvalidParams, Message: "no server of this endpoint has resource " + quote(uri)}
		}
		return nil, last
	default:
		return nil, &rpc.Error{Code: codeInvalidParams, Message: "completion/complete: unknown ref type " + quote(typ) + " (want ref/prompt or ref/resource)"}
	}
}

// setLevel serves logging/setLevel. It is not forwarded: every upstream
// session logs at debug (the pool asks for it), since a shared one serves
// clients that want different levels, and the gateway filters what each
// client gets by the level it set (events.go).
func (g *Gateway) setLevel(c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	level, _ := rpc.StringField(params, "level")
	if levelIndex(level) < 0 {
		return nil, &rpc.Error{Code: codeInvalidParams, Message: "logging/setLevel: unknown level " + quote(level) + " (want one of " + strings.Join(logLevels, ", ") + ")"}
	}
	g.setSessionLevel(c.clientID, level)
	return emptyObject, nil
}

// upstreamInfos asks every member for its Info, each bounded by its list
// timeout; members that do not answer in time are left out (nil).
func (g *Gateway) upstreamInfos(ctx context.Context, c *call) []*upstream.Info {
	infos := make([]*upstream.Info, len(c.t.ep.Members))
	var wg sync.WaitGroup
	for i, m := range c.t.ep.Members {
		if m.Server == nil {
			continue
		}
		wg.Go(func() {
			// One slow upstream must not stall every initialize: it is
			// waited for at most the list wait, and goes on connecting.
			wait := min(g.opts.ListWait, g.listTimeout(m.Server))
			wctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			s, rerr := g.session(wctx, c, m)
			if rerr == nil {
				infos[i] = s.Info()
				return
			}
			if wctx.Err() == nil || ctx.Err() != nil {
				g.log.Warn("upstream left out of the capabilities", "endpoint", c.t.name, "server", m.Server.GetName(), "err", rerr.Message)
				return
			}
			g.log.Info("upstream slow to connect: left out of the capabilities, its lists follow through list_changed", "endpoint", c.t.name, "server", m.Server.GetName(), "wait", wait)
			g.lateSession(ctx, c, m)
		})
	}
	wg.Wait()
	return infos
}

// lateSession waits in the background, up to the server's initialize
// timeout, for the session initialize gave up on, and tells the endpoint's
// listening clients that its lists changed once it is there.
func (g *Gateway) lateSession(ctx context.Context, c *call, m *snapshot.Member) {
	bctx, done := g.detach(ctx)
	endpoint, server := c.t.name, m.Server.GetName()
	g.goOwned(func() {
		defer done()
		if _, rerr := g.session(bctx, c, m); rerr == nil {
			g.log.Info("a slow upstream connected: telling the endpoint's clients", "endpoint", endpoint, "server", server)
			g.listChanged(endpoint, catalog.MaskAll)
		}
	})
}

// mergedCapabilities returns the capabilities and instructions the gateway
// announces. Tools, prompts and resources are always announced (upstreams
// that are down now may answer later), with listChanged; completions,
// logging and resources.subscribe when any upstream that answered has them.
func (g *Gateway) mergedCapabilities(ctx context.Context, c *call) (json.RawMessage, string) {
	infos := g.upstreamInfos(ctx, c)
	completions, logging, subscribe := false, false, false
	var instr []string
	for i, info := range infos {
		if info == nil {
			continue
		}
		if len(info.Capabilities) > 0 {
			if _, ok := rpc.RawField(info.Capabilities, "completions"); ok {
				completions = true
			}
			if _, ok := rpc.RawField(info.Capabilities, "logging"); ok {
				logging = true
			}
			subscribe = subscribe || supportsSubscribe(info.Capabilities)
		}
		if s := strings.TrimSpace(info.Instructions); s != "" {
			m := c.t.ep.Members[i]
			if m.Prefix == "" {
				instr = append(instr, "Server "+quote(m.Server.GetName())+" (its tools and prompts are not prefixed):\n"+s)
			} else {
				instr = append(instr, "Server "+quote(m.Server.GetName())+" (tools and prompts prefixed "+m.Prefix+c.t.ep.Separator+"):\n"+s)
			}
		}
	}
	var b bytes.Buffer
	b.WriteString(`{`)
	if completions {
		b.WriteString(`"completions":{},`)
	}
	if logging {
		b.WriteString(`"logging":{},`)
	}
	// list_changed: upstream changes and snapshot swaps are announced (see
	// listchanged.go).
	b.WriteString(`"prompts":{"listChanged":true},"resources":{"listChanged":true,"subscribe":`)
	b.WriteString(strconv.FormatBool(subscribe))
	b.WriteString(`},"tools":{"listChanged":true}}`)
	return b.Bytes(), strings.Join(instr, "\n\n")
}

// initializeResult builds the InitializeResult of a new session.
func (g *Gateway) initializeResult(ctx context.Context, c *call, version string) json.RawMessage {
	caps, instr := g.mergedCapabilities(ctx, c)
	b := make([]byte, 0, 256+len(instr))
	b = append(b, `{"protocolVersion":`...)
	b = rpc.AppendString(b, version)
	b = append(b, `,"capabilities":`...)
	b = append(b, caps...)
	b = append(b, `,"serverInfo":`...)
	b = append(b, g.info...)
	if instr != "" {
		b = append(b, `,"instructions":`...)
		b = rpc.AppendString(b, instr)
	}
	return append(b, '}')
}

// discoverResult builds the server/discover result of 2026-07-28.
func (g *Gateway) discoverResult(ctx context.Context, c *call) json.RawMessage {
	caps, instr := g.mergedCapabilities(ctx, c)
	b := make([]byte, 0, 256+len(instr))
	b = append(b, `{"supportedVersions":`...)
	vs, _ := json.Marshal(streamableVersions)
	b = append(b, vs...)
	b = append(b, `,"capabilities":`...)
	b = append(b, caps...)
	b = append(b, `,"serverInfo":`...)
	b = append(b, g.info...)
	if instr != "" {
		b = append(b, `,"instructions":`...)
		b = rpc.AppendString(b, instr)
	}
	// Fresh every time: the upstreams' capabilities and the config may
	// change at any moment.
	b = catalog.AppendHints(b, 0, c.t.ep.Endpoint.GetAuth().GetAnonymous())
	return append(b, '}')
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// readCacheHints gives a resources/read result for a 2026-07-28 client the
// caching hints that revision requires: the upstream's, when it sent them
// (its session with the gateway may be of an earlier revision, which has
// none: then ttlMs 0). Its cacheScope "public" stands only on an anonymous
// endpoint and a shared upstream session; anywhere else it becomes
// "private" (see listCacheHints).
func readCacheHints(c *call, m *snapshot.Member, res json.RawMessage) json.RawMessage {
	if len(res) == 0 || res[0] != '{' {
		return res
	}
	ttl, hasTTL := rpc.RawField(res, "ttlMs")
	scope, _ := rpc.StringField(res, "cacheScope")
	public := scope != "private" && c.t.ep.Endpoint.GetAuth().GetAnonymous() &&
		m.Server.GetSessionMode() != metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
	want := "private"
	if public {
		want = "public"
	}
	if hasTTL && scope == want {
		return res
	}
	if !hasTTL {
		ttl = json.RawMessage("0")
	}
	out := rpc.ReplaceField(make([]byte, 0, len(res)+40), res, "ttlMs", ttl)
	return rpc.ReplaceField(make([]byte, 0, len(out)+24), out, "cacheScope", rpc.AppendString(nil, want))
}
