package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/pkg/authz"
	"github.com/metamcp/metamcp/pkg/identity"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Bits of call.hints: what the tool's annotations, as listed to clients,
// say.
const (
	hintKnown uint8 = 1 << iota
	hintDestructive
	hintReadOnly
)

// The gateway's own messages of calls that timed out or were cancelled,
// which their records tell apart from other errors.
const (
	msgNoAnswerInTime    = " did not answer in time"
	msgCancelled         = " cancelled"
	msgCancelledByClient = "request cancelled by the client"
)

// failureOutcome classifies a call's error.
func failureOutcome(rerr *rpc.Error) metamcpv1.CallOutcome {
	if rerr.Code == codeForbidden {
		return metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN
	}
	if rerr.Code == codeServerError {
		switch m := rerr.Message; {
		case strings.Contains(m, msgNoAnswerInTime):
			return metamcpv1.CallOutcome_CALL_OUTCOME_TIMEOUT
		case m == msgCancelledByClient || strings.HasPrefix(m, "request to upstream ") && strings.HasSuffix(m, msgCancelled):
			return metamcpv1.CallOutcome_CALL_OUTCOME_CANCELLED
		}
	}
	return metamcpv1.CallOutcome_CALL_OUTCOME_ERROR
}

// auditCall gathers what the record of a call forwarded by name needs
// before it is forwarded: the tool's annotations and, when the endpoint
// captures payloads, its arguments.
func (g *Gateway) auditCall(ctx context.Context, c *call, method string, m *snapshot.Member, exposed, upstreamName string, params json.RawMessage) {
	if method == "tools/call" {
		c.hints = g.toolHints(ctx, c, m, exposed, upstreamName)
	}
	if a := c.t.ep.Endpoint.GetAudit(); a.GetCaptureArguments() {
		if args, ok := c.params.raw(params, "arguments"); ok {
			c.payload = args
		}
	}
}

// recordDenied records a call the endpoint's access rules refused.
func (g *Gateway) recordDenied(c *call, msg *rpc.Message, rerr *rpc.Error) {
	if g.opts.Calls == nil {
		return
	}
	key := "name"
	if msg.Method == "resources/read" {
		key = "uri"
	}
	target, _ := c.params.str(msg.Params, key)
	if msg.Method == "tools/call" {
		// authorize learned the tool's annotations, when it could.
		if t, ok := g.routes.get(c.t).Tool(target); ok {
			c.hints = hintsOf(t.annotations)
		}
	}
	g.record(c, msg.Method, target, "", time.Now(), nil, rerr)
}

// toolHints returns what a tool's annotations say, as its upstream listed it
// through this replica at this revision (overrides applied). A tool not
// listed here yet is learned by listing its server's tools once (as for
// Mcp-Param headers); failing that, the config's override alone counts.
func (g *Gateway) toolHints(ctx context.Context, c *call, m *snapshot.Member, exposed, upstreamName string) uint8 {
	rr := g.routes.get(c.t)
	if t, ok := rr.Tool(exposed); ok {
		return hintsOf(t.annotations)
	}
	g.learnToolParams(ctx, c, rr, m)
	if t, ok := rr.Tool(exposed); ok {
		return hintsOf(t.annotations)
	}
	var h uint8
	if a := m.Spec.GetToolOverrides()[upstreamName].GetAnnotations(); a != nil {
		h = hintKnown
		if a.GetDestructiveHint() {
			h |= hintDestructive
		}
		if a.GetReadOnlyHint() {
			h |= hintReadOnly
		}
	}
	return h
}

// hintsOf is what a listed tool's annotations say, as call.hints bits: the
// hints set to true explicitly.
func hintsOf(a authz.Annotations) uint8 {
	h := hintKnown
	if a.DestructiveHint != nil && *a.DestructiveHint {
		h |= hintDestructive
	}
	if a.ReadOnlyHint != nil && *a.ReadOnlyHint {
		h |= hintReadOnly
	}
	return h
}

// record hands a call's record to the audit trail without blocking.
func (g *Gateway) record(c *call, method, targetName, server string, start time.Time, res json.RawMessage, rerr *rpc.Error) {
	if g.opts.Calls == nil {
		c.obs.Call(targetName, server, callOutcome(c, method, res, rerr))
		return
	}
	d := time.Since(start)
	// One allocation for the record and its two timestamps.
	a := &struct {
		rec  metamcpv1.CallRecord
		time timestamppb.Timestamp
		dur  durationpb.Duration
	}{}
	a.time.Seconds, a.time.Nanos = start.Unix(), int32(start.Nanosecond())
	a.dur.Seconds, a.dur.Nanos = int64(d/time.Second), int32(d%time.Second)
	rec := &a.rec
	*rec = metamcpv1.CallRecord{
		Time:            &a.time,
		NodeId:          g.opts.NodeID,
		Endpoint:        c.t.name,
		Method:          method,
		Target:          targetName,
		Server:          server,
		Duration:        &a.dur,
		RequestBytes:    int64(c.reqBytes),
		ResponseBytes:   int64(len(res)),
		ClientIp:        c.clientIP,
		Outcome:         metamcpv1.CallOutcome_CALL_OUTCOME_OK,
		SessionId:       c.session,
		ProtocolVersion: c.version,
		TraceId:         traceID(c.trace),
		Destructive:     c.hints&hintDestructive != 0,
		ReadOnly:        c.hints&hintReadOnly != 0,
		// Shadow rate-limit policies that would have refused it.
		ShadowRateLimits: c.shadowLimits,
	}
	setPrincipal(rec, c.who)
	if len(c.clientInfo) > 0 {
		rec.ClientName, _ = rpc.StringField(c.clientInfo, "name")
		rec.ClientVersion, _ = rpc.StringField(c.clientInfo, "version")
	}
	switch {
	case c.rateLimited:
		// Refused by a rate-limit policy (ratelimit.go): 429, or 503 when
		// the limiter was unavailable to a closed policy.
		rec.Outcome = metamcpv1.CallOutcome_CALL_OUTCOME_RATE_LIMITED
		rec.Error, rec.ErrorCode = rerr.Message, rerr.Code
		rec.HttpStatus = http.StatusTooManyRequests
		if rerr.Code == codeLimiterUnavailable {
			rec.HttpStatus = http.StatusServiceUnavailable
		}
	case rerr != nil:
		rec.Outcome = failureOutcome(rerr)
		rec.Error, rec.ErrorCode = rerr.Message, rerr.Code
	case method == "tools/call" && isToolError(res):
		rec.Outcome = metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR
	}
	if a := c.t.ep.Endpoint.GetAudit(); a != nil && (a.GetCaptureArguments() || a.GetCaptureResults()) {
		capturePayloads(rec, a, c.payload, res)
	}
	c.obs.Call(targetName, server, rec.Outcome)
	g.send(rec)
}

