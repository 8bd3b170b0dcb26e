package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// A bridged call (inputrequired.go) stays pending on the replica that runs
// it, and its requestState names that replica. Behind a round-robin load
// balancer the client's retry often reaches another replica: that one
// carries it over the session bus to retryTopic of the replica named, which
// continues the call as if the retry had come to it and sends the answer
// back on the reply topic the retry named. The answer is the retry's
// response: a result (input_required again, or complete) or an error.

// retryTopic is where the replica named replica takes retries of its
// bridged calls.
func retryTopic(replica string) string { return "mm/retry/" + replica }

// carriedRetry is a retry carried to the replica running its call.
type carriedRetry struct {
	Reply     string          `json:"reply"`
	Endpoint  string          `json:"endpoint"`
	Principal string          `json:"principal"`
	Msg       json.RawMessage `json:"msg"`
}

// carriedAnswer is the answer to a carried retry.
type carriedAnswer struct {
	Result  json.RawMessage `json:"result,omitempty"`
	Code    int64           `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// stateReplica returns the replica named in a bridged call's requestState,
// or "" when it names none.
func stateReplica(state string) string {
	rest, ok := strings.CutPrefix(state, requestStatePrefix)
	if !ok {
		return ""
	}
	r, _, ok := strings.Cut(rest, ".")
	if !ok {
		return ""
	}
	return r
}

// forwardRetry carries a retry (msg, from principal on endpoint) to the
// replica running its call and returns that replica's answer. When no
// replica of that name listens (it stopped, or the bus is away), the client
// is told to start over, as it would be on the replica itself. The answer
// is awaited at most wait: the other replica's call ends within its call
// timeout, so an answer later than that was lost on the bus, and the client
// must not hang on it.
func (g *Gateway) forwardRetry(ctx context.Context, replica, endpoint, principal string, msg *rpc.Message, wait time.Duration) (json.RawMessage, *rpc.Error) {
	reply := "mm/retry-answer/" + newToken()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answers, err := g.bus.Subscribe(sctx, reply)
	if err != nil {
		g.log.Debug("could not carry a retry to the replica running its call", "err", err)
		return nil, errUnknownState(msg.Method)
	}
	body, err := json.Marshal(carriedRetry{Reply: reply, Endpoint: endpoint, Principal: principal, Msg: rpc.AppendMessage(nil, msg)})
	if err != nil {
		return nil, &rpc.Error{Code: codeInternalError, Message: "could not carry the retry: " + err.Error()}
	}
	if n, err := g.bus.Publish(ctx, retryTopic(replica), body); err != nil || n == 0 {
		if err != nil {
			g.log.Debug("could not carry a retry to the replica running its call", "err", err)
		}
		return nil, errUnknownState(msg.Method)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil, &rpc.Error{Code: codeServerError, Message: "the replica running the call did not answer the retry within " + wait.String() + "; retry the " + msg.Method + " from scratch"}
	case m, ok := <-answers:
		var a carriedAnswer
		if !ok || json.Unmarshal(m, &a) != nil {
			return nil, &rpc.Error{Code: codeServerError, Message: "the replica running the call did not answer the retry; retry the " + msg.Method + " from scratch"}
		}
		if a.Code != 0 {
			return nil, &rpc.Error{Code: a.Code, Message: a.Message, Data: a.Data}
		}
		return a.Result, nil
	case <-ctx.Done():
		return nil, &rpc.Error{Code: codeServerError, Message: "request cancelled"}
	}
}

// retryAnswerWait bounds how long a carried retry waits for its answer:
// the longest call timeout of the endpoint's servers, and a margin for the
// bus.
func (g *Gateway) retryAnswerWait(t target) time.Duration {
	wait := g.opts.DefaultCallTimeout
	if t.ep != nil {
		for _, m := range t.ep.Members {
			if m.Server != nil {
				wait = max(wait, g.callTimeout(m.Server))
			}
		}
	}
	return wait + retryAnswerMargin
}

// retryAnswerMargin is what a carried retry's answer may take on the bus,
// beyond the call's own timeout.
const retryAnswerMargin = 5 * time.Second

// watchRetries continues here the retries other replicas carry to this
// one, until Close.
func (g *Gateway) watchRetries() {
	defer g.wg.Done()
	g.watchTopic(retryTopic(g.replica), func() { g.retriesSubscribed.Do(func() { close(g.retriesReady) }) }, func(m []byte) {
		var r carriedRetry
		if json.Unmarshal(m, &r) != nil || r.Reply == "" {
			return
		}
		msg, err := rpc.Parse(r.Msg)
		if err != nil || !msg.IsRequest() {
			return
		}
		state, _ := rpc.StringField(msg.Params, "requestState")
		// The call may wait for its upstream: not on the bus's goroutine.
		g.goOwned(func() {
			// The retry's own POST, on the other replica, is not here to
			// end: the call's wait is bounded by its call timeout.
			res, rerr := g.continueHere(g.ctx, r.Endpoint, r.Principal, msg, state)
			a := carriedAnswer{Result: res}
			if rerr != nil {
				a = carriedAnswer{Code: rerr.Code, Message: rerr.Message, Data: rerr.Data}
			}
			body, err := json.Marshal(a)
			if err == nil {
				_, err = g.bus.Publish(g.ctx, r.Reply, body)
			}
			if err != nil {
				g.log.Debug("could not answer a retry carried from another replica", "err", err)
			}
		})
	})
}
