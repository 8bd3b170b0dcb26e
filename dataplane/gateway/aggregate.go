package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/authz"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// page is one upstream page.
type page struct {
	items []json.RawMessage
	next  string
	err   *rpc.Error
	ttlMs int64  // the upstream's ttlMs; -1 when it sent none
	scope string // the upstream's cacheScope, "" when it sent none
}

type listJob struct {
	index  int
	member *snapshot.Member
	cursor string
}

// list fans a list operation out to the endpoint's members in parallel,
// each bounded by its list timeout, and merges the pages. A member that
// fails or times out is left out and logged.
func (g *Gateway) list(ctx context.Context, c *call, k catalog.Kind, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	members := c.t.ep.Members
	var jobs []listJob
	if cur, _ := rpc.StringField(params, "cursor"); cur != "" {
		lc, ok := catalog.DecodeCursor(cur)
		if !ok {
			return nil, &rpc.Error{Code: codeInvalidParams, Message: "invalid cursor: pass the nextCursor of the previous page unchanged, or none to start over"}
		}
		for _, e := range lc.Pending {
			idx := -1
			if e.Member >= 0 && e.Member < len(members) && members[e.Member].Server.GetName() == e.Server {
				idx = e.Member
			} else {
				// The config changed between pages: find the server again.
				for i, m := range members {
					if m.Server.GetName() == e.Server {
						idx = i
						break
					}
				}
			}
			if idx >= 0 && members[idx].Server != nil {
				jobs = append(jobs, listJob{idx, members[idx], e.Cursor})
			}
		}
	} else {
		for i, m := range members {
			if m.Server != nil {
				jobs = append(jobs, listJob{i, m, ""})
			}
		}
	}
	pages := g.fetchPages(ctx, c, k, jobs)
	rr := g.routes.get(c.t)
	next := catalog.Cursor{Revision: c.t.snap.Revision}
	out := make([]byte, 0, 1024)
	out = append(out, `{"`...)
	out = append(out, k.Field...)
	out = append(out, `":[`...)
	first := true
	var failed []string
	var names *exposedNames
	if k == catalog.Tools || k == catalog.Prompts {
		names = &exposedNames{seen: make(map[string]int, 64)}
	}
	for i, j := range jobs {
		p := pages[i]
		if p.err != nil {
			g.log.Warn("upstream left out of the list", "endpoint", c.t.name, "method", k.Method, "server", j.member.Server.GetName(), "err", p.err.Message)
			failed = append(failed, p.err.Message)
			continue
		}
		if p.next != "" {
			next.Pending = append(next.Pending, catalog.CursorEntry{Member: j.index, Server: j.member.Server.GetName(), Cursor: p.next})
		}
		for _, item := range p.items {
			rewritten, keep := g.rewriteItem(c, k, j, item, rr)
			if !keep {
				continue
			}
			if names != nil && !names.add(g, c, k, j, item, rewritten, len(out)+1) {
				continue
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			out = append(out, rewritten...)
		}
	}
	if names != nil {
		out = names.rebuild(out)
		if len(failed) == 0 && len(next.Pending) == 0 && len(jobs) == len(c.t.ep.Members) {
			g.settleCollisions(c.t.name, k, names.found)
		}
	}
	if len(jobs) > 0 && len(failed) == len(jobs) {
		// Never a silently empty list: say why there is nothing.
		return nil, &rpc.Error{Code: codeServerError, Message: "no upstream server answered " + k.Method + ": " + strings.Join(failed, "; ")}
	}
	out = append(out, ']')
	if len(next.Pending) > 0 {
		out = append(out, `,"nextCursor":`...)
		out = rpc.AppendString(out, catalog.EncodeCursor(&next))
	}
	if c.stateless {
		ttl, public := listCacheHints(c, jobs, pages, len(failed) > 0)
		out = catalog.AppendHints(out, ttl, public)
	}
	return append(out, '}'), nil
}

// listCacheHints decides the caching hints of a merged list from its
// pages (see catalog.Hints).
func listCacheHints(c *call, jobs []listJob, pages []page, partial bool) (ttl int64, public bool) {
	h := catalog.NewHints(c.t.ep.Endpoint.GetAuth().GetAnonymous())
	for i, j := range jobs {
		if p := pages[i]; p.err == nil {
			h.Add(p.ttlMs, p.scope, j.member.Server.GetSessionMode() == metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT)
		}
	}
	return h.Merged(partial)
}

// fetchPages asks the jobs' members for their pages in parallel and waits
// for them at most the list wait (Options.ListWait) once one has answered:
// one slow upstream must not stall every client's list. A member still
// asking is left out (its page has an error saying so); its request goes on
// in the background, bounded by its list timeout, and when it answers (a
// session keeps the page, see upstream.Lister) the endpoint's listening
// clients hear list_changed. With no member answered yet it waits on: never
// a silently empty list.
func (g *Gateway) fetchPages(ctx context.Context, c *call, k catalog.Kind, jobs []listJob) []page {
	pages := make([]page, len(jobs))
	if len(jobs) == 0 {
		return pages
	}
	type result struct {
		i int
		p page
	}
	results := make(chan result, len(jobs))
	bctx, done := g.detach(ctx)
	var running sync.WaitGroup
	for i, j := range jobs {
		running.Go(func() { results <- result{i, g.fetchPage(bctx, c, k, j)} })
	}
	got := make([]bool, len(jobs))
	n, answered, late := 0, 0, false
	wait := time.NewTimer(g.opts.ListWait)
	defer wait.Stop()
collect:
	for n < len(jobs) {
		select {
		case r := <-results:
			pages[r.i], got[r.i] = r.p, true
			n++
			if r.p.err == nil {
				answered++
				if late {
					break collect
				}
			}
		case <-wait.C:
			late = true
			if answered > 0 {
				break collect
			}
		case <-ctx.Done():
			break collect
		}
	}
	if n == len(jobs) {
		done()
		return pages
	}
	for i, j := range jobs {
		if !got[i] {
			pages[i] = page{err: &rpc.Error{Code: codeServerError, Message: "upstream " + quote(j.member.Server.GetName()) + " did not answer " + k.Method + " within " + g.opts.ListWait.String() + ": its part follows through list_changed"}}
		}
	}
	endpoint := c.t.name
	g.goOwned(func() {
		running.Wait()
		done()
		close(results)
		for r := range results {
			if !got[r.i] && r.p.err == nil {
				g.log.Info("a slow upstream's list arrived: telling the endpoint's clients", "endpoint", endpoint, "method", k.Method, "server", jobs[r.i].member.Server.GetName())
				g.listChanged(endpoint, catalog.MaskOfList(k))
			}
		}
	})
	return pages
}

// detach returns a context with ctx's values but neither its cancellation
// nor its Caller, which ends with the gateway: for upstream requests that
// may outlive the client request that started them.
func (g *Gateway) detach(ctx context.Context) (context.Context, func()) {
	d, cancel := context.WithCancel(upstream.WithCaller(context.WithoutCancel(ctx), nil))
	stop := context.AfterFunc(g.ctx, cancel)
	return d, func() {
		stop()
		cancel()
	}
}

// fetchPage asks one member for one page: of the session's kept lists
// when it keeps them (upstream.Lister), else of the upstream.
func (g *Gateway) fetchPage(ctx context.Context, c *call, k catalog.Kind, j listJob) page {
	s, rerr := g.session(ctx, c, j.member)
	if rerr != nil {
		return page{err: rerr}
	}
	if l, ok := s.(upstream.Lister); ok {
		timeout := g.listTimeout(j.member.Server)
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		p, err := l.List(cctx, k.Method, j.cursor)
		if err != nil {
			var re *rpc.Error
			if errors.As(err, &re) {
				return page{err: re}
			}
			return page{err: upstreamError(cctx, j.member.Server.GetName(), err, timeout)}
		}
		return page{items: p.Items, next: p.Next, ttlMs: p.TTLMs, scope: p.Scope}
	}
	params := emptyObject
	if j.cursor != "" {
		params = rpc.AppendString([]byte(`{"cursor":`), j.cursor)
		params = append(params, '}')
	}
	res, rerr := g.callUpstream(ctx, c, j.member, k.Method, params, g.listTimeout(j.member.Server))
	if rerr != nil {
		return page{err: rerr}
	}
	p, err := upstream.ParseListPage(k.Method, res)
	if err != nil {
		return page{err: &rpc.Error{Code: codeServerError, Message: "upstream " + quote(j.member.Server.GetName()) + " sent an invalid " + k.Method + " result: " + err.Error()}}
	}
	return page{items: p.Items, next: p.Next, ttlMs: p.TTLMs, scope: p.Scope}
}

// rewriteItem applies the namespace to one listed item: tools are renamed,
// filtered and overridden, prompts prefixed, resources remembered for routing.
func (g *Gateway) rewriteItem(c *call, k catalog.Kind, j listJob, item json.RawMessage, rr *resourceRoutes) (json.RawMessage, bool) {
	m := j.member
	switch k {
	case catalog.Tools:
		name, ok := rpc.StringField(item, "name")
		if !ok {
			return nil, false
		}
		if !snapshot.ToolAllowed(m.Spec, name) {
			return nil, false
		}
		o := m.Spec.GetToolOverrides()[name]
		base := name
		if o.GetName() != "" {
			base = o.GetName()
		}
		exposed := snapshot.ExposedName(m.Prefix, c.t.ep.Separator, base)
		var out json.RawMessage
		if o == nil {
			out = rpc.ReplaceStringField(make([]byte, 0, len(item)+len(exposed)), item, "name", exposed)
		} else {
			out = applyOverride(item, exposed, o)
		}
		rr.SetTool(exposed, listedTool{params: toolParamBindings(item), annotations: authz.ParseAnnotations(out)})
		return out, true
	case catalog.Prompts:
		name, ok := rpc.StringField(item, "name")
		if !ok {
			return nil, false
		}
		exposed := snapshot.ExposedName(m.Prefix, c.t.ep.Separator, name)
		return rpc.ReplaceStringField(make([]byte, 0, len(item)+len(exposed)), item, "name", exposed), true
	case catalog.Resources:
		uri, ok := rpc.StringField(item, "uri")
		if !ok {
			return nil, false
		}
		if winner, won := rr.AddURI(uri, j.index, m.Server.GetName()); !won {
			g.log.Warn("resource URI listed by two servers: the first in namespace order serves it", "endpoint", c.t.name, "uri", uri, "server", winner, "ignored", m.Server.GetName())
			return nil, false
		}
		return item, true
	case catalog.Templates:
		tmpl, ok := rpc.StringField(item, "uriTemplate")
		if !ok {
			return nil, false
		}
		if winner, won := rr.AddTemplate(tmpl, j.index, m.Server.GetName()); !won {
			g.log.Warn("resource template listed by two servers: the first in namespace order serves it", "endpoint", c.t.name, "template", tmpl, "server", winner, "ignored", m.Server.GetName())
			return nil, false
		}
		return item, true
	}
	return item, true
}

// applyOverride rewrites a tool with an override, keeping unknown fields.
func applyOverride(item json.RawMessage, exposed string, o *metamcpv1.ToolOverride) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(item, &obj) != nil {
		return item
	}
	str := func(s string) json.RawMessage { return rpc.AppendString(nil, s) }
	obj["name"] = str(exposed)
	if o.GetTitle() != "" {
		obj["title"] = str(o.GetTitle())
	}
	if o.GetDescription() != "" {
		obj["description"] = str(o.GetDescription())
	}
	if a := o.GetAnnotations(); a != nil {
		ann := map[string]json.RawMessage{}
		if raw, ok := obj["annotations"]; ok {
			_ = json.Unmarshal(raw, &ann)
			if ann == nil {
				ann = map[string]json.RawMessage{}
			}
		}
		b := func(v bool) json.RawMessage {
			if v {
				return json.RawMessage("true")
			}
			return json.RawMessage("false")
		}
		if a.Title != nil {
			ann["title"] = str(a.GetTitle())
		}
		if a.ReadOnlyHint != nil {
			ann["readOnlyHint"] = b(a.GetReadOnlyHint())
		}
		if a.DestructiveHint != nil {
			ann["destructiveHint"] = b(a.GetDestructiveHint())
		}
		if a.IdempotentHint != nil {
			ann["idempotentHint"] = b(a.GetIdempotentHint())
		}
		if a.OpenWorldHint != nil {
			ann["openWorldHint"] = b(a.GetOpenWorldHint())
		}
		if raw, err := json.Marshal(ann); err == nil {
			obj["annotations"] = raw
		}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return item
	}
	return out
}

// routeCache keeps, per snapshot revision and endpoint, where listed
// resources and templates live.
type routeCache struct {
	catalog.Cache[resourceRoutes]
}

// get returns the routes of t's revision and endpoint, dropping older revisions.
func (rc *routeCache) get(t target) *resourceRoutes {
	return rc.Get(t.snap.Revision, t.name)
}

// resourceRoutes maps resource URIs and templates to the server that listed
// them, and exposed tool names to what calls need of their listing; it also
// keeps the learning of tools' Mcp-Param bindings, which lives as long.
type resourceRoutes struct {
	catalog.Routes[listedTool]

	learnMu  sync.Mutex             // guards learning
	learning map[string]*learnState // learnToolParams, by server
}

// listedTool is what calls need of a tool as this replica listed it
// (overrides applied): its Mcp-Param bindings (paramheaders.go) and its
// annotations, which access rules decide on and call records report.
type listedTool struct {
	params      []paramBinding // nil: none
	annotations authz.Annotations
}
