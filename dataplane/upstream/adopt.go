package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Sessions that move between data planes: a downstream session started on one
// data plane may continue on another (its sealed id carries what is needed).
// A per_client Streamable HTTP upstream session is just its Mcp-Session-Id, so
// the other data plane adopts it: a session object with that id and no new
// initialize. Stdio processes and SSE streams cannot move.

// ErrSessionExpired is the cause of a call on a Streamable HTTP session the
// upstream no longer knows (HTTP 404).
var ErrSessionExpired = errSessionExpired

// SessionRef names a Streamable HTTP upstream session: enough for another
// data plane to adopt it.
type SessionRef struct {
	SessionID       string // Mcp-Session-Id
	ProtocolVersion string // negotiated at initialize
}

// CarryClientSessions returns the per_client Streamable HTTP sessions of
// clientID that have an upstream session id, by server name (nil when none),
// and marks them carried: other data planes may adopt them, so closing them
// here (idle, Update, CloseClient, Close) no longer ends them upstream. End
// them with EndUpstream when the downstream session ends.
func (p *Pool) CarryClientSessions(clientID string) map[string]SessionRef {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out map[string]SessionRef
	for name, st := range p.servers {
		e := st.perClient[clientID]
		if e == nil || st.cfg.GetStreamableHttp() == nil {
			continue
		}
		s := e.live()
		if s == nil {
			continue
		}
		t, ok := s.t.(*httpTransport)
		if !ok {
			continue
		}
		t.mu.Lock()
		var ref SessionRef
		if t.sessionID != nil {
			ref.SessionID = t.sessionID[0]
			t.keep = true
		}
		t.mu.Unlock()
		if ref.SessionID == "" {
			continue // a stateless upstream: nothing to carry
		}
		if s.info != nil {
			ref.ProtocolVersion = s.info.ProtocolVersion
		}
		if out == nil {
			out = make(map[string]SessionRef)
		}
		out[name] = ref
	}
	return out
}

// HasClient reports whether server has a per_client session (connecting or
// live) for clientID on this data plane.
func (p *Pool) HasClient(server, clientID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.servers[server]
	return st != nil && st.perClient[clientID] != nil
}

// Adopt returns the per_client session of clientID with a Streamable HTTP
// server, taking over the upstream session ref (opened by another data plane,
// or by this one before it was reaped) when this data plane has none for
// clientID: no initialize, and the server's Info borrowed from another
// session of it (the protocol version is ref's), or learnt from a session
// initialized only for that (see learnInfo) when this data plane has never
// had one. Should the upstream refuse the session (404: it ended it), a
// call through the returned session is retried once on a fresh one. For
// anything else (another transport, no ref, all slots taken) it is Session.
func (p *Pool) Adopt(ctx context.Context, server, clientID string, ref SessionRef) (Session, error) {
	return p.adopt(ctx, server, clientID, ref, true)
}

func (p *Pool) adopt(ctx context.Context, server, clientID string, ref SessionRef, mayLearn bool) (Session, error) {
	p.mu.Lock()
	st := p.servers[server]
	if p.closed || st == nil || clientID == "" || ref.SessionID == "" || !perClient(st.cfg) ||
		st.cfg.GetStreamableHttp() == nil || st.client == nil {
		p.mu.Unlock()
		return p.Session(ctx, server, clientID)
	}
	if e := st.perClient[clientID]; e != nil {
		// A session of clientID is here already (adopted, or opened here).
		select {
		case <-e.ready:
			if e.err == nil && e.sess != nil && !e.sess.dead() {
				e.sess.touch()
				p.mu.Unlock()
				return &adoptedSession{Session: e.sess, p: p, st: st, e: e}, nil
			}
		default:
		}
		p.mu.Unlock()
		return p.Session(ctx, server, clientID)
	}
	if st.live >= p.maxSlots(st) {
		p.mu.Unlock()
		return p.Session(ctx, server, clientID)
	}
	info, known := p.borrowInfoLocked(st, ref.ProtocolVersion)
	if !known && mayLearn {
		// Without the server's capabilities the client could not use
		// what the server offers (resources/subscribe, say).
		cfg, client := st.cfg, st.client
		p.mu.Unlock()
		p.learnInfo(ctx, st, cfg, client)
		return p.adopt(ctx, server, clientID, ref, false)
	}
	log := st.log.With("client", clientID)
	s := newSession(st.name, clientID, st.cfg, &p.opts, log)
	t := newHTTPTransport(st.cfg, st.client, p.maxResponse(), log, s.onMessage)
	t.gap = s.dropAllLists
	t.sessionID, t.keep = []string{ref.SessionID}, true
	if ref.ProtocolVersion != "" {
		t.version = []string{ref.ProtocolVersion}
	}
	s.t = t
	s.info = info
	s.setListCapabilities(s.info.Capabilities)
	e := &entry{clientID: clientID, ready: make(chan struct{}), sess: s}
	close(e.ready)
	st.perClient[clientID] = e
	st.live++
	p.sessions[s] = struct{}{}
	p.wg.Add(1)
	go p.watch(st, e, s)
	p.mu.Unlock()
	t.listen()
	log.Debug("adopted an upstream session opened by another data plane")
	return &adoptedSession{Session: s, p: p, st: st, e: e}, nil
}

