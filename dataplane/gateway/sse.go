package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/session"
	"github.com/metamcp/metamcp/dataplane/upstream"
	"github.com/metamcp/metamcp/pkg/identity"
)

// sseStream is one open 2024-11-05 SSE stream: responses to the POSTs of its
// session go out on it.
type sseStream struct {
	id     string
	out    chan []byte
	ctx    context.Context // ends with the stream
	cancel context.CancelFunc
	wg     sync.WaitGroup // requests being served for this stream
}

// send queues an event for the stream; it gives up when the stream ends.
func (s *sseStream) send(b []byte) {
	select {
	case s.out <- b:
	case <-s.ctx.Done():
	}
}

// serveSSE serves GET /metamcp/{endpoint}/sse: the stream of a 2024-11-05 session.
func (g *Gateway) serveSSE(w http.ResponseWriter, r *http.Request) {
	t, ok := g.lookupEndpoint(w, r, true)
	if !ok {
		return
	}
	who, ok := g.authenticate(w, r, t)
	if !ok {
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeHTTPError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "the SSE endpoint takes GET; POST messages to the URL of its endpoint event")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeHTTPError(w, http.StatusInternalServerError, codeInternalError, "streaming is not supported by this server")
		return
	}
	sid, err := g.sessions.Create(&session.Info{Endpoint: t.name, Principal: who.Name})
	if err != nil {
		writeHTTPError(w, http.StatusInternalServerError, codeInternalError, "could not create a session; retry")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	s := &sseStream{id: sid, out: make(chan []byte, sseResponseQueue), ctx: ctx, cancel: cancel}
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		cancel()
		g.sessions.End(sid)
		writeHTTPError(w, http.StatusServiceUnavailable, codeServerError, "the data plane is shutting down")
		return
	}
	g.sse[sid] = s
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()
	// An open stream is a live session, whatever the idle TTL: the session
	// ends with the stream (or Close, or the stream's failed write).
	g.sessions.Acquire(sid)
	stop := context.AfterFunc(g.ctx, cancel)
	// Messages for the session from anywhere (related to no POST: the
	// 2024-11-05 transport has only this stream) arrive on its topic.
	bus, err := g.bus.Subscribe(ctx, streamTopic(sid))
	if err != nil {
		g.log.Warn("could not subscribe an SSE session's topic", "err", err)
		bus = nil
	}
	// An initialize another replica received comes on its own topic.
	if inits, err := g.bus.Subscribe(ctx, initTopic(sid)); err != nil {
		g.log.Warn("could not subscribe an SSE session's initialize topic", "err", err)
	} else {
		s.wg.Add(1)
		go g.serveInitializes(s, t, sid, inits)
	}
	removeStream := g.addLocalStream(sid, t.name, cancel)
	defer func() {
		removeStream()
		stop()
		cancel()
		// No request joins s.wg once the stream is out of the map.
		g.mu.Lock()
		delete(g.sse, sid)
		g.mu.Unlock()
		s.wg.Wait()
		g.sessions.Release(sid)
		g.endSession(sid)
	}()

	endpoint := "message?sessionId=" + url.QueryEscape(sid)
	if key, from := credential(r, t.ep.Endpoint.GetAuth()); from == "query" {
		// The client authenticates by query string only: its POSTs must too.
		endpoint += "&api_key=" + url.QueryEscape(key)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("event: endpoint\ndata: " + endpoint + "\n\n")); err != nil {
		return
	}
	flusher.Flush()
	g.pumpStream(ctx, &streamWriter{w: w}, bus, s.out, "")
}

// endSSE closes the stream of a session, if it has one.
func (g *Gateway) endSSE(sid string) {
	g.mu.Lock()
	s := g.sse[sid]
	g.mu.Unlock()
	if s != nil {
		s.cancel()
	}
}

