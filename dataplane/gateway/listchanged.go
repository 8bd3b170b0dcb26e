package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// listChangedDebounce is how long the gateway gathers list_changed triggers
// (upstream notifications, snapshot swaps) for an endpoint before it
// recomputes the endpoint's lists: a burst of changes gives one notification.
const listChangedDebounce = 150 * time.Millisecond

// maxListPages bounds the pages fetched from one upstream when recomputing
// a list for list_changed.
const maxListPages = 100

// clientState is what the gateway keeps about its connected clients beyond
// their sessions: the effective lists they were last shown (for
// list_changed), their resource subscriptions, their subscriptions/listen
// streams and their calls waiting for input (input_required). The zero
// value is ready to use.
type clientState struct {
	lists     listWatch
	subs      resourceSubs
	listeners listenRegistry
	bridges   bridgeTable
}

// listWatch decides when an endpoint's effective tool, prompt or resource
// set changed. For every (endpoint, list kind, scope) it keeps a hash per
// upstream member of the items the gateway serves for it (after filters,
// overrides and prefixes); a trigger recomputes them and a notification
// goes out only when one differs.
type listWatch struct {
	mu        sync.Mutex
	snap      *snapshot.Compiled  // the snapshot ConfigChanged saw last
	prints    map[string][32]byte // endpoint → fingerprint of what shapes its lists
	access    map[string]string   // endpoint → its access rules, encoded (accessPrint)
	baselines catalog.Baselines
	seeding   map[catalog.BaselineKey]bool // (endpoint, scope) → its baselines are being computed
	dirty     map[string]catalog.Mask      // endpoint → kinds waiting for the debounce
	running   map[string]bool              // endpoint → a settle goroutine is on it
}

// listScope is the scope of c's view of its endpoint's lists.
func listScope(c *call) string {
	if !hasPerClient(c.t.ep) {
		return ""
	}
	if c.clientID != "" {
		return c.clientID
	}
	return "stateless/" + c.principal
}

func hasPerClient(ep *snapshot.Endpoint) bool {
	for _, m := range ep.Members {
		if m.Server.GetSessionMode() == metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT {
			return true
		}
	}
	return false
}

// listObserved serves a list operation and records its baseline.
func (g *Gateway) listObserved(ctx context.Context, c *call, k catalog.Kind, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	res, rerr := g.list(ctx, c, k, params)
	if rerr != nil {
		return nil, rerr
	}
	// Baselines and the tool report see every item; the caller, only what
	// the access rules let it.
	if g.shouldObserve(c, k) {
		g.observeList(c, k, params, res)
	}
	if k == catalog.Tools {
		g.reportTools(c, params, res)
	}
	return g.filterList(c, k, res), nil
}

// shouldObserve reports whether a list served to c is worth hashing: it is
// the only baseline of c's own view (per_client upstreams), or c may hear
// list_changed from this replica, or the endpoint's shared view has no
// baseline yet. (A client may list before its stream opens.)
func (g *Gateway) shouldObserve(c *call, k catalog.Kind) bool {
	if listScope(c) != "" || g.listening(c) {
		return true
	}
	w := &g.state.lists
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.baselines.Get(catalog.BaselineKey{Endpoint: c.t.name, Kind: k.Method})
	return !ok
}

// listening reports whether c's client may hear list_changed from this
// replica: its session's standalone stream is open here, or (stateless) a
// listen stream of its endpoint is.
func (g *Gateway) listening(c *call) bool {
	if c.clientID != "" {
		g.mu.Lock()
		_, ok := g.streams[c.clientID]
		g.mu.Unlock()
		return ok
	}
	r := &g.state.listeners
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m[c.t.name]) > 0
}

