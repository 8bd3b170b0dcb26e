package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// Input-required bridging (2026-07-28 clients, SEP-2322).
//
// The gateway's upstream sessions speak a session-based revision, so an
// upstream that needs the client (sampling, elicitation, roots) while
// serving a stateless client's call sends a server-to-client request. The
// gateway cannot send that to a stateless client; it answers the client's
// POST with an input_required result instead: inputRequests carries the
// upstream's request, requestState names the pending call. The upstream call
// stays pending on this replica. The client retries the same request with
// inputResponses and that requestState; the gateway answers the upstream's
// request with the response and waits again, for the upstream's result or
// its next request (another input_required round).
//
// Pending bridged calls live in this replica's memory: a retry that reaches
// another replica is refused with an error that tells the client to start
// the call again. They end with the upstream call, which the server's call
// timeout bounds.

// requestStatePrefix marks the requestState values of the gateway's bridged
// calls; other values (an upstream's own input_required) pass through.
const requestStatePrefix = "mmbridge1."

// maxPendingInputs bounds the upstream requests queued on one bridged call.
const maxPendingInputs = 16

// bridgeable reports whether method may get an input_required result.
func bridgeable(method string) bool {
	return method == "tools/call" || method == "prompts/get" || method == "resources/read"
}

// bridgeTable holds the bridged calls of this replica that wait for a
// client's retry.
type bridgeTable struct {
	mu      sync.Mutex
	byState map[string]*bridge
	live    atomic.Int64 // bridged calls running
	ids     atomic.Uint64
}

// bridge is one stateless client call whose upstream call runs apart from
// the client's POSTs. It is the upstream call's upstream.Caller.
type bridge struct {
	g         *Gateway
	c         *call // the first request's, which the upstream call serves
	endpoint  string
	principal string
	method    string
	cctx      upstream.CallerContext // the upstream call's context, carrying the bridge
	cancel    context.CancelFunc     // ends the upstream call

	// inputs holds the upstream requests not yet shown to the client, and
	// done is closed when the upstream call returned.
	inputs chan *inputWait
	done   chan struct{}
	res    json.RawMessage
	rerr   *rpc.Error
	// refused is closed when the gateway refused an upstream request for a
	// capability the client did not declare: the call then fails with
	// c.refused, whatever else the upstream asked or answered.
	refused     chan struct{}
	refusedOnce sync.Once

	mu       sync.Mutex
	id       string                // CallerID, made on demand
	attached bool                  // a client POST is waiting on the call
	relay    upstream.Caller       // that POST's receiver of the call's notifications
	state    string                // the requestState the client must send back
	shown    map[string]*inputWait // requests shown to the client, unanswered
	next     int
}

// inputWait is one upstream request waiting for the client's answer.
type inputWait struct {
	key   string
	msg   *rpc.Message
	reply chan json.RawMessage // the client's response (buffered)
}

// needsBridge reports whether a stateless call goes through a bridge: it
// continues one (its requestState is the gateway's), or its client declared
// a capability an upstream request could need (sampling, elicitation,
// roots). Without one, no upstream request could be shown to the client,
// and the bridge's goroutine would be for nothing.
func needsBridge(c *call, msg *rpc.Message) bool {
	if st, _ := c.params.str(msg.Params, "requestState"); strings.HasPrefix(st, requestStatePrefix) {
		return true
	}
	for _, need := range []string{"sampling", "elicitation", "roots"} {
		if v, ok := rpc.RawField(c.caps, need); ok && string(v) != "null" {
			return true
		}
	}
	return false
}