// serveMessage serves POST /metamcp/{endpoint}/message?sessionId=...: it
// answers 202 and sends the response on the session's stream.
func (g *Gateway) serveMessage(w http.ResponseWriter, r *http.Request) {
	t, ok := g.lookupEndpoint(w, r, true)
	if !ok {
		return
	}
	who, ok := g.authenticate(w, r, t)
	if !ok {
		return
	}
	principal := who.Name
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeHTTPError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "POST messages here")
		return
	}
	sid := r.URL.Query().Get("sessionId")
	if sid == "" {
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "missing sessionId: open the SSE stream first and POST to the URL of its endpoint event")
		return
	}
	info, ok := g.sessions.Open(sid)
	if !ok {
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: its SSE stream ended; open a new one")
		return
	}
	if info.Endpoint != t.name || info.Principal != principal {
		writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, "this session belongs to another caller or endpoint")
		return
	}
	msg, size, ok := g.readMessage(w, r)
	if !ok {
		return
	}
	if !msg.IsRequest() {
		// Responses to server-to-client requests, cancellations, roots changes.
		g.clientNotification(r.Context(), t, sid, msg)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	c := call{t: t, principal: principal, who: who, clientID: sid, version: info.ProtocolVersion, clientIP: g.clientIP(r), reqBytes: size,
		clientInfo: info.ClientInfo, session: info.ID, trace: headerValue(r.Header, headerTraceparent)}
	// Serve on the stream's context: the answer goes out there, not here.
	g.mu.Lock()
	s := g.sse[sid]
	if s != nil {
		s.wg.Add(1)
	}
	g.mu.Unlock()
	if s == nil {
		// The stream is open on another replica (or nowhere): serve here and
		// send the answer to the stream through the session's topic.
		g.serveMessageRemote(w, c, info, msg)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	go g.serveOnStream(s, c, sid, info, msg)
}

// serveOnStream serves a request of a 2024-11-05 session whose stream s is
// on this replica, and sends the answer there. The caller has added it to
// s.wg.
func (g *Gateway) serveOnStream(s *sseStream, c call, sid string, info *session.Info, msg *rpc.Message) {
	defer s.wg.Done()
	pc := &postCall{call: c}
	pc.relay = relay{g: g, c: &pc.call, reqID: msg.ID, caps: info.ClientCapabilities, reqCtx: s.ctx, sse: s}
	pc.ctx = upstream.CallerContext{Caller: &pc.relay}
	var result json.RawMessage
	var rerr *rpc.Error
	if msg.Method == "initialize" {
		result, rerr = g.initializeSSE(s.ctx, &pc.call, sid, info, msg)
	} else {
		g.addInflight(&pc.relay)
		result, rerr = g.dispatch(pc.context(s.ctx), &pc.call, msg)
		g.removeInflight(&pc.relay)
	}
	pc.relay.finish()
	if pc.relay.wasCancelled() {
		return // a cancelled request gets no response
	}
	s.send(g.responseBytes(msg.ID, result, rerr, false))
}

// initTopic carries a 2024-11-05 session's initialize to the replica that
// holds its SSE stream: initialize updates the session there, and its
// answer goes out on the stream.
func initTopic(sid string) string { return "mm/i/" + sid }

// busInitialize is an initialize on its way to the stream's replica.
type busInitialize struct {
	Who      *identity.Principal `json:"who"`
	ClientIP string              `json:"ip"`
	Trace    string              `json:"trace,omitempty"`
	Msg      json.RawMessage     `json:"msg"`
}

// serveInitializes serves the initializes of session sid that other
// replicas received, until the stream ends.
func (g *Gateway) serveInitializes(s *sseStream, t target, sid string, inits <-chan []byte) {
	defer s.wg.Done()
	for b := range inits {
		var bi busInitialize
		if json.Unmarshal(b, &bi) != nil {
			continue
		}
		msg, err := rpc.Parse(bi.Msg)
		if err != nil || msg.Method != "initialize" || !msg.IsRequest() {
			continue
		}
		info, ok := g.sessions.Open(sid)
		if !ok {
			return
		}
		principal := ""
		if bi.Who != nil {
			principal = bi.Who.Name
		}
		if principal != info.Principal {
			continue // not the session's caller: the sender checked, but trust no bus
		}
		c := call{t: t, principal: principal, who: bi.Who, clientID: sid, version: info.ProtocolVersion, clientIP: bi.ClientIP,
			clientInfo: info.ClientInfo, session: info.ID, trace: bi.Trace}
		s.wg.Add(1)
		g.serveOnStream(s, c, sid, info, msg)
	}
}

// serveMessageRemote serves a request of a 2024-11-05 session whose stream
// is not on this replica: the answer, and what upstreams send about the
// call, go to the stream through the session's topic.
func (g *Gateway) serveMessageRemote(w http.ResponseWriter, c call, info *session.Info, msg *rpc.Message) {
	if msg.Method == "initialize" {
		// initialize updates the session where its stream is: it goes
		// there, and is answered on the stream.
		b, err := json.Marshal(busInitialize{Who: c.who, ClientIP: c.clientIP, Trace: c.trace, Msg: rpc.AppendMessage(nil, msg)})
		if err == nil {
			var n int
			if n, err = g.bus.Publish(g.ctx, initTopic(c.clientID), b); err == nil && n > 0 {
				w.WriteHeader(http.StatusAccepted)
				return
			}
		}
		if err != nil {
			g.log.Warn("could not pass an initialize to its session's stream", "err", err)
		}
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: its SSE stream ended; open a new one")
		return
	}
	if _, ok := g.sessions.Acquire(c.clientID); !ok {
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: its SSE stream ended; open a new one")
		return
	}
	w.WriteHeader(http.StatusAccepted)
	sid := c.clientID
	g.goOwned(func() {
		defer g.release(sid)
		pc := &postCall{call: c}
		pc.relay = relay{g: g, c: &pc.call, reqID: msg.ID, caps: info.ClientCapabilities, reqCtx: g.ctx}
		pc.ctx = upstream.CallerContext{Caller: &pc.relay}
		g.addInflight(&pc.relay)
		result, rerr := g.dispatch(pc.context(g.ctx), &pc.call, msg)
		g.removeInflight(&pc.relay)
		pc.relay.finish()
		if pc.relay.wasCancelled() {
			return // a cancelled request gets no response
		}
		if !g.sendToSession(g.ctx, sid, g.responseBytes(msg.ID, result, rerr, false)) {
			g.log.Debug("the answer to an SSE session's request found no stream", "method", msg.Method)
		}
	})
}

// initializeSSE negotiates the version of an SSE session.
func (g *Gateway) initializeSSE(ctx context.Context, c *call, sid string, info *session.Info, msg *rpc.Message) (json.RawMessage, *rpc.Error) {
	var p struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ClientInfo      json.RawMessage `json:"clientInfo"`
	}
	if len(msg.Params) > 0 {
		if err := json.Unmarshal(msg.Params, &p); err != nil {
			return nil, &rpc.Error{Code: codeInvalidParams, Message: "invalid initialize params: " + err.Error()}
		}
	}
	v := negotiate(p.ProtocolVersion)
	if p.ProtocolVersion == "" {
		v = version20241105
	}
	n := *info
	n.ProtocolVersion, n.ClientCapabilities, n.ClientInfo = v, p.Capabilities, p.ClientInfo
	g.sessions.Update(sid, &n)
	c.version = v
	return g.initializeResult(ctx, c, v), nil
}
