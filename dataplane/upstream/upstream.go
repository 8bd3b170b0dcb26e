// Package upstream keeps the data plane's MCP sessions with upstream servers:
// stdio processes, Streamable HTTP and SSE servers. It speaks raw JSON-RPC (see
// package rpc), so results pass through as the bytes the upstream sent, and it
// pools sessions per server (one multiplexed session, or one per downstream
// client), bounds processes and sessions, reaps idle ones and reconnects with
// backoff after failures.
package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

// Default timeouts, used when neither the server nor PoolOptions set one.
const (
	DefaultInitTimeout = 30 * time.Second
	DefaultCallTimeout = 60 * time.Second
	DefaultListTimeout = 10 * time.Second
)

// ProtocolVersion is the MCP revision the data plane asks for at initialize.
const ProtocolVersion = "2025-11-25"

// supportedVersions are the revisions an upstream may answer with (those the
// go-sdk supports).
var supportedVersions = map[string]bool{
	"2026-07-28": true,
	"2025-11-25": true,
	"2025-06-18": true,
	"2025-03-26": true,
	"2024-11-05": true,
}

// Session is one initialized MCP session with one upstream server. Safe for
// concurrent use.
type Session interface {
	// Call sends a request and returns the raw result. A JSON-RPC error from
	// the upstream comes back as *rpc.Error (pass it to the client unchanged).
	// Transport failures and timeouts come back as *Error naming the server.
	// When ctx has no deadline the server's call timeout (list timeout for
	// */list methods) applies. On cancellation Call returns at once and sends
	// notifications/cancelled upstream.
	Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error)
	// Notify sends a notification.
	Notify(ctx context.Context, method string, params json.RawMessage) error
	// Info is what the upstream said at initialize.
	Info() *Info
	// Server is the server's name.
	Server() string
}

// Info is what an upstream said about itself at initialize.
type Info struct {
	ProtocolVersion string
	Capabilities    json.RawMessage
	ServerInfo      json.RawMessage
	Instructions    string
}

// Error is a failure to reach or talk to an upstream server (not a JSON-RPC
// error the upstream answered with: those are *rpc.Error).
type Error struct {
	Server string
	Err    error
}

// Error implements error.
// Its text names no secret part of the server's URL (see scrubText).
func (e *Error) Error() string {
	return fmt.Sprintf("upstream %q: %s", e.Server, scrubText(e.Server, fmt.Sprint(e.Err)))
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Events receives what upstreams send on their own: notifications and
// server-to-client requests (sampling, elicitation, roots). clientID is the
// downstream session of a per_client upstream session and empty for shared ones.
// Notification is called on the goroutine reading from the upstream: it must
// not block (hand the message off). Request runs on a goroutine of its own;
// its ctx ends when the upstream session closes. The message's raw fields are
// the caller's to keep.
type Events interface {
	Notification(server, clientID string, msg *rpc.Message)
	// Request answers a server-to-client request. An *rpc.Error is sent back
	// as it is; any other error as an internal error.
	Request(ctx context.Context, server, clientID string, msg *rpc.Message) (json.RawMessage, error)
}

// CallTimeout is the server's timeout for one call (tools/call, prompts/get,
// resources/read, completion), or def when unset.
func CallTimeout(s *metamcpv1.Server, def time.Duration) time.Duration {
	return pick(s.GetTimeouts().GetCall().AsDuration(), def, DefaultCallTimeout)
}

// ListTimeout is the server's timeout for one list operation, or def when unset.
func ListTimeout(s *metamcpv1.Server, def time.Duration) time.Duration {
	return pick(s.GetTimeouts().GetList().AsDuration(), def, DefaultListTimeout)
}

// InitTimeout is the server's timeout for connecting and initializing, or def
// when unset.
func InitTimeout(s *metamcpv1.Server, def time.Duration) time.Duration {
	return pick(s.GetTimeouts().GetInitialize().AsDuration(), def, DefaultInitTimeout)
}

func pick(vals ...time.Duration) time.Duration {
	for _, v := range vals {
		if v > 0 {
			return v
		}
	}
	return 0
}