// bridgedCall serves tools/call, prompts/get or resources/read for a
// stateless client, bridging the upstream's server-to-client requests into
// input_required results. The upstream call runs on a goroutine of its own,
// since it may outlive this POST (awaitBridge answers the POST with
// input_required when the upstream asks for input); only calls from clients
// that declared a capability an upstream request could need pay for it
// (needsBridge).
func (g *Gateway) bridgedCall(ctx context.Context, c *call, msg *rpc.Message) (json.RawMessage, *rpc.Error) {
	if st, _ := c.params.str(msg.Params, "requestState"); strings.HasPrefix(st, requestStatePrefix) {
		return g.continueBridge(ctx, c, msg, st)
	}
	// The gateway owns the upstream call (Close cancels it and waits).
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		return nil, &rpc.Error{Code: codeServerError, Message: "the data plane is shutting down; retry"}
	}
	g.wg.Add(1)
	g.mu.Unlock()
	parent := g.ctx
	if tr := upstream.TraceFrom(ctx); tr != nil {
		// The upstream call outlives this request; its trace goes with it.
		parent = upstream.WithTrace(parent, *tr)
	}
	bctx, cancel := context.WithCancel(parent)
	b := &bridge{
		g: g, c: c, endpoint: c.t.name, principal: c.principal, method: msg.Method, cancel: cancel,
		attached: true, relay: upstream.CallerFrom(ctx), refused: make(chan struct{}),
		inputs: make(chan *inputWait, maxPendingInputs), done: make(chan struct{}),
	}
	b.cctx = upstream.CallerContext{Context: bctx, Caller: b}
	c.bridge = b
	g.state.bridges.live.Add(1)
	go g.runBridge(b, msg)
	return g.awaitBridge(ctx, b)
}

// runBridge runs a bridged call's upstream call.
func (g *Gateway) runBridge(b *bridge, msg *rpc.Message) {
	defer g.wg.Done()
	defer g.state.bridges.live.Add(-1)
	res, rerr := g.dispatchCall(&b.cctx, b.c, msg)
	g.endBridge(b, res, rerr)
}

// endBridge keeps a bridged call's result for the client POST attached to
// it, or for its retry, and ends what the call left waiting for the client.
func (g *Gateway) endBridge(b *bridge, res json.RawMessage, rerr *rpc.Error) {
	b.res, b.rerr = res, rerr
	close(b.done)
	b.cancel() // an upstream request still waiting for the client fails
	b.mu.Lock()
	attached := b.attached
	b.mu.Unlock()
	if !attached {
		// Nobody will collect the result: the client went away, or the
		// call ended (timed out) while the client answered.
		g.forgetBridge(b)
	}
}

// awaitBridge waits, for the client's POST, for the upstream's result or its
// next requests (answered with input_required). The POST must be attached.
func (g *Gateway) awaitBridge(ctx context.Context, b *bridge) (json.RawMessage, *rpc.Error) {
	b.mu.Lock()
	unanswered := len(b.shown) > 0
	b.mu.Unlock()
	inputs := b.inputs
	if !unanswered {
		select {
		case <-b.done:
			g.forgetBridge(b)
			if rerr := b.c.refusal(); rerr != nil {
				return nil, rerr
			}
			return b.res, b.rerr
		case <-b.refused:
			return g.endRefused(b)
		case w := <-inputs:
			b.mu.Lock()
			b.addShownLocked(w)
			b.mu.Unlock()
		case <-ctx.Done():
			// The client went away mid-call: so does the upstream call.
			b.cancel()
			g.forgetBridge(b)
			return nil, &rpc.Error{Code: codeServerError, Message: "request cancelled"}
		}
	}
	// Requests made at the same time go in the same round. go-sdk, for one,
	// sends those of one handler concurrently, and they arrive some
	// microseconds or milliseconds apart: gather them while they keep
	// coming. Not under b.mu, which Request takes.
	more := gatherInputs(inputs, b.done, b.refused)
	if b.c.refusal() != nil {
		// Asked at the same time as what the round would show: the
		// answer is the refusal, whichever request came first.
		b.mu.Lock()
		for _, w := range more {
			b.addShownLocked(w)
		}
		b.mu.Unlock()
		return g.endRefused(b)
	}
	b.mu.Lock()
	for _, w := range more {
		b.addShownLocked(w)
	}
	state, err := g.newRequestState()
	if err != nil {
		b.mu.Unlock()
		b.cancel()
		g.forgetBridge(b)
		return nil, &rpc.Error{Code: codeInternalError, Message: "could not create a request state; retry the call"}
	}
	b.state = state
	b.attached, b.relay = false, nil
	res := inputRequiredResult(b.shown, state)
	b.mu.Unlock()
	bt := &g.state.bridges
	bt.mu.Lock()
	if bt.byState == nil {
		bt.byState = make(map[string]*bridge)
	}
	bt.byState[state] = b
	bt.mu.Unlock()
	select {
	case <-b.done:
		// Finished while the round was being built: nobody is attached, so
		// the goroutine may have missed it.
		g.forgetBridge(b)
	default:
	}
	return res, nil
}

