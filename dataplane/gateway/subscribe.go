package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/catalog"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// resourceSubs keeps the resource subscriptions of downstream clients. An
// upstream is asked once per (server, upstream session, URI) however many
// clients subscribe, and told to unsubscribe when the last one goes.
//
// Subscriptions live on the replica that received resources/subscribe (or
// serves the subscriptions/listen stream): its upstream session is the one
// that sends the updates, which reach a session's stream on any replica
// through the session bus.
type resourceSubs struct {
	mu       sync.Mutex
	entries  map[subKey]*subEntry
	bySubber map[subscriber]map[subKey]struct{}
	// watches are the sessions with subscriptions here whose subscription
	// topic this replica listens on (their unsubscribe or end may reach
	// another replica), with the func that stops listening.
	watches map[string]*subWatch
}

// subWatch is one session's watch of its subscription topic.
type subWatch struct{ cancel context.CancelFunc }

// subscriptionTopic carries, for session sid, what other replicas must do
// with the session's resource subscriptions they hold: "u:"+uri to
// unsubscribe from uri, "e" when the session ended.
func subscriptionTopic(sid string) string { return "mm/u/" + sid }

// subKey names one upstream subscription. client is the upstream session's
// downstream client for per_client servers, "" for shared ones (as the
// pool's Events report it).
type subKey struct {
	server string
	client string
	uri    string
}

// subscriber is one downstream subscriber: a session (sid) or a
// subscriptions/listen stream.
type subscriber struct {
	sid    string
	listen *listener
}

// subEntry is one upstream subscription and its downstream subscribers.
type subEntry struct {
	ready chan struct{} // closed once the upstream answered resources/subscribe
	err   *rpc.Error    // its refusal, if any
	c     *call         // how to reach the upstream session again
	m     *snapshot.Member
	subs  map[subscriber]struct{}
}

// upstreamClient is the clientID under which the pool keeps m's upstream
// session for c ("" for shared servers).
func upstreamClient(c *call, m *snapshot.Member) string {
	if m.Server.GetSessionMode() != metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT {
		return ""
	}
	if c.clientID != "" {
		return c.clientID
	}
	return "stateless/" + c.t.name + "/" + c.principal
}

// supportsSubscribe reports whether an upstream's capabilities declare
// resources.subscribe.
func supportsSubscribe(caps json.RawMessage) bool {
	res, ok := rpc.RawField(caps, "resources")
	if !ok {
		return false
	}
	v, ok := rpc.RawField(res, "subscribe")
	return ok && string(v) == "true"
}

// subscribeResource serves resources/subscribe for a session.
func (g *Gateway) subscribeResource(ctx context.Context, c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	uri, ok := rpc.StringField(params, "uri")
	if !ok || uri == "" {
		return nil, &rpc.Error{Code: codeInvalidParams, Message: "resources/subscribe needs params.uri"}
	}
	if c.clientID == "" {
		return nil, &rpc.Error{Code: codeInvalidRequest, Message: "resources/subscribe needs a session: with protocol version 2026-07-28 use subscriptions/listen with notifications.resourceSubscriptions"}
	}
	if rerr := g.subscribe(ctx, c, uri, stripRequestMeta(params), subscriber{sid: c.clientID}); rerr != nil {
		return nil, rerr
	}
	return emptyObject, nil
}

// unsubscribeResource serves resources/unsubscribe for a session.
func (g *Gateway) unsubscribeResource(ctx context.Context, c *call, params json.RawMessage) (json.RawMessage, *rpc.Error) {
	uri, ok := rpc.StringField(params, "uri")
	if !ok || uri == "" {
		return nil, &rpc.Error{Code: codeInvalidParams, Message: "resources/unsubscribe needs params.uri"}
	}
	// The subscription is held here, or on the replica that took the
	// resources/subscribe.
	if g.unsubscribe(ctx, subscriber{sid: c.clientID}, uri) == 0 {
		g.announce(ctx, c.clientID, "u:"+uri)
	}
	return emptyObject, nil
}