// observeList records, from a list the gateway just served in full (a first
// page with no next page), the baseline of c's view: each item is
// attributed to its member the way calls are routed.
func (g *Gateway) observeList(c *call, k catalog.Kind, params, res json.RawMessage) {
	if len(res) == 0 {
		return
	}
	if cur, _ := rpc.StringField(params, "cursor"); cur != "" {
		return
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(res, &p) != nil {
		return
	}
	if _, more := p["nextCursor"]; more {
		return
	}
	var items []json.RawMessage
	if json.Unmarshal(p[k.Field], &items) != nil {
		return
	}
	per := make(map[string]catalog.ItemHashes, len(c.t.ep.Members))
	var rr *resourceRoutes
	if k == catalog.Resources || k == catalog.Templates {
		rr = g.routes.get(c.t)
	}
	for _, it := range items {
		server := attribute(c.t.ep, k, it, rr)
		if server == "" {
			continue
		}
		per[server] = append(per[server], sha256.Sum256(it))
	}
	hashes := make(map[string][32]byte, len(c.t.ep.Members))
	for _, m := range c.t.ep.Members {
		if m.Server != nil {
			hashes[m.Server.GetName()] = per[m.Server.GetName()].Sum()
		}
	}
	scope := listScope(c)
	key := catalog.BaselineKey{Endpoint: c.t.name, Kind: k.Method, Scope: scope}
	w := &g.state.lists
	w.mu.Lock()
	w.baselines.Set(key, hashes)
	w.mu.Unlock()
	if scope != "" {
		// The client's own view: its other lists are taken now, while its
		// upstream sessions are warm, so that a later change of a kind it
		// has not listed here yet is not announced blindly.
		g.seedBaselines(&call{t: c.t, principal: c.principal, clientID: c.clientID, stateless: c.stateless}, scope)
	}
}

// attribute returns the server a served item came from.
func attribute(ep *snapshot.Endpoint, k catalog.Kind, item json.RawMessage, rr *resourceRoutes) string {
	switch k {
	case catalog.Tools, catalog.Prompts:
		name, _ := rpc.StringField(item, "name")
		if m, _ := routeName(ep, name); m != nil {
			return m.Server.GetName()
		}
	case catalog.Resources:
		uri, _ := rpc.StringField(item, "uri")
		if s, ok := rr.Lookup(uri); ok {
			return s
		}
	case catalog.Templates:
		tmpl, _ := rpc.StringField(item, "uriTemplate")
		if s, ok := rr.Template(tmpl); ok {
			return s
		}
	}
	return ""
}

// dropScope removes the baselines of one client scope.
func (w *listWatch) dropScope(scope string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.baselines.DeleteScope(scope)
}

// listenerAttached is called when a client of endpoint starts listening
// for list_changed here (a standalone stream, a listen stream). When the
// endpoint's lists are the same for every client and some have no baseline
// yet, they are computed in the background, so that the next change is
// compared with what the client could have seen rather than announced
// blindly. (Per-client views are seeded from the client's first list,
// see observeList: a check here would start per_client upstream sessions
// early.)
func (g *Gateway) listenerAttached(endpoint string) {
	if g.opts.Config == nil {
		return
	}
	snap := g.opts.Config.Current()
	if snap == nil {
		return
	}
	ep := snap.Endpoints[endpoint]
	if ep == nil || hasPerClient(ep) {
		return
	}
	t := target{snap: snap, ep: ep, name: endpoint}
	g.seedBaselines(&call{t: t}, "")
}

// seedBaselines computes in the background the baselines of scope that are
// missing, listing as c (once at a time per scope).
func (g *Gateway) seedBaselines(c *call, scope string) {
	endpoint := c.t.name
	w := &g.state.lists
	w.mu.Lock()
	var missing []catalog.Kind
	for _, kk := range catalog.Groups {
		for _, k := range kk.Kinds {
			if _, ok := w.baselines.Get(catalog.BaselineKey{Endpoint: endpoint, Kind: k.Method, Scope: scope}); !ok {
				missing = append(missing, k)
			}
		}
	}
	seedKey := catalog.BaselineKey{Endpoint: endpoint, Scope: scope}
	if len(missing) == 0 || w.seeding[seedKey] {
		w.mu.Unlock()
		return
	}
	if w.seeding == nil {
		w.seeding = make(map[catalog.BaselineKey]bool)
	}
	w.seeding[seedKey] = true
	w.mu.Unlock()
	g.goOwned(func() {
		defer func() {
			w.mu.Lock()
			delete(w.seeding, seedKey)
			w.mu.Unlock()
		}()
		for _, k := range missing {
			g.relist(c.t, c, k, scope)
		}
	})
}

// listChanged notes that the lists of kinds mask of endpoint may have
// changed; after the debounce they are recomputed and the endpoint's
// listening clients told about the ones that really did.
func (g *Gateway) listChanged(endpoint string, mask catalog.Mask) {
	w := &g.state.lists
	w.mu.Lock()
	if w.dirty == nil {
		w.dirty = make(map[string]catalog.Mask)
		w.running = make(map[string]bool)
	}
	w.dirty[endpoint] |= mask
	if w.running[endpoint] {
		w.mu.Unlock()
		return
	}
	w.running[endpoint] = true
	w.mu.Unlock()
	// Joined to wg under mu, as SSE streams are: Close either waits for it
	// or it sees the gateway closed.
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		return
	}
	g.wg.Add(1)
	g.mu.Unlock()
	go g.settleLists(endpoint)
}

