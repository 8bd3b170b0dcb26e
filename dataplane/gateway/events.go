package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// relayState is what the gateway keeps about client calls in flight and
// the sessions' wishes, for the messages that cross between clients and
// upstreams outside plain request and response.
type relayState struct {
	mu sync.Mutex
	// inflight are the calls of session-based clients being served here,
	// by session and request id (for notifications/cancelled).
	inflight map[inflightKey]*relay
	// watched are the sessions whose cancel topic this replica subscribes
	// to, because one of their calls here runs long enough to be worth
	// cancelling from another replica.
	watched map[string]context.CancelFunc
	// levels are the log levels the sessions set (logging/setLevel), as
	// indexes in logLevels; a session not here gets every message.
	levels map[string]int
}

// inflightKey names a call: its session and a hash of its raw request id
// (the relay holds the id itself, compared on lookup).
type inflightKey struct {
	sid string
	id  uint64
}

func hashID(id []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range id {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// cancelWatchAfter is how long a call runs before its replica starts
// listening for cancellations posted to other replicas. Shorter calls are
// cancelled only by a notifications/cancelled that reaches their replica
// (or by the client going away), which costs them nothing.
const cancelWatchAfter = 100 * time.Millisecond

// addInflight registers a session call being served here.
func (g *Gateway) addInflight(r *relay) {
	k := inflightKey{r.c.clientID, hashID(r.reqID)}
	st := &g.relays
	st.mu.Lock()
	if st.inflight == nil {
		st.inflight = make(map[inflightKey]*relay)
	}
	st.inflight[k] = r
	st.mu.Unlock()
}

// removeInflight forgets a call once it is answered.
func (g *Gateway) removeInflight(r *relay) {
	k := inflightKey{r.c.clientID, hashID(r.reqID)}
	st := &g.relays
	st.mu.Lock()
	if st.inflight[k] == r {
		delete(st.inflight, k)
	}
	st.mu.Unlock()
}

// cancelLocal cancels the call requestID of session sid if it runs here.
func (g *Gateway) cancelLocal(sid string, requestID []byte) bool {
	st := &g.relays
	st.mu.Lock()
	r := st.inflight[inflightKey{sid, hashID(requestID)}]
	st.mu.Unlock()
	if r == nil || !bytes.Equal(r.reqID, requestID) {
		return false
	}
	r.cancel()
	return true
}

// clientCancelled handles a client's notifications/cancelled: the call runs
// here, or on another replica that listens on the session's cancel topic.
// Cancellation is best effort, as the protocol says: a short call that runs
// on another replica may finish first.
func (g *Gateway) clientCancelled(sid string, params json.RawMessage) {
	id, ok := rpc.RawField(params, "requestId")
	if !ok || len(id) == 0 {
		return
	}
	if g.cancelLocal(sid, id) {
		return
	}
	id = bytes.Clone(id)
	g.goOwned(func() {
		// The replica running the call subscribes once the call has run
		// for cancelWatchAfter: try again a little later when nobody
		// listened yet.
		for _, wait := range []time.Duration{0, 2 * cancelWatchAfter, 10 * cancelWatchAfter} {
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-g.ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			n, err := g.bus.Publish(g.ctx, cancelTopic(sid), id)
			if err != nil {
				g.log.Warn("could not pass on a client's cancellation", "err", err)
				return
			}
			if n > 0 {
				return
			}
		}
	})
}

// watchCancels runs until Close: every cancelWatchAfter it subscribes to the
// cancel topics of the sessions with calls in flight here since the last
// round, and drops the subscriptions of sessions with none left.
func (g *Gateway) watchCancels() {
	defer g.wg.Done()
	t := time.NewTicker(cancelWatchAfter)
	defer t.Stop()
	prev := map[*relay]bool{}
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		st := &g.relays
		st.mu.Lock()
		if len(st.inflight) == 0 && len(st.watched) == 0 {
			st.mu.Unlock()
			clear(prev)
			continue
		}
		var start []string
		live := map[string]bool{}
		next := make(map[*relay]bool, len(prev))
		for _, r := range st.inflight {
			sid := r.c.clientID
			live[sid] = true
			next[r] = true
			if prev[r] && st.watched[sid] == nil {
				start = append(start, sid)
			}
		}
		for sid, stop := range st.watched {
			if !live[sid] {
				stop()
				delete(st.watched, sid)
			}
		}
		st.mu.Unlock()
		prev = next
		for _, sid := range start {
			g.watchSession(sid)
		}
	}
}

// watchSession subscribes to the cancel topic of sid until its calls here end.
func (g *Gateway) watchSession(sid string) {
	ctx, cancel := context.WithCancel(g.ctx)
	ch, err := g.bus.Subscribe(ctx, cancelTopic(sid))
	if err != nil {
		cancel()
		g.log.Debug("could not listen for a session's cancellations", "err", err)
		return
	}
	st := &g.relays
	st.mu.Lock()
	if st.watched == nil {
		st.watched = make(map[string]context.CancelFunc)
	}
	if st.watched[sid] != nil {
		st.mu.Unlock()
		cancel()
		return
	}
	st.watched[sid] = cancel
	st.mu.Unlock()
	g.goOwned(func() {
		defer cancel()
		for id := range ch {
			g.cancelLocal(sid, id)
		}
	})
}

// logLevels are the MCP (syslog) log levels, least severe first.
var logLevels = []string{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

func levelIndex(level string) int {
	for i, l := range logLevels {
		if l == level {
			return i
		}
	}
	return -1
}

// setSessionLevel records the level a session asked for with
// logging/setLevel: log messages below it are not sent to it. A session
// that set none gets every message.
func (g *Gateway) setSessionLevel(sid, level string) {
	i := levelIndex(level)
	if sid == "" || i < 0 {
		return
	}
	st := &g.relays
	st.mu.Lock()
	if st.levels == nil {
		st.levels = make(map[string]int)
	}
	st.levels[sid] = i
	st.mu.Unlock()
}

// levelAdmits reports whether session sid takes a log message at level.
func (g *Gateway) levelAdmits(sid, level string) bool {
	st := &g.relays
	st.mu.Lock()
	least, ok := st.levels[sid]
	st.mu.Unlock()
	return !ok || levelIndex(level) >= least
}

// forgetSessionState drops what the gateway keeps about an ended session.
func (g *Gateway) forgetSessionState(sid string) {
	st := &g.relays
	st.mu.Lock()
	delete(st.levels, sid)
	st.mu.Unlock()
}

// withLogger sets a log message's logger to the server's name when the
// upstream named none, so a client can tell the sources apart.
func withLogger(msg *rpc.Message, server string) *rpc.Message {
	if server == "" || len(msg.Params) == 0 || msg.Params[0] != '{' {
		return msg
	}
	if _, ok := rpc.RawField(msg.Params, "logger"); ok {
		return msg
	}
	params := rpc.ReplaceField(nil, msg.Params, "logger", rpc.AppendString(nil, server))
	return &rpc.Message{Method: msg.Method, Params: params}
}

// sessionClient reports whether clientID (of a per_client upstream session)
// is a downstream session, not the stand-in of stateless clients.
func sessionClient(clientID string) bool {
	return clientID != "" && !strings.HasPrefix(clientID, "stateless/")
}

// events is the gateway as the pool's upstream.Events: what upstreams send
// that belongs to no client call.
type events struct{ g *Gateway }

// Notification implements upstream.Events.
func (e events) Notification(server, clientID string, msg *rpc.Message) {
	g := e.g
	if g.upstreamNotification(server, clientID, msg) {
		return // list_changed, resources/updated
	}
	switch {
	case msg.Method == "notifications/message":
		g.upstreamLog(server, clientID, msg)
	case msg.Method == "notifications/progress" || msg.Method == "notifications/cancelled":
		// About a call that has ended: nobody to tell.
		g.log.Debug("dropped an upstream notification about no call in flight", "server", server, "method", msg.Method)
	case sessionClient(clientID):
		// A per_client upstream speaks to one client: pass it on.
		g.sendToSession(g.ctx, clientID, rpc.AppendMessage(nil, msg))
	default:
		g.log.Debug("dropped an upstream notification that concerns no client", "server", server, "method", msg.Method)
	}
}

// upstreamLog delivers a log message that belongs to no call: from a
// per_client upstream to its client's stream; from a shared upstream to
// the streams open here of the sessions whose endpoint mounts the server
// (a session's stream is on one replica, and every replica's shared
// session with the server sends its own messages).
func (g *Gateway) upstreamLog(server, clientID string, msg *rpc.Message) {
	level, _ := rpc.StringField(msg.Params, "level")
	b := rpc.AppendMessage(nil, withLogger(msg, server))
	if clientID != "" {
		if sessionClient(clientID) && g.levelAdmits(clientID, level) {
			g.sendToSession(g.ctx, clientID, b)
		}
		return
	}
	if g.opts.Config == nil {
		return
	}
	snap := g.opts.Config.Current()
	if snap == nil {
		return
	}
	for name, ep := range snap.Endpoints {
		if memberByServer(ep, server) == nil {
			continue
		}
		for _, sid := range g.localStreams(name) {
			if g.levelAdmits(sid, level) {
				g.sendToSession(g.ctx, sid, b)
			}
		}
	}
}

// Request implements upstream.Events: a server-to-client request outside
// any client call. A per_client upstream's goes to its client on the
// session's standalone stream; a shared upstream's has nobody to answer it.
func (e events) Request(ctx context.Context, server, clientID string, msg *rpc.Message) (json.RawMessage, error) {
	g := e.g
	if !sessionClient(clientID) {
		return nil, &rpc.Error{Code: codeMethodNotFound, Message: "metamcp cannot send " + quote(msg.Method) + " from upstream " + quote(server) +
			" to a client: the request came outside any client call on a session shared by many clients, so no client is its addressee"}
	}
	info, ok := g.sessions.Open(clientID)
	if !ok {
		return nil, &rpc.Error{Code: codeInternalError, Message: "the client session of this upstream session has ended"}
	}
	if rerr := clientCan(info.ClientCapabilities, msg); rerr != nil {
		return nil, rerr
	}
	send := func(b []byte) bool { return g.sendToSession(ctx, clientID, b) }
	return g.askClient(ctx, clientID, g.nextRequestID(), msg, send, nil, nil)
}

// forwardRootsChanged tells the upstream sessions open for session sid's
// endpoint (its per_client ones and the shared ones) that the client's
// roots changed. Best effort: an upstream not connected now asks for the
// roots when it needs them.
func (g *Gateway) forwardRootsChanged(t target, sid string, params json.RawMessage) {
	live, ok := g.pool.(interface {
		Live(server, clientID string) (upstream.Session, bool)
	})
	if !ok || t.ep == nil {
		return
	}
	params = bytes.Clone(params)
	g.goOwned(func() {
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		defer cancel()
		for _, m := range t.ep.Members {
			if m.Server == nil {
				continue
			}
			if s, ok := live.Live(m.Server.GetName(), sid); ok {
				if err := s.Notify(ctx, "notifications/roots/list_changed", params); err != nil {
					g.log.Debug("roots/list_changed not forwarded", "server", m.Server.GetName(), "err", err)
				}
			}
		}
	})
}

// clientNotification handles what a session's client posts that is not a
// request: responses to server-to-client requests, cancellations, roots
// changes; the rest (initialized, anything unknown) is accepted and dropped.
func (g *Gateway) clientNotification(ctx context.Context, t target, sid string, msg *rpc.Message) {
	switch {
	case msg.IsResponse():
		g.publishResponse(ctx, sid, msg)
	case msg.Method == "notifications/cancelled":
		g.clientCancelled(sid, msg.Params)
	case msg.Method == "notifications/roots/list_changed":
		g.forwardRootsChanged(t, sid, msg.Params)
	}
}