// subscribe subscribes s to uri: on the first member that may hold uri and
// whose upstream declares resources.subscribe, asking that upstream only
// when no other client of the same upstream session is subscribed already.
// params are the upstream request's params (nil: just the uri).
func (g *Gateway) subscribe(ctx context.Context, c *call, uri string, params json.RawMessage, s subscriber) *rpc.Error {
	if params == nil {
		params = append(rpc.AppendString([]byte(`{"uri":`), uri), '}')
	}
	var last *rpc.Error
	asked := 0
	candidates := g.resolveResource(ctx, c, uri)
	for _, m := range candidates {
		sctx, cancel := context.WithTimeout(ctx, g.listTimeout(m.Server))
		sess, rerr := g.session(sctx, c, m)
		cancel()
		if rerr != nil {
			last = rerr
			continue
		}
		if info := sess.Info(); info == nil || !supportsSubscribe(info.Capabilities) {
			continue
		}
		asked++
		if rerr := g.acquireSub(ctx, c, m, uri, params, s); rerr != nil {
			last = rerr
			continue
		}
		return nil
	}
	if asked == 0 && last == nil {
		return &rpc.Error{Code: codeMethodNotFound, Message: "no server of this endpoint that may hold " + quote(uri) + " supports resource subscriptions (resources.subscribe): poll it with resources/read instead"}
	}
	if last == nil || len(candidates) > 1 {
		msg := "resource " + quote(uri) + " could not be subscribed on any server of this endpoint"
		if last != nil {
			msg += " (last: " + last.Message + ")"
		}
		return &rpc.Error{Code: codeResourceNotFound, Message: msg}
	}
	return last
}

// acquireSub adds s to the subscription of (m's upstream session, uri),
// subscribing upstream first when s is the first subscriber.
func (g *Gateway) acquireSub(ctx context.Context, c *call, m *snapshot.Member, uri string, params json.RawMessage, s subscriber) *rpc.Error {
	key := subKey{m.Server.GetName(), upstreamClient(c, m), uri}
	rs := &g.state.subs
	rs.mu.Lock()
	if rs.entries == nil {
		rs.entries = make(map[subKey]*subEntry)
		rs.bySubber = make(map[subscriber]map[subKey]struct{})
	}
	e := rs.entries[key]
	first := e == nil
	if first {
		cc := *c
		e = &subEntry{ready: make(chan struct{}), c: &cc, m: m, subs: map[subscriber]struct{}{}}
		rs.entries[key] = e
	}
	e.subs[s] = struct{}{}
	bs := rs.bySubber[s]
	if bs == nil {
		bs = map[subKey]struct{}{}
		rs.bySubber[s] = bs
	}
	bs[key] = struct{}{}
	var watch *subWatch
	if s.sid != "" && rs.watches[s.sid] == nil {
		if rs.watches == nil {
			rs.watches = make(map[string]*subWatch)
		}
		// Its cancel is set once the watch runs; dropKeyLocked may end it
		// before.
		watch = &subWatch{}
		rs.watches[s.sid] = watch
	}
	rs.mu.Unlock()
	if watch != nil {
		g.watchSubscriptions(s.sid, watch)
	}

	if first {
		_, rerr := g.callUpstream(ctx, c, m, "resources/subscribe", params, g.listTimeout(m.Server))
		rs.mu.Lock()
		e.err = rerr
		abandoned := rs.entries[key] != e
		if rerr != nil && !abandoned {
			// Every subscriber that joined meanwhile gets the refusal too.
			delete(rs.entries, key)
			for sub := range e.subs {
				rs.dropKeyLocked(sub, key)
			}
		}
		close(e.ready)
		rs.mu.Unlock()
		if rerr == nil && abandoned {
			// Every subscriber left while the upstream subscribed: undo it.
			g.unsubscribeUpstream(key, e)
		}
		return rerr
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		g.releaseSub(s, key)
		return upstreamError(ctx, m.Server.GetName(), ctx.Err(), 0)
	}
	return e.err
}