// Gathering an input_required round ends when no further request came for
// inputGatherGap, or after inputGatherMax.
const (
	inputGatherGap = 5 * time.Millisecond
	inputGatherMax = 50 * time.Millisecond
)

// gatherInputs returns the requests that arrive on inputs while they keep
// coming (see inputGatherGap), or until done or refused is closed. Requests
// already queued when the gap ends are always taken: a busy gateway that saw
// the gap pass late must not split what had arrived (inputs is bounded by
// maxPendingInputs).
func gatherInputs(inputs <-chan *inputWait, done, refused <-chan struct{}) []*inputWait {
	var got []*inputWait
	gap := time.NewTimer(inputGatherGap)
	defer gap.Stop()
	limit := time.Now().Add(inputGatherMax)
	for {
		select {
		case w := <-inputs:
			got = append(got, w)
			if time.Now().After(limit) {
				return got
			}
			gap.Reset(inputGatherGap)
		case <-gap.C:
			for {
				select {
				case w := <-inputs:
					got = append(got, w)
				default:
					return got
				}
			}
		case <-done:
			return got
		case <-refused:
			return got
		}
	}
}

func (b *bridge) addShownLocked(w *inputWait) {
	if b.shown == nil {
		b.shown = make(map[string]*inputWait)
	}
	b.next++
	w.key = "mm-" + strconv.Itoa(b.next)
	b.shown[w.key] = w
}

// inputRequiredResult is the result that asks the client for input.
func inputRequiredResult(shown map[string]*inputWait, state string) json.RawMessage {
	b := []byte(`{"resultType":"input_required","inputRequests":{`)
	first := true
	for key, w := range shown {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = rpc.AppendString(b, key)
		b = append(b, `:{"method":`...)
		b = rpc.AppendString(b, w.msg.Method)
		// Always params: clients decode them by method (roots/list has none).
		b = append(b, `,"params":`...)
		if p := w.msg.Params; len(p) > 0 && string(p) != "null" {
			b = append(b, p...)
		} else {
			b = append(b, "{}"...)
		}
		b = append(b, '}')
	}
	b = append(b, `},"requestState":`...)
	b = rpc.AppendString(b, state)
	return append(b, '}')
}

// newRequestState returns a requestState for a bridged call of this
// replica: the prefix, the replica's name, a dot and 24 random bytes.
func (g *Gateway) newRequestState() (string, error) {
	var r [24]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return requestStatePrefix + g.replica + "." + base64.RawURLEncoding.EncodeToString(r[:]), nil
}

// errUnknownState tells the client to start over.
func errUnknownState(method string) *rpc.Error {
	return &rpc.Error{Code: codeInvalidParams, Message: "requestState is unknown or expired: the call it continued ended, timed out, or is pending on another data-plane replica; retry the " + method + " from scratch without requestState and inputResponses"}
}

// continueBridge serves a client's retry with inputResponses: the answers
// go to the upstream's pending requests, then the POST waits as the first
// one did.
// A retry for a call pending on another replica is carried there (see
// forwardRetry).
func (g *Gateway) continueBridge(ctx context.Context, c *call, msg *rpc.Message, state string) (json.RawMessage, *rpc.Error) {
	if r := stateReplica(state); r != "" && r != g.replica {
		return g.forwardRetry(ctx, r, c.t.name, c.principal, msg, g.retryAnswerWait(c.t))
	}
	return g.continueHere(ctx, c.t.name, c.principal, msg, state)
}