// borrowInfoLocked returns the Info of another live session of st, else
// of the last one initialized here, else one with only the protocol version
// (known false).
func (p *Pool) borrowInfoLocked(st *serverState, version string) (info *Info, known bool) {
	var from *Info
	if e := st.shared; e != nil && e.sess != nil {
		from = e.sess.info
	}
	for _, e := range st.perClient {
		if from != nil {
			break
		}
		if e.sess != nil {
			from = e.sess.info
		}
	}
	if from == nil {
		from = st.known
	}
	info = &Info{ProtocolVersion: version}
	if from != nil {
		info.Capabilities, info.ServerInfo, info.Instructions = from.Capabilities, from.ServerInfo, from.Instructions
		if version == "" {
			info.ProtocolVersion = from.ProtocolVersion
		}
	}
	return info, from != nil
}

// learnInfo initializes a session of st's server only to learn its Info
// (kept as st.known), and ends it at once. It fails quietly: the adopted
// session then goes without the server's capabilities.
func (p *Pool) learnInfo(ctx context.Context, st *serverState, cfg *metamcpv1.Server, client *http.Client) {
	ctx, cancel := context.WithTimeout(ctx, InitTimeout(cfg, p.opts.DefaultInitTimeout))
	defer cancel()
	s := newSession(st.name, "", cfg, &p.opts, st.log)
	t := newHTTPTransport(cfg, client, p.maxResponse(), st.log, s.onMessage)
	s.t = t
	err := s.initialize(ctx)
	s.close()
	if err != nil || s.info == nil {
		st.log.Debug("could not learn the server's capabilities for an adopted session", "err", err)
		return
	}
	p.mu.Lock()
	if st.known == nil {
		st.known = s.info
	}
	p.mu.Unlock()
}

// adoptedSession is an adopted session whose first failure with 404 (the
// upstream ended the session meanwhile) is retried on a fresh one.
type adoptedSession struct {
	Session
	p  *Pool
	st *serverState
	e  *entry
}

// Call implements Session.
func (a *adoptedSession) Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	res, err := a.Session.Call(ctx, method, params)
	if !errors.Is(err, errSessionExpired) {
		return res, err
	}
	// The upstream never saw this request (it refused the session): send
	// it again on a fresh session. Unmapping the entry first also keeps the
	// 404 from counting as a failure of the server (see watch).
	a.p.mu.Lock()
	if a.st.perClient[a.e.clientID] == a.e {
		delete(a.st.perClient, a.e.clientID)
	}
	a.p.mu.Unlock()
	s, err := a.p.Session(ctx, a.st.name, a.e.clientID)
	if err != nil {
		return nil, err
	}
	return s.Call(ctx, method, params)
}

// List implements Lister, with Call's retry on a fresh session.
func (a *adoptedSession) List(ctx context.Context, method, cursor string) (*ListPage, error) {
	l := a.Session.(Lister)
	page, err := l.List(ctx, method, cursor)
	if !errors.Is(err, errSessionExpired) {
		return page, err
	}
	a.p.mu.Lock()
	if a.st.perClient[a.e.clientID] == a.e {
		delete(a.st.perClient, a.e.clientID)
	}
	a.p.mu.Unlock()
	s, err := a.p.Session(ctx, a.st.name, a.e.clientID)
	if err != nil {
		return nil, err
	}
	return s.(Lister).List(ctx, method, cursor)
}

// EndUpstream ends a carried upstream session at the server (DELETE, best
// effort, in the background): its downstream session ended. A session of it
// still open here is not closed (see CloseClient).
func (p *Pool) EndUpstream(server string, ref SessionRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.servers[server]
	if p.closed || st == nil || st.client == nil || st.cfg.GetStreamableHttp() == nil || ref.SessionID == "" {
		return
	}
	url, client := st.cfg.GetStreamableHttp().GetUrl(), st.client
	headers := httpHeaders(st.cfg.GetStreamableHttp())
	log := st.log
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
		if err != nil {
			return
		}
		for k, v := range headers {
			req.Header[k] = v
		}
		req.Header.Set("Mcp-Session-Id", ref.SessionID)
		if ref.ProtocolVersion != "" {
			req.Header.Set("Mcp-Protocol-Version", ref.ProtocolVersion)
		}
		resp, err := client.Do(req)
		if err != nil {
			log.Debug("ending an upstream session failed", "err", cleanURLError(err))
			return
		}
		drain(resp)
	}()
}