func (rs *resourceSubs) dropKeyLocked(s subscriber, key subKey) {
	if bs := rs.bySubber[s]; bs != nil {
		delete(bs, key)
		if len(bs) == 0 {
			delete(rs.bySubber, s)
			if w := rs.watches[s.sid]; s.sid != "" && w != nil {
				if w.cancel != nil {
					w.cancel()
				}
				delete(rs.watches, s.sid)
			}
		}
	}
}

// watchSubscriptions listens, while session sid has subscriptions here, on
// its subscription topic: its unsubscribe or its end may reach another
// replica.
func (g *Gateway) watchSubscriptions(sid string, w *subWatch) {
	ctx, cancel := context.WithCancel(g.ctx)
	ch, err := g.bus.Subscribe(ctx, subscriptionTopic(sid))
	if err != nil {
		cancel()
		g.log.Warn("could not listen for a session's unsubscriptions from other replicas", "err", err)
		return
	}
	rs := &g.state.subs
	rs.mu.Lock()
	if rs.watches[sid] != w {
		// Its subscriptions went meanwhile.
		rs.mu.Unlock()
		cancel()
		return
	}
	w.cancel = cancel
	rs.mu.Unlock()
	g.goOwned(func() {
		defer cancel()
		for m := range ch {
			switch {
			case string(m) == "e":
				g.dropClient(sid)
			case strings.HasPrefix(string(m), "u:"):
				g.unsubscribe(ctx, subscriber{sid: sid}, string(m[2:]))
			}
		}
	})
}

// announce tells the other replicas what to do with session sid's
// subscriptions they hold.
func (g *Gateway) announce(ctx context.Context, sid, what string) {
	if _, err := g.bus.Publish(ctx, subscriptionTopic(sid), []byte(what)); err != nil {
		g.log.Warn("could not tell other replicas of a session's unsubscription", "err", err)
	}
}

// releaseSub removes s from one subscription; the last subscriber's
// departure unsubscribes upstream.
func (g *Gateway) releaseSub(s subscriber, key subKey) {
	rs := &g.state.subs
	rs.mu.Lock()
	e := rs.entries[key]
	rs.dropKeyLocked(s, key)
	if e == nil {
		rs.mu.Unlock()
		return
	}
	delete(e.subs, s)
	last := len(e.subs) == 0
	if last {
		delete(rs.entries, key)
	}
	rs.mu.Unlock()
	if !last {
		return
	}
	select {
	case <-e.ready:
		if e.err != nil {
			return
		}
	default:
		// The subscribe is still in flight: its caller unsubscribes once
		// it lands, finding the entry gone.
		return
	}
	g.unsubscribeUpstream(key, e)
}

// unsubscribeUpstream ends one upstream subscription, best effort.
func (g *Gateway) unsubscribeUpstream(key subKey, e *subEntry) {
	params := append(rpc.AppendString([]byte(`{"uri":`), key.uri), '}')
	// On Close, nothing: the upstream sessions end with the pool.
	ctx, cancel := context.WithTimeout(g.ctx, g.listTimeout(e.m.Server))
	defer cancel()
	if _, rerr := g.callUpstream(ctx, e.c, e.m, "resources/unsubscribe", params, g.listTimeout(e.m.Server)); rerr != nil {
		g.log.Debug("resources/unsubscribe not applied upstream", "server", key.server, "uri", key.uri, "err", rerr.Message)
	}
}

// unsubscribe removes s's subscriptions to uri here and says how many.
func (g *Gateway) unsubscribe(_ context.Context, s subscriber, uri string) int {
	rs := &g.state.subs
	rs.mu.Lock()
	var keys []subKey
	for k := range rs.bySubber[s] {
		if k.uri == uri {
			keys = append(keys, k)
		}
	}
	rs.mu.Unlock()
	for _, k := range keys {
		g.releaseSub(s, k)
	}
	return len(keys)
}