// continueHere is continueBridge for a call pending on this replica, for a
// retry by principal on endpoint.
func (g *Gateway) continueHere(ctx context.Context, endpoint, principal string, msg *rpc.Message, state string) (json.RawMessage, *rpc.Error) {
	bt := &g.state.bridges
	bt.mu.Lock()
	b := bt.byState[state]
	bt.mu.Unlock()
	if b == nil {
		return nil, errUnknownState(msg.Method)
	}
	if b.endpoint != endpoint || b.principal != principal || b.method != msg.Method {
		g.log.Warn("refused a requestState of another caller, endpoint or method", "endpoint", endpoint, "principal", principal, "method", msg.Method)
		return nil, &rpc.Error{Code: codeInvalidParams, Message: "requestState belongs to another caller, endpoint or method: retry the " + msg.Method + " from scratch without requestState"}
	}
	var answers map[string]json.RawMessage
	if raw, ok := rpc.RawField(msg.Params, "inputResponses"); ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &answers); err != nil {
			return nil, &rpc.Error{Code: codeInvalidParams, Message: "invalid inputResponses (want an object of responses keyed as in inputRequests): " + err.Error()}
		}
	}
	b.mu.Lock()
	if b.state != state {
		b.mu.Unlock()
		return nil, errUnknownState(msg.Method)
	}
	if b.attached {
		b.mu.Unlock()
		return nil, &rpc.Error{Code: codeInvalidRequest, Message: "this requestState is being continued by another request already: send each retry once"}
	}
	for key := range answers {
		if _, ok := b.shown[key]; !ok {
			b.mu.Unlock()
			return nil, &rpc.Error{Code: codeInvalidParams, Message: "inputResponses has " + quote(key) + ", which the input_required result did not ask for"}
		}
	}
	b.attached, b.relay = true, upstream.CallerFrom(ctx)
	for key, ans := range answers {
		w := b.shown[key]
		delete(b.shown, key)
		w.reply <- ans
	}
	// Requests the client did not answer are shown again in the next round.
	b.mu.Unlock()
	bt.mu.Lock()
	delete(bt.byState, state)
	bt.mu.Unlock()
	return g.awaitBridge(ctx, b)
}

// endRefused ends a bridged call whose upstream asked for a capability the
// client did not declare: the upstream call is cancelled and the client
// gets the refusal.
func (g *Gateway) endRefused(b *bridge) (json.RawMessage, *rpc.Error) {
	b.cancel()
	b.mu.Lock()
	b.attached = false
	b.mu.Unlock()
	g.forgetBridge(b)
	return nil, b.c.refusal()
}

// forgetBridge removes a bridged call from the table of those waiting for
// a retry.
func (g *Gateway) forgetBridge(b *bridge) {
	b.mu.Lock()
	state := b.state
	b.mu.Unlock()
	if state == "" {
		return // it never asked for input
	}
	bt := &g.state.bridges
	bt.mu.Lock()
	if bt.byState[state] == b {
		delete(bt.byState, state)
	}
	bt.mu.Unlock()
}

// statelessRequest answers a server-to-client request an upstream made while
// serving a stateless client's call c: when c is bridged, it is shown to the
// client in an input_required result, and this waits for the client's
// retry to bring the answer (or for the call to end).
func (g *Gateway) statelessRequest(ctx context.Context, c *call, msg *rpc.Message) (json.RawMessage, error) {
	if c.bridge != nil {
		return c.bridge.Request(ctx, msg)
	}
	if rerr := clientCan(c.caps, msg); rerr != nil {
		c.refuse(msg)
		return nil, rerr
	}
	return nil, &rpc.Error{Code: codeMethodNotFound, Message: "the client cannot answer " + quote(msg.Method) + " for this request (it has no session, and only tools/call, prompts/get and resources/read can return input_required)"}
}

// Request implements upstream.Caller: the request waits for the client.
func (b *bridge) Request(ctx context.Context, msg *rpc.Message) (json.RawMessage, error) {
	if rerr := clientCan(b.c.caps, msg); rerr != nil {
		b.c.refuse(msg)
		b.refusedOnce.Do(func() { close(b.refused) })
		return nil, rerr
	}
	w := &inputWait{msg: msg, reply: make(chan json.RawMessage, 1)}
	select {
	case b.inputs <- w:
	default:
		return nil, &rpc.Error{Code: codeInternalError, Message: "too many requests to the client pending on one call"}
	}
	select {
	case ans := <-w.reply:
		return ans, nil
	case <-b.cctx.Done():
		return nil, errors.New("the call ended before the client answered")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Notification implements upstream.Caller: notifications that concern no
// call in particular go where the gateway sends those of upstreams, the
// others (progress, log messages) to the client POST attached to the call,
// if any (dropped while the client is answering an input_required round).
func (b *bridge) Notification(msg *rpc.Message) {
	if b.g.callerNotification(b.c, msg) {
		return
	}
	b.mu.Lock()
	r := b.relay
	b.mu.Unlock()
	if r != nil {
		r.Notification(msg)
	}
}

// CallerID implements upstream.Caller: each bridged call is on its own.
func (b *bridge) CallerID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.id == "" {
		b.id = "bridge/" + strconv.FormatUint(b.g.state.bridges.ids.Add(1), 36)
	}
	return b.id
}

// Parked implements upstream.Parker: the call showed the client an
// input_required round and waits for its retry, which may never come.
func (b *bridge) Parked() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.attached && len(b.shown) > 0
}