// settleLists recomputes endpoint's dirty lists once no trigger came for
// the debounce interval, until nothing is dirty.
func (g *Gateway) settleLists(endpoint string) {
	defer g.wg.Done()
	w := &g.state.lists
	t := time.NewTimer(listChangedDebounce)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		mask := w.dirty[endpoint]
		delete(w.dirty, endpoint)
		if mask == 0 {
			delete(w.running, endpoint)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		g.recomputeLists(endpoint, mask)
		t.Reset(listChangedDebounce)
	}
}

// listAudience is the clients of one scope of an endpoint that listen for
// list_changed on this replica.
type listAudience struct {
	c        *call // how to list as these clients see it
	sessions []string
	listens  []*listener
}

// audiences groups the endpoint's listening clients on this replica by scope.
func (g *Gateway) audiences(t target) map[string]*listAudience {
	out := map[string]*listAudience{}
	perClient := hasPerClient(t.ep)
	for _, sid := range g.localStreams(t.name) {
		scope := ""
		if perClient {
			scope = sid
		}
		a := out[scope]
		if a == nil {
			a = &listAudience{c: &call{t: t, clientID: sid}}
			out[scope] = a
		}
		a.sessions = append(a.sessions, sid)
	}
	for _, l := range g.state.listeners.of(t.name) {
		if l.mask == 0 {
			continue // resource updates only
		}
		scope := ""
		if perClient {
			scope = "stateless/" + l.principal
		}
		a := out[scope]
		if a == nil {
			a = &listAudience{c: &call{t: t, principal: l.principal, stateless: true}}
			out[scope] = a
		}
		a.listens = append(a.listens, l)
	}
	return out
}

// recomputeLists lists the endpoint's kinds in mask again for each scope
// that has listeners here, and notifies the listeners whose view changed.
func (g *Gateway) recomputeLists(endpoint string, mask catalog.Mask) {
	var snap *snapshot.Compiled
	if g.opts.Config != nil {
		snap = g.opts.Config.Current()
	}
	if snap == nil {
		return
	}
	ep := snap.Endpoints[endpoint]
	w := &g.state.lists
	if ep == nil {
		w.mu.Lock()
		for k := range w.baselines.Keys() {
			if k.Endpoint == endpoint {
				w.baselines.Delete(k)
			}
		}
		w.mu.Unlock()
		return
	}
	t := target{snap: snap, ep: ep, name: endpoint}
	auds := g.audiences(t)
	w.mu.Lock()
	// Baselines nobody here listens to any more are stale from now on: a
	// later listener gets them again from its first list.
	for k := range w.baselines.Keys() {
		if _, listening := auds[k.Scope]; k.Endpoint == endpoint && !listening && catalog.KindIn(k.Kind, mask) {
			w.baselines.Delete(k)
		}
	}
	w.mu.Unlock()
	for scope, a := range auds {
		for _, kk := range catalog.Groups {
			if kk.Mask&mask == 0 {
				continue
			}
			changed := false
			for _, k := range kk.Kinds {
				if g.relist(t, a.c, k, scope) {
					changed = true
				}
			}
			if changed {
				g.notifyListChanged(a, kk.Mask, kk.Method)
			}
		}
	}
}

