package upstream

import "context"

// TraceHeaders are the W3C Trace Context and Baggage headers of the client
// request a call serves. The gateway passes them to Streamable HTTP and SSE
// upstreams on that call's own HTTP request, so a trace crosses the
// gateway; nothing else of the client's HTTP request reaches an upstream
// (its credentials in particular stay with the gateway).
type TraceHeaders struct {
	Traceparent, Tracestate, Baggage string
}

// Trace-context header limits: longer values are not passed on.
const (
	maxTraceparent = 128  // W3C: 55 characters for version 00
	maxTracestate  = 512  // W3C: 32 members of at most 256 characters, in practice far fewer
	maxBaggage     = 8192 // W3C Baggage: at least 8192 bytes must be supported
)

type traceKey struct{}

// WithTrace returns a context whose calls to HTTP upstreams carry h. Values
// that are too long or not valid in a header line are dropped.
func WithTrace(ctx context.Context, h TraceHeaders) context.Context {
	h.Traceparent = headerValue(h.Traceparent, maxTraceparent)
	h.Tracestate = headerValue(h.Tracestate, maxTracestate)
	h.Baggage = headerValue(h.Baggage, maxBaggage)
	if h == (TraceHeaders{}) {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, &h)
}

// TraceFrom returns the trace-context headers attached to ctx, or nil.
func TraceFrom(ctx context.Context) *TraceHeaders {
	h, _ := ctx.Value(traceKey{}).(*TraceHeaders)
	return h
}

// headerValue returns v when it fits in limit bytes and holds no control
// character but tab, else "".
func headerValue(v string, limit int) string {
	if len(v) > limit {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return ""
		}
	}
	return v
}

// set sets h on a net/http request header.
func (h *TraceHeaders) set(hdr map[string][]string) {
	for _, kv := range [...][2]string{{"Traceparent", h.Traceparent}, {"Tracestate", h.Tracestate}, {"Baggage", h.Baggage}} {
		if kv[1] != "" {
			hdr[kv[0]] = []string{kv[1]}
		}
	}
}
