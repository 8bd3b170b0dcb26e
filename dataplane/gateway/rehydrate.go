package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/session"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// The gateway names a downstream session by its sealed id (sid) everywhere:
// call.clientID, bus topics, SSE streams. Upstream sessions are keyed by the
// session's stable ID instead (session.Info.ID, inside the sealed id), because
// the per_client upstream sessions are opened at initialize, before the
// sealed id that carries their ids exists. sessionUpstreams sits between the
// gateway and the pool: it turns a sid into that key (and the key back into
// the sid for what the pool reports to the gateway's Events), adopts the
// per_client Streamable HTTP upstream sessions the id carries where the
// replica has none, and on a replica that did not create the session refuses
// per_client servers whose sessions cannot move (stdio processes, SSE
// streams).

// adopter is what sessionUpstreams needs of the pool beyond Upstreams
// (*upstream.Pool implements it).
type adopter interface {
	Upstreams
	Adopt(ctx context.Context, server, clientID string, ref upstream.SessionRef) (upstream.Session, error)
	HasClient(server, clientID string) bool
	CarryClientSessions(clientID string) map[string]upstream.SessionRef
	EndUpstream(server string, ref upstream.SessionRef)
}

// errCannotMove is the cause of a request for a per_client upstream whose
// session lives on another replica and cannot move.
var errCannotMove = errors.New("cannot move")

type sessionUpstreams struct {
	inner  adopter
	store  *session.Sealed
	config interface{ Current() *snapshot.Compiled }
	// closing is set by Gateway.Close: sessions ended then are not ended
	// upstream.
	closing atomic.Bool
}

// key returns the pool key of a clientID: the session's ID for a sealed id
// of this store, else clientID itself (IDs during initialize, stateless keys).
func (u *sessionUpstreams) key(clientID string) (string, *session.Info) {
	if clientID == "" {
		return "", nil
	}
	info, ok := u.store.ClientKey(clientID)
	if !ok {
		return clientID, nil
	}
	return info.ID, info
}

// Session implements Upstreams.
func (u *sessionUpstreams) Session(ctx context.Context, server, clientID string) (upstream.Session, error) {
	key, info := u.key(clientID)
	if info == nil {
		return u.inner.Session(ctx, server, key)
	}
	var cfg *metamcpv1.Server
	if u.config != nil {
		if cur := u.config.Current(); cur != nil {
			cfg = cur.Servers[server]
		}
	}
	if cfg.GetSessionMode() != metamcpv1.SessionMode_SESSION_MODE_PER_CLIENT {
		return u.inner.Session(ctx, server, key)
	}
	if u.store.EndedHere(info.ID) {
		// Work that outlived its session (a list baseline computed in the
		// background, say) must not open or adopt upstream sessions for it
		// again: nothing would close them before the pool's idle reap.
		return nil, &upstream.Error{Server: server, Err: fmt.Errorf("%w: the session ended: initialize a new session", upstream.ErrSessionClosed)}
	}
	if cfg.GetStreamableHttp() != nil {
		// On every replica, the creating one included: Adopt uses the
		// session there is, else takes over the carried one, and retries a
		// call the upstream refuses with 404 on a fresh session.
		for _, ref := range info.Upstreams {
			if ref.Server == server {
				return u.inner.Adopt(ctx, server, key, upstream.SessionRef{SessionID: ref.SessionID, ProtocolVersion: ref.ProtocolVersion})
			}
		}
		// Nothing carried (the upstream keeps no session id, or joined the
		// endpoint later): a fresh session where there is none.
		return u.inner.Session(ctx, server, key)
	}
	if info.Local || u.inner.HasClient(server, key) {
		return u.inner.Session(ctx, server, key)
	}
	kind := "process"
	if cfg.GetSse() != nil {
		kind = "SSE stream"
	}
	return nil, &upstream.Error{Server: server, Err: fmt.Errorf("%w: this session was started on another data plane, and upstream %q keeps a per_client session there (a %s) that cannot move to this one: initialize a new session", errCannotMove, server, kind)}
}