// relist computes the members' hashes of kind k as scope sees them and
// reports whether any differs from the baseline (which it replaces). A
// member that does not answer keeps its old hash: it is not a change.
func (g *Gateway) relist(t target, c *call, k catalog.Kind, scope string) bool {
	hashes := make(map[string][32]byte, len(t.ep.Members))
	failed := map[string]bool{}
	rr := g.routes.get(t)
	type result struct {
		index  int
		server string
		items  []json.RawMessage
		ok     bool
	}
	results := make(chan result, len(t.ep.Members))
	pending := map[string]bool{}
	for i, m := range t.ep.Members {
		if m.Server == nil {
			continue
		}
		pending[m.Server.GetName()] = true
		go func() {
			items, ok := g.memberItems(c, k, listJob{index: i, member: m})
			results <- result{i, m.Server.GetName(), items, ok}
		}()
	}
	// A member slower than the list wait is not waited for (it counts as
	// not answering); should its list turn out changed, the endpoint is
	// checked again then (a kept list answers at once).
	wait := time.NewTimer(g.opts.ListWait)
	defer wait.Stop()
	var answered []result
collect:
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.server)
			if !r.ok {
				failed[r.server] = true
				continue
			}
			answered = append(answered, r)
		case <-wait.C:
			break collect
		}
	}
	// Hashed in namespace order, as a list is served: which member a
	// resource URI listed by two belongs to must not depend on which
	// answered first.
	sort.Slice(answered, func(a, b int) bool { return answered[a].index < answered[b].index })
	for _, r := range answered {
		hashes[r.server] = g.hashItems(c, k, listJob{index: r.index, member: t.ep.Members[r.index]}, r.items, rr)
	}
	for s := range pending {
		failed[s] = true
	}
	key := catalog.BaselineKey{Endpoint: t.name, Kind: k.Method, Scope: scope}
	if n := len(pending); n > 0 {
		g.goOwned(func() {
			for range n {
				r := <-results
				if !r.ok {
					continue
				}
				h := g.hashItems(c, k, listJob{index: r.index, member: t.ep.Members[r.index]}, r.items, rr)
				g.state.lists.mu.Lock()
				base, _ := g.state.lists.baselines.Get(key)
				old, had := base[r.server]
				g.state.lists.mu.Unlock()
				if !had || old != h {
					g.listChanged(t.name, catalog.MaskOfList(k))
					return
				}
			}
		})
	}
	w := &g.state.lists
	w.mu.Lock()
	defer w.mu.Unlock()
	old, had := w.baselines.Get(key)
	for s := range failed {
		if h, ok := old[s]; ok {
			hashes[s] = h
		}
	}
	w.baselines.Set(key, hashes)
	if !had {
		// Nothing to compare with: this client may have seen anything. Say
		// it changed rather than risk a client that never sees a new tool.
		return true
	}
	for s, h := range hashes {
		if old[s] != h && !failed[s] {
			return true
		}
	}
	for s, h := range old {
		if _, ok := hashes[s]; !ok && h != ([32]byte{}) {
			return true // a member left the endpoint
		}
	}
	return false
}

// memberItems fetches every page of one member's list (each bounded by its
// list timeout).
func (g *Gateway) memberItems(c *call, k catalog.Kind, j listJob) ([]json.RawMessage, bool) {
	var items []json.RawMessage
	seen := map[string]bool{}
	for range maxListPages {
		p := g.fetchPage(g.ctx, c, k, j)
		if p.err != nil {
			g.log.Debug("upstream left out of a list_changed check", "endpoint", c.t.name, "method", k.Method, "server", j.member.Server.GetName(), "err", p.err.Message)
			return nil, false
		}
		items = append(items, p.items...)
		if p.next == "" || seen[p.next] {
			break
		}
		seen[p.next] = true
		j.cursor = p.next
	}
	return items, true
}

// hashItems hashes one member's items as the gateway serves them.
func (g *Gateway) hashItems(c *call, k catalog.Kind, j listJob, items []json.RawMessage, rr *resourceRoutes) [32]byte {
	var h catalog.ItemHashes
	for _, item := range items {
		if rewritten, keep := g.rewriteItem(c, k, j, item, rr); keep {
			h = append(h, sha256.Sum256(rewritten))
		}
	}
	return h.Sum()
}

// notifyListChanged sends method to the audience's clients that want it.
func (g *Gateway) notifyListChanged(a *listAudience, mask catalog.Mask, method string) {
	msg := []byte(`{"jsonrpc":"2.0","method":"` + method + `","params":{}}`)
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	for _, sid := range a.sessions {
		g.sendToSession(ctx, sid, msg)
	}
	for _, l := range a.listens {
		if l.mask&mask != 0 {
			l.send(listenNotification(method, l.id, nil))
		}
	}
}

// ConfigChanged tells the gateway that the snapshot it serves was swapped:
// endpoints whose tool, prompt or resource set may have changed (members,
// prefixes, filters, overrides, server definitions) are checked, and their
// listening clients notified when their effective set really changed. The
// data plane calls it after each swap; calling it without a change is cheap.
func (g *Gateway) ConfigChanged() {
	if g.opts.Config == nil {
		return
	}
	snap := g.opts.Config.Current()
	if snap == nil {
		return
	}
	// Fetch the keys of new identity providers before their first token.
	g.updateTokens(snap)
	w := &g.state.lists
	w.mu.Lock()
	if w.snap == snap {
		w.mu.Unlock()
		return
	}
	first := w.snap == nil
	w.snap = snap
	prints := make(map[string][32]byte, len(snap.Endpoints))
	for name, ep := range snap.Endpoints {
		prints[name] = endpointPrint(ep)
	}
	old, oldAccess := w.prints, w.access
	w.prints = prints
	access := make(map[string]string, len(snap.Endpoints))
	for name, ep := range snap.Endpoints {
		access[name] = accessPrint(ep)
	}
	w.access = access
	for k := range w.baselines.Keys() {
		if _, ok := prints[k.Endpoint]; !ok {
			w.baselines.Delete(k) // the endpoint is gone
		}
	}
	w.mu.Unlock()
	if first {
		// Nobody can have listed under an earlier snapshot of this gateway.
		return
	}
	for name, p := range prints {
		if o, ok := old[name]; !ok || o != p {
			g.listChanged(name, catalog.MaskAll)
		}
		if a, ok := oldAccess[name]; ok && a != access[name] {
			g.accessChanged(target{snap: snap, ep: snap.Endpoints[name], name: name})
		}
	}
}