// dropSubscriber removes every subscription of s (its session ended, its
// listen stream closed).
func (g *Gateway) dropSubscriber(s subscriber) {
	rs := &g.state.subs
	rs.mu.Lock()
	var keys []subKey
	for k := range rs.bySubber[s] {
		keys = append(keys, k)
	}
	rs.mu.Unlock()
	for _, k := range keys {
		g.releaseSub(s, k)
	}
}

// upstreamResourceUpdated delivers an upstream's
// notifications/resources/updated to the clients subscribed to its URI on
// that upstream session.
func (g *Gateway) upstreamResourceUpdated(server, clientID string, msg *rpc.Message) {
	uri, ok := rpc.StringField(msg.Params, "uri")
	if !ok {
		g.log.Debug("upstream sent notifications/resources/updated without a uri", "server", server)
		return
	}
	rs := &g.state.subs
	rs.mu.Lock()
	var sids []string
	var listens []*listener
	for k, e := range rs.entries {
		// The update may name a sub-resource of the subscribed URI.
		if k.server != server || k.client != clientID || !catalog.CoversURI(k.uri, uri) {
			continue
		}
		for s := range e.subs {
			if s.listen != nil {
				listens = append(listens, s.listen)
			} else {
				sids = append(sids, s.sid)
			}
		}
	}
	rs.mu.Unlock()
	if len(sids) == 0 && len(listens) == 0 {
		return
	}
	if len(sids) > 0 {
		raw := rpc.AppendMessage(nil, msg)
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		for _, sid := range sids {
			if !g.sendToSession(ctx, sid, raw) {
				g.log.Debug("resource update for a session with no open stream", "session", sid, "uri", uri)
			}
		}
		cancel()
	}
	for _, l := range listens {
		l.send(listenNotification(msg.Method, l.id, msg.Params))
	}
}

// dropClient forgets what the gateway keeps for a downstream session that
// ended: its resource subscriptions and list baselines.
func (g *Gateway) dropClient(sid string) {
	g.dropSubscriber(subscriber{sid: sid})
	g.state.lists.dropScope(sid)
}

// dropClientAsync is dropClient for a session that ended (DELETE, its SSE
// stream closed), here and on the other replicas, off the caller's
// goroutine (upstream unsubscribes take time), owned by the gateway.
func (g *Gateway) dropClientAsync(sid string) {
	g.goOwned(func() {
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		defer cancel()
		g.announce(ctx, sid, "e")
		g.dropClient(sid)
	})
}

// dropIdleClient is dropClient for a session this replica saw idle: only
// its state here goes (the session may live on at another replica).
func (g *Gateway) dropIdleClient(sid string) {
	g.state.subs.mu.Lock()
	has := len(g.state.subs.bySubber[subscriber{sid: sid}]) > 0
	g.state.subs.mu.Unlock()
	if !has {
		g.dropClient(sid) // no upstream call: cheap
		return
	}
	g.goOwned(func() { g.dropClient(sid) })
}

// resolveResource returns the members that may hold uri, like
// resourceMembers, but first learns the endpoint's resources and templates
// when uri is not routed yet: a subscription must reach the server that
// holds the resource, and many servers accept a subscription to any URI, so
// trying members in order would subscribe the wrong one and never hear an
// update.
func (g *Gateway) resolveResource(ctx context.Context, c *call, uri string) []*snapshot.Member {
	if _, ok := g.routes.get(c.t).Lookup(uri); !ok {
		for _, k := range []catalog.Kind{catalog.Resources, catalog.Templates} {
			if _, rerr := g.list(ctx, c, k, nil); rerr != nil {
				g.log.Debug("could not learn resource routes", "endpoint", c.t.name, "err", rerr.Message)
			}
		}
	}
	return g.resourceMembers(c, uri)
}
