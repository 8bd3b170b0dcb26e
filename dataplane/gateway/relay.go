package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// A relay carries what upstreams send about one client call back to the
// client: the notifications related to it (progress, log messages) and the
// server-to-client requests made while serving it (sampling, elicitation,
// roots). It is the call's upstream.Caller.
//
// Where it goes depends on the client's transport: on the POST's own
// response, which then becomes an event stream (Streamable HTTP, any
// revision), or on the session's SSE stream (2024-11-05). A server-to-client
// request gets a downstream id of the gateway's, unique per session; the
// client's answer may reach any replica, which publishes it on the session's
// response topic, where the waiting replica picks it up.
//
// A relay lives inside the request's postCall, so a call that receives
// nothing costs no allocation and no goroutine for it.
type relay struct {
	g      *Gateway
	c      *call
	reqID  json.RawMessage // the client's request id
	params json.RawMessage // the client's request params (for a stateless call's log level)
	caps   json.RawMessage // the client's capabilities (session-based clients)
	reqCtx context.Context // the client's request: ends when it goes away

	out *sseResponse // the POST's response (Streamable HTTP), or nil
	sse *sseStream   // the session's stream (2024-11-05), or nil

	mu       sync.Mutex
	finished bool
	done     chan struct{} // made on demand; closed by finish
	// cancels are the cancel funcs of the upstream calls in flight (see
	// track); cancelled is set once the client cancelled the call.
	cancels   [2]context.CancelFunc
	more      []context.CancelFunc
	cancelled bool
	// asked maps the ids of the upstream's requests in flight to the
	// downstream ids they got (for the upstream's notifications/cancelled).
	asked map[string]json.RawMessage
	uid   string // CallerID of a stateless call, made on demand
}

// postCall is what one client request needs, in one allocation: the call,
// its relay, its response stream and the context that carries the relay.
type postCall struct {
	call  call
	relay relay
	out   sseResponse
	ctx   upstream.CallerContext
}

// newPostCall prepares the call of msg whose related messages go on the
// response w of request r (w nil: on the session's SSE stream s).
func (g *Gateway) newPostCall(r *http.Request, w http.ResponseWriter, s *sseStream, c call, msg *rpc.Message, caps json.RawMessage) *postCall {
	pc := &postCall{call: c}
	pc.relay = relay{g: g, c: &pc.call, reqID: msg.ID, params: msg.Params, caps: caps, reqCtx: r.Context(), sse: s}
	if w != nil {
		pc.out = sseResponse{w: w, ctx: r.Context()}
		pc.relay.out = &pc.out
	}
	pc.ctx = upstream.CallerContext{Context: r.Context(), Caller: &pc.relay}
	return pc
}

// context returns the context to serve the call with: parent, carrying the
// call's relay.
func (pc *postCall) context(parent context.Context) context.Context {
	pc.ctx.Context = parent
	return &pc.ctx
}