// endpointPrint fingerprints what shapes an endpoint's lists: its
// separator and, per member, the prefix, the namespace settings (filters,
// overrides) and the server's definition.
func endpointPrint(ep *snapshot.Endpoint) [32]byte {
	d := sha256.New()
	d.Write([]byte(ep.Separator))
	opts := proto.MarshalOptions{Deterministic: true}
	for _, m := range ep.Members {
		d.Write([]byte{0})
		d.Write([]byte(m.Prefix))
		d.Write([]byte{0})
		if b, err := opts.Marshal(m.Spec); err == nil {
			d.Write(b)
		}
		d.Write([]byte{0})
		if m.Server != nil {
			s := proto.Clone(m.Server).(*metamcpv1.Server)
			s.Revision, s.CreateTime, s.UpdateTime = 0, nil, nil
			if b, err := opts.Marshal(s); err == nil {
				d.Write(b)
			}
		}
	}
	var out [32]byte
	d.Sum(out[:0])
	return out
}

// upstreamListChanged handles an upstream's notifications/*/list_changed:
// every endpoint that mounts the server is checked after the debounce.
func (g *Gateway) upstreamListChanged(server string, method string) {
	mask := catalog.MaskOfNotification(method)
	if mask == 0 || g.opts.Config == nil {
		return
	}
	snap := g.opts.Config.Current()
	if snap == nil {
		return
	}
	for name, ep := range snap.Endpoints {
		if memberByServer(ep, server) != nil {
			g.listChanged(name, mask)
		}
	}
}

// upstreamNotification takes, from the pool's Events, the upstream
// notifications that concern no call and that the gateway tracks itself:
// list_changed (checked against the clients' effective lists) and
// resources/updated (sent to the subscribers). It reports whether it took
// msg. It never blocks. clientID is the downstream session of a per_client
// upstream session, "" for shared ones.
func (g *Gateway) upstreamNotification(server, clientID string, msg *rpc.Message) bool {
	switch {
	case catalog.MaskOfNotification(msg.Method) != 0:
		g.upstreamListChanged(server, msg.Method)
		return true
	case msg.Method == methodResourceUpdated:
		if !g.perClientServer(server) {
			// The pool may name the client that opened a shared session.
			clientID = ""
		}
		g.goOwned(func() { g.upstreamResourceUpdated(server, clientID, msg) })
		return true
	}
	return false
}

// perClientServer reports whether server runs one upstream session per
// downstream client in the snapshot being served.
func (g *Gateway) perClientServer(server string) bool {
	if g.opts.Config == nil {
		return false
	}
	snap := g.opts.Config.Current()
	if snap == nil {
		return false
	}
	return snap.Servers[server].GetSessionMode() == metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT
}

// callerNotification is upstreamNotification for a notification that came
// with call c (a stdio or SSE upstream attributes what it sends to the one
// call in flight), whose server is not known: every member of c's endpoint
// is considered (the recomputation finds which one changed, if any).
func (g *Gateway) callerNotification(c *call, msg *rpc.Message) bool {
	switch {
	case catalog.MaskOfNotification(msg.Method) != 0:
		for _, m := range c.t.ep.Members {
			if m.Server != nil {
				g.upstreamListChanged(m.Server.GetName(), msg.Method)
			}
		}
		return true
	case msg.Method == methodResourceUpdated:
		g.goOwned(func() {
			for _, m := range c.t.ep.Members {
				if m.Server != nil {
					g.upstreamResourceUpdated(m.Server.GetName(), upstreamClient(c, m), msg)
				}
			}
		})
		return true
	}
	return false
}

const methodResourceUpdated = "notifications/resources/updated"

// goOwned runs fn on a goroutine the gateway owns (Close waits for it); not
// at all once the gateway is closing.
func (g *Gateway) goOwned(fn func()) {
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		return
	}
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		fn()
	}()
}