// pendingBridges is the number of bridged calls running on this replica.
func (g *Gateway) pendingBridges() int { return int(g.state.bridges.live.Load()) }

// maxInputRounds bounds the input_required rounds the gateway fulfils for a
// session-based client, as go-sdk clients bound theirs.
const maxInputRounds = 10

// sessionCall serves tools/call, prompts/get or resources/read for a
// session-based client. Such a client does not know input_required results
// (2026-07-28): when an upstream answers with one, the gateway asks the
// client each input request as a server-to-client request (on the call's
// response stream, like any request of the upstream's) and retries the
// upstream call with the answers and the upstream's requestState.
func (g *Gateway) sessionCall(ctx context.Context, c *call, msg *rpc.Message) (json.RawMessage, *rpc.Error) {
	res, rerr := g.dispatchCall(ctx, c, msg)
	for round := 1; rerr == nil && inputRequired(res); round++ {
		if round > maxInputRounds {
			return nil, &rpc.Error{Code: codeInternalError, Message: "the upstream asked for input more than " + strconv.Itoa(maxInputRounds) + " times in one " + msg.Method + "; giving up"}
		}
		var ir struct {
			InputRequests map[string]struct {
				Method string          `json:"method"`
				Params json.RawMessage `json:"params"`
			} `json:"inputRequests"`
			RequestState *string `json:"requestState"`
		}
		if err := json.Unmarshal(res, &ir); err != nil {
			return nil, &rpc.Error{Code: codeServerError, Message: "the upstream sent an invalid input_required result: " + err.Error()}
		}
		if len(ir.InputRequests) == 0 {
			return nil, &rpc.Error{Code: codeServerError, Message: "the upstream is busy (input_required with no input requests): retry later"}
		}
		caller := upstream.CallerFrom(ctx)
		if caller == nil {
			return nil, &rpc.Error{Code: codeInternalError, Message: "the upstream asked for input the client cannot be asked for on this transport"}
		}
		answers := make(map[string]json.RawMessage, len(ir.InputRequests))
		for key, r := range ir.InputRequests {
			id := rpc.AppendString(nil, "input/"+key)
			ans, err := caller.Request(ctx, &rpc.Message{ID: id, Method: r.Method, Params: r.Params})
			if err != nil {
				var re *rpc.Error
				if errors.As(err, &re) {
					return nil, re
				}
				return nil, &rpc.Error{Code: codeInternalError, Message: "the client could not answer the upstream's " + quote(r.Method) + ": " + err.Error()}
			}
			answers[key] = ans
		}
		raw, _ := json.Marshal(answers)
		params := msg.Params
		if len(params) == 0 || params[0] != '{' {
			params = emptyObject
		}
		params = rpc.ReplaceField(nil, params, "inputResponses", raw)
		if ir.RequestState != nil {
			params = rpc.ReplaceField(nil, params, "requestState", rpc.AppendString(nil, *ir.RequestState))
		}
		res, rerr = g.dispatchCall(ctx, c, &rpc.Message{ID: msg.ID, Method: msg.Method, Params: params})
	}
	return res, rerr
}

// inputRequired reports whether a raw result is an input_required one: it
// says so, or it says nothing and carries inputRequests. A go-sdk server
// answers a session-based client so once it fulfilled one round itself and
// its handler asks again (it sets resultType only for 2026-07-28 clients).
func inputRequired(res json.RawMessage) bool {
	if !bytes.Contains(res, []byte("input")) {
		return false
	}
	if rt, ok := rpc.StringField(res, "resultType"); ok {
		return rt == "input_required"
	}
	if _, ok := rpc.RawField(res, "resultType"); ok {
		return false
	}
	reqs, ok := rpc.RawField(res, "inputRequests")
	return ok && len(reqs) > 0 && reqs[0] == '{'
}