// CloseClient implements Upstreams: the downstream session ended here
// (DELETE, idle sweep). Its carried upstream sessions, which other replicas
// may have adopted and which closing here leaves alive, are ended upstream
// too, except while the gateway shuts down: then the session lives on on
// the other replicas.
func (u *sessionUpstreams) CloseClient(clientID string) {
	key, info := u.key(clientID)
	u.inner.CloseClient(key)
	if info == nil || u.closing.Load() {
		return
	}
	for _, ref := range info.Upstreams {
		u.inner.EndUpstream(ref.Server, upstream.SessionRef{SessionID: ref.SessionID, ProtocolVersion: ref.ProtocolVersion})
	}
}

// closeLocal closes what this replica opened for a downstream session that
// ended on another replica (which ended its upstream sessions).
func (u *sessionUpstreams) closeLocal(clientID string) {
	key, _ := u.key(clientID)
	u.inner.CloseClient(key)
}

// upstreamRefs returns the per_client Streamable HTTP upstream sessions
// opened for key, for the sealed id.
func (u *sessionUpstreams) upstreamRefs(key string) []session.Upstream {
	refs := u.inner.CarryClientSessions(key)
	if len(refs) == 0 {
		return nil
	}
	out := make([]session.Upstream, 0, len(refs))
	for server, r := range refs {
		out = append(out, session.Upstream{Server: server, SessionID: r.SessionID, ProtocolVersion: r.ProtocolVersion})
	}
	return out
}

// withSessionUpstreams puts sessionUpstreams in front of pool when sessions
// are sealed and the pool can adopt.
func withSessionUpstreams(pool Upstreams, sessions session.Store, config interface{ Current() *snapshot.Compiled }) Upstreams {
	ss, ok := sessions.(*session.Sealed)
	if !ok || pool == nil {
		return pool
	}
	a, ok := pool.(adopter)
	if !ok {
		return pool
	}
	return &sessionUpstreams{inner: a, store: ss, config: config}
}

// upstreamRefs returns the per_client Streamable HTTP upstream sessions opened
// for the session ID id, for its sealed id.
func (g *Gateway) upstreamRefs(id string) []session.Upstream {
	if u, ok := g.pool.(*sessionUpstreams); ok {
		return u.upstreamRefs(id)
	}
	return nil
}

// upstreamEvents is what the pool reports to: the gateway, which hears what
// upstreams send outside client calls. With sealed sessions the pool names
// a per_client upstream session's client by the session's ID, the gateway
// by its sid: sessionEvents maps one to the other.
func (g *Gateway) upstreamEvents() upstream.Events {
	return withSessionEvents(events{g}, g.sessions)
}

// withSessionEvents puts sessionEvents in front of e when sessions are sealed.
func withSessionEvents(e upstream.Events, sessions session.Store) upstream.Events {
	if ss, ok := sessions.(*session.Sealed); ok {
		return sessionEvents{e: e, store: ss}
	}
	return e
}

// Live returns the live session with server for a downstream session (sid)
// without connecting, when the pool can tell.
func (u *sessionUpstreams) Live(server, clientID string) (upstream.Session, bool) {
	p, ok := u.inner.(interface {
		Live(server, clientID string) (upstream.Session, bool)
	})
	if !ok {
		return nil, false
	}
	key, _ := u.key(clientID)
	return p.Live(server, key)
}

// sessionEvents turns the session IDs the pool reports into sids.
type sessionEvents struct {
	e     upstream.Events
	store *session.Sealed
}

func (s sessionEvents) Notification(server, clientID string, msg *rpc.Message) {
	s.e.Notification(server, s.store.SIDOf(clientID), msg)
}

func (s sessionEvents) Request(ctx context.Context, server, clientID string, msg *rpc.Message) (json.RawMessage, error) {
	return s.e.Request(ctx, server, s.store.SIDOf(clientID), msg)
}