// CallerID implements upstream.Caller: the downstream session, or a
// per-call identity for a stateless call.
func (r *relay) CallerID() string {
	if r.c.clientID != "" {
		return r.c.clientID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.uid == "" {
		r.uid = "call/" + newToken()
	}
	return r.uid
}

// deliver sends a whole message to the client, next to the call's answer;
// false when it cannot go out (the call ended, the client left or is too
// slow).
func (r *relay) deliver(b []byte) bool {
	switch {
	case r.out != nil:
		return r.out.Send(b)
	case r.sse != nil:
		select {
		case r.sse.out <- append([]byte(nil), b...):
			return true
		case <-r.sse.ctx.Done():
			return false
		default:
			r.g.log.Debug("dropped a message for a slow SSE client", "session", r.c.clientID)
			return false
		}
	case r.c.clientID != "":
		return r.g.sendToSession(r.reqCtx, r.c.clientID, b)
	}
	return false
}

// Notification implements upstream.Caller: the message goes to the client
// as the upstream sent it (a progress token is the client's own again: the
// upstream session maps it), except that a cancellation of one of the
// upstream's requests names the id the client knows, and that list_changed
// and resources/updated are checked and fanned out by the gateway
// (callerNotification) rather than passed on.
func (r *relay) Notification(msg *rpc.Message) {
	if r.g.callerNotification(r.c, msg) {
		return // list_changed, resources/updated: the gateway's own business
	}
	if msg.Method == "notifications/message" {
		level, _ := rpc.StringField(msg.Params, "level")
		if !r.logAdmits(level) {
			return
		}
	}
	if msg.Method == "notifications/cancelled" {
		if id, ok := rpc.RawField(msg.Params, "requestId"); ok {
			r.mu.Lock()
			down, known := r.asked[string(id)]
			r.mu.Unlock()
			if !known {
				return // about nothing the client was asked
			}
			msg = &rpc.Message{Method: msg.Method, Params: rpc.ReplaceField(nil, msg.Params, "requestId", down)}
		}
	}
	if !r.deliver(rpc.AppendMessage(nil, msg)) {
		r.g.log.Debug("an upstream notification could not reach its client", "method", msg.Method)
	}
}

// logAdmits reports whether the client takes a log message at level: a
// session-based client up from the level it set (every message when it
// set none); a stateless one up from the level its request's _meta asks
// for (none when it asks for none, as go-sdk servers do).
func (r *relay) logAdmits(level string) bool {
	if !r.c.stateless {
		return r.g.levelAdmits(r.c.clientID, level)
	}
	meta, ok := rpc.RawField(r.params, "_meta")
	if !ok {
		return false
	}
	want, _ := rpc.StringField(meta, metaLogLevel)
	least := levelIndex(want)
	return least >= 0 && levelIndex(level) >= least
}

const metaLogLevel = "io.modelcontextprotocol/logLevel"

// Request implements upstream.Caller: the request goes to the client whose
// call caused it, and its answer back to the upstream.
func (r *relay) Request(ctx context.Context, msg *rpc.Message) (json.RawMessage, error) {
	if r.c.stateless {
		return r.g.statelessRequest(ctx, r.c, msg)
	}
	if rerr := clientCan(r.caps, msg); rerr != nil {
		return nil, rerr
	}
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return nil, &rpc.Error{Code: codeInternalError, Message: "the client call that caused " + quote(msg.Method) + " has ended"}
	}
	if r.done == nil {
		r.done = make(chan struct{})
	}
	done := r.done
	r.mu.Unlock()
	down := r.g.nextRequestID()
	key := string(msg.ID)
	r.mu.Lock()
	if r.asked == nil {
		r.asked = make(map[string]json.RawMessage)
	}
	r.asked[key] = down
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.asked, key)
		r.mu.Unlock()
	}()
	return r.g.askClient(ctx, r.c.clientID, down, msg, r.deliver, done, r.reqCtx.Done())
}

// finish ends the relay once the call is answered: what the upstream still
// sends about it has nowhere to go.
func (r *relay) finish() {
	r.mu.Lock()
	r.finished = true
	if r.done != nil {
		close(r.done)
	}
	r.mu.Unlock()
}

// track registers the cancel func of an upstream call made for this client
// call and returns its slot for untrack; false when the client cancelled
// the call already.
func (r *relay) track(cancel context.CancelFunc) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		return 0, false
	}
	for i := range r.cancels {
		if r.cancels[i] == nil {
			r.cancels[i] = cancel
			return i, true
		}
	}
	for i := range r.more {
		if r.more[i] == nil {
			r.more[i] = cancel
			return len(r.cancels) + i, true
		}
	}
	r.more = append(r.more, cancel)
	return len(r.cancels) + len(r.more) - 1, true
}

// untrack forgets the upstream call in slot.
func (r *relay) untrack(slot int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slot < len(r.cancels) {
		r.cancels[slot] = nil
	} else {
		r.more[slot-len(r.cancels)] = nil
	}
}

// wasCancelled reports whether the client cancelled the call: it then gets
// no response (the specification says so).
func (r *relay) wasCancelled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled
}