func (g *Gateway) send(rec *metamcpv1.CallRecord) {
	select {
	case g.opts.Calls <- rec:
	default:
		if n := g.dropped.Add(1); n == 1 || n%1000 == 0 {
			g.log.Warn("call records dropped: the record channel is full", "dropped", n)
		}
	}
}

// setPrincipal fills who called.
func setPrincipal(rec *metamcpv1.CallRecord, who *identity.Principal) {
	if who == nil {
		return
	}
	rec.Principal = who.Name
	rec.PrincipalKind = who.Kind.String()
	rec.KeyId, rec.Subject, rec.Issuer = who.KeyID, who.Subject, who.Issuer
}

// recordRefusal records a request refused before it was read: 401, 403 or
// 429. who is nil when the caller is unknown.
func (g *Gateway) recordRefusal(r *http.Request, t target, who *identity.Principal, status int, outcome metamcpv1.CallOutcome, msg string) {
	if g.opts.Calls == nil {
		return
	}
	rec := &metamcpv1.CallRecord{
		Time:       timestamppb.Now(),
		NodeId:     g.opts.NodeID,
		Endpoint:   t.name,
		Duration:   durationpb.New(0),
		ClientIp:   g.clientIP(r),
		Outcome:    outcome,
		Error:      msg,
		HttpStatus: int32(status),
		TraceId:    traceID(headerValue(r.Header, headerTraceparent)),
	}
	setPrincipal(rec, who)
	g.send(rec)
}

// traceID is the trace id of a W3C traceparent (version-traceid-parent-flags).
func traceID(traceparent string) string {
	if len(traceparent) < 55 || traceparent[2] != '-' || traceparent[35] != '-' {
		return ""
	}
	return traceparent[3:35]
}

// Payload capture limits.
const (
	defaultPayloadBytes = 4096
	maxPayloadBytes     = 65536
	redacted            = `"[REDACTED]"`
)

// defaultRedactKeys are always redacted from captured payloads.
var defaultRedactKeys = []string{"password", "passwd", "secret", "token", "access_token", "refresh_token",
	"api_key", "apikey", "authorization", "cookie", "private_key", "client_secret"}

// capturePayloads keeps the arguments (and the result) in rec, redacted and
// cut to the endpoint's size.
func capturePayloads(rec *metamcpv1.CallRecord, a *metamcpv1.AuditSettings, args, res json.RawMessage) {
	limit := int(a.GetMaxPayloadBytes())
	if limit <= 0 {
		limit = defaultPayloadBytes
	}
	limit = min(limit, maxPayloadBytes)
	keys := a.GetRedactKeys()
	if a.GetCaptureArguments() && len(args) > 0 {
		var cut bool
		rec.Arguments, cut = redactPayload(args, keys, limit)
		rec.PayloadTruncated = rec.PayloadTruncated || cut
	}
	if a.GetCaptureResults() && len(res) > 0 {
		var cut bool
		rec.Result, cut = redactPayload(res, keys, limit)
		rec.PayloadTruncated = rec.PayloadTruncated || cut
	}
}

// redactPayload returns payload with the values of redacted keys replaced,
// at any depth, cut to limit bytes (then cut is true). A payload that is not
// JSON is kept only as "[UNPARSABLE]", since its secrets cannot be found.
func redactPayload(payload json.RawMessage, extra []string, limit int) (out string, cut bool) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return `"[UNPARSABLE]"`, false
	}
	v = redactValue(v, extra, 0)
	b, err := json.Marshal(v)
	if err != nil {
		return `"[UNPARSABLE]"`, false
	}
	if len(b) > limit {
		return string(b[:limit]), true
	}
	return string(b), false
}

func redactValue(v any, extra []string, depth int) any {
	if depth > 64 {
		return "[TOO DEEP]"
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if redactKey(k, extra) {
				x[k] = json.RawMessage(redacted)
				continue
			}
			x[k] = redactValue(e, extra, depth+1)
		}
	case []any:
		for i, e := range x {
			x[i] = redactValue(e, extra, depth+1)
		}
	}
	return v
}

func redactKey(k string, extra []string) bool {
	for _, r := range defaultRedactKeys {
		if strings.EqualFold(k, r) {
			return true
		}
	}
	for _, r := range extra {
		if strings.EqualFold(k, r) {
			return true
		}
	}
	return false
}
