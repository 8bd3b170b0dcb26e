package upstream

import (
	"context"
	"encoding/json"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// Caller receives what an upstream sends about one call in flight: the
// notifications related to it (progress, log messages) and the
// server-to-client requests it makes while serving it (sampling, elicitation,
// roots). The gateway attaches one to a call's context with WithCaller, so
// that these reach the one downstream client whose request caused them, even
// on a session shared by many clients.
//
// A Streamable HTTP upstream relates messages to a call by sending them on
// that call's response stream. Stdio and SSE upstreams relate nothing on the
// wire: their messages go to the call's Caller when it is the only call with
// a Caller in flight on the session (or all such calls share one Caller
// identity, see CallerID), and to the pool's Events otherwise.
type Caller interface {
	// Notification handles a notification related to the call. It is
	// called on the goroutine reading from the upstream and must not block.
	// The message's raw fields are the callee's to keep.
	Notification(msg *rpc.Message)
	// Request answers a server-to-client request made while serving the
	// call. An *rpc.Error is sent back as it is; any other error as an
	// internal error. It runs on a goroutine of its own.
	Request(ctx context.Context, msg *rpc.Message) (json.RawMessage, error)
	// CallerID identifies the downstream session behind the call; calls
	// with the same CallerID may share unrelated messages.
	CallerID() string
}

// Parker is what a Caller implements to say that its call waits for its
// client to answer requests the upstream made (an input_required round
// shown to a 2026-07-28 client, who may never come back): on a session
// that relates nothing on the wire (stdio, SSE), such a call is not the
// one a new request or notification belongs to while other calls are in
// flight, since its upstream handler waits for the answers it asked for.
type Parker interface {
	Parked() bool
}

type callerKey struct{}

// WithCaller returns a context whose calls report to c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerContext is a context carrying a Caller, as WithCaller makes one, for
// a caller that keeps it in a struct of its own rather than allocate a
// context per call (the gateway's calls do).
type CallerContext struct {
	context.Context
	Caller Caller
}

// Value implements context.Context.
func (c *CallerContext) Value(key any) any {
	if key == (callerKey{}) {
		return c.Caller
	}
	return c.Context.Value(key)
}

// CallerFrom returns the Caller attached to ctx, or nil.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}