// cancel cancels the call's upstream calls, now and to come.
func (r *relay) cancel() {
	r.mu.Lock()
	r.cancelled = true
	fs := make([]context.CancelFunc, 0, len(r.cancels)+len(r.more))
	for _, f := range r.cancels {
		if f != nil {
			fs = append(fs, f)
		}
	}
	for _, f := range r.more {
		if f != nil {
			fs = append(fs, f)
		}
	}
	r.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// clientCan refuses a server-to-client request the client did not declare
// the capability for (nil: send it).
func clientCan(caps json.RawMessage, msg *rpc.Message) *rpc.Error {
	var need string
	switch msg.Method {
	case "sampling/createMessage":
		need = "sampling"
	case "elicitation/create":
		need = "elicitation"
	case "roots/list":
		need = "roots"
	default:
		return nil // not ours to judge: pass it on
	}
	c, ok := rpc.RawField(caps, need)
	if !ok || bytes.Equal(c, []byte("null")) {
		return &rpc.Error{Code: codeMethodNotFound, Message: "the client did not declare the " + need + " capability, so it cannot answer " + quote(msg.Method)}
	}
	if need == "elicitation" {
		if mode, _ := rpc.StringField(msg.Params, "mode"); mode == "url" {
			if _, ok := rpc.RawField(c, "url"); !ok {
				return &rpc.Error{Code: codeMethodNotFound, Message: "the client does not support URL-mode elicitation (its elicitation capability has no \"url\")"}
			}
		}
	}
	return nil
}

// requestIDs makes the downstream ids of server-to-client requests: a
// random prefix per process (per replica) and a counter.
var requestIDs = struct {
	prefix string
	seq    atomic.Int64
}{prefix: newToken()[:8]}

// nextRequestID returns a downstream id for a server-to-client request: a
// JSON string unique across replicas ("mm-" + this gateway's token + a
// counter), so that ids never collide within a session.
func (g *Gateway) nextRequestID() json.RawMessage {
	n := requestIDs.seq.Add(1)
	b := make([]byte, 0, 48)
	b = append(b, `"mm-`...)
	b = append(b, requestIDs.prefix...)
	b = append(b, '-')
	b = strconv.AppendInt(b, n, 10)
	return append(b, '"')
}

// askClient sends the upstream's request msg to the client of session sid
// under the downstream id down (send puts it on the right stream) and waits
// for the client's response, which arrives on the session's response topic
// from whichever replica the client posted it to. It gives up when ctx,
// stop or gone end, or after the default call timeout.
func (g *Gateway) askClient(ctx context.Context, sid string, down json.RawMessage, msg *rpc.Message, send func([]byte) bool, stop, gone <-chan struct{}) (json.RawMessage, error) {
	if sid == "" {
		return nil, &rpc.Error{Code: codeInternalError, Message: "the client has no session to answer " + quote(msg.Method) + " in"}
	}
	wctx, cancel := context.WithTimeout(ctx, g.opts.DefaultCallTimeout)
	defer cancel()
	// Subscribed before the request goes out: the answer cannot overtake it.
	answers, err := g.bus.Subscribe(wctx, responseTopic(sid))
	if err != nil {
		return nil, &rpc.Error{Code: codeInternalError, Message: "could not wait for the client's answer: the session bus failed: " + err.Error()}
	}
	if !send(rpc.AppendMessage(nil, &rpc.Message{ID: down, Method: msg.Method, Params: msg.Params})) {
		return nil, &rpc.Error{Code: codeInternalError, Message: "could not send " + quote(msg.Method) + " to the client: its stream is closed or not keeping up"}
	}
	for {
		select {
		case b, ok := <-answers:
			if !ok {
				return nil, &rpc.Error{Code: codeInternalError, Message: "stopped waiting for the client's answer to " + quote(msg.Method) + ": the data plane is shutting down"}
			}
			m, err := rpc.Parse(b)
			if err != nil || !bytes.Equal(m.ID, down) {
				continue
			}
			if m.Error != nil {
				return nil, m.Error
			}
			return m.Result, nil
		case <-stop:
			return nil, &rpc.Error{Code: codeInternalError, Message: "the client call that caused " + quote(msg.Method) + " ended before the client answered"}
		case <-gone:
			return nil, &rpc.Error{Code: codeInternalError, Message: "the client went away before answering " + quote(msg.Method)}
		case <-wctx.Done():
			if errors.Is(wctx.Err(), context.DeadlineExceeded) {
				return nil, &rpc.Error{Code: codeInternalError, Message: "the client did not answer " + quote(msg.Method) + " within " + g.opts.DefaultCallTimeout.String()}
			}
			return nil, wctx.Err()
		}
	}
}

// publishResponse hands a client's response to a server-to-client request
// to the replica waiting for it.
func (g *Gateway) publishResponse(ctx context.Context, sid string, msg *rpc.Message) {
	n, err := g.bus.Publish(ctx, responseTopic(sid), rpc.AppendMessage(nil, msg))
	switch {
	case err != nil:
		g.log.Warn("could not pass on a client's response", "err", err)
	case n == 0:
		g.log.Debug("a client's response came for no waiting request", "id", string(msg.ID))
	}
}
