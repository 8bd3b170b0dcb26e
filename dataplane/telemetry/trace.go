package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/metamcp/metamcp/dataplane/rpc"
)

// TracingOptions say where spans go.
type TracingOptions struct {
	// Endpoint is the OTLP/HTTP collector's base URL, e.g.
	// http://otel-collector:4318 (spans go to its /v1/traces); "" turns
	// tracing off.
	Endpoint string
	// SampleRatio is the share of traces started here that are kept (a
	// client's sampled flag is followed); 0 means 1.
	SampleRatio float64
	// Service and Instance name this data plane in the spans' resource.
	Service, Instance, Version string
}

// Tracing is an OpenTelemetry tracer provider exporting over OTLP/HTTP.
type Tracing struct {
	tp *sdktrace.TracerProvider
}

// NewTracing starts a tracer provider exporting to opts.Endpoint; nil
// when the endpoint is empty. Shutdown flushes and stops it.
func NewTracing(opts TracingOptions) (*Tracing, error) {
	if opts.Endpoint == "" {
		return nil, nil
	}
	u, err := url.Parse(opts.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("OTLP endpoint %q: want http(s)://HOST:PORT, e.g. http://otel-collector:4318", opts.Endpoint)
	}
	target := strings.TrimSuffix(opts.Endpoint, "/")
	if !strings.HasSuffix(target, "/v1/traces") {
		target += "/v1/traces"
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(target))
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	ratio := opts.SampleRatio
	if ratio <= 0 || ratio > 1 {
		ratio = 1
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", opts.Service),
		attribute.String("service.instance.id", opts.Instance),
		attribute.String("service.version", opts.Version),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	return &Tracing{tp: tp}, nil
}

// Tracer is the data plane's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.tp.Tracer("github.com/metamcp/metamcp/dataplane") }

// Shutdown exports the spans left and stops.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// Flush exports the spans ended so far.
func (t *Tracing) Flush(ctx context.Context) error { return t.tp.ForceFlush(ctx) }

var traceContext = propagation.TraceContext{}

// Tracing reports whether the request is traced (Trace does something).
func (r *Request) Tracing() bool { return r != nil && r.tracer != nil }

// Trace starts the request's span (from when the request came in) and the
// span of its upstream call, as the span's child: the parent is the
// traceparent of the request's params._meta when it has one, else the
// traceparent header. name is the tool or prompt called, meta the
// params' _meta, sessionID the client's session ("" when stateless). Nothing happens without a tracer.
func (r *Request) Trace(h http.Header, method, name string, meta json.RawMessage, sessionID string) {
	if r == nil || r.tracer == nil {
		return
	}
	parent := context.Background()
	if len(meta) > 0 && meta[0] == '{' {
		if tp, _ := rpc.StringField(meta, "traceparent"); tp != "" {
			ts, _ := rpc.StringField(meta, "tracestate")
			parent = traceContext.Extract(parent, propagation.MapCarrier{"traceparent": tp, "tracestate": ts})
		}
	}
	if !trace.SpanContextFromContext(parent).IsValid() {
		parent = traceContext.Extract(parent, propagation.HeaderCarrier(h))
	}
	attrs := []attribute.KeyValue{attribute.String("mcp.method.name", method)}
	spanName := method
	if name != "" {
		spanName += " " + name
		if method == "tools/call" {
			attrs = append(attrs, attribute.String("gen_ai.tool.name", name), attribute.String("gen_ai.operation.name", "execute_tool"))
		} else {
			attrs = append(attrs, attribute.String("gen_ai.prompt.name", name))
		}
	}
	if sessionID != "" {
		attrs = append(attrs, attribute.String("mcp.session.id", sessionID))
	}
	r.mu.Lock()
	if r.endpoint != "" {
		attrs = append(attrs, attribute.String("metamcp.endpoint", r.endpoint))
	}
	r.mu.Unlock()
	ctx, span := r.tracer.Start(parent, spanName, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(r.start), trace.WithAttributes(attrs...))
	_, up := r.tracer.Start(ctx, spanName, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs[:1]...))
	r.mu.Lock()
	r.span, r.up = span, up
	r.mu.Unlock()
}

// UpstreamTraceparent is the traceparent the upstream call carries: its
// span's, or "" when not traced.
func (r *Request) UpstreamTraceparent() string {
	if r == nil || r.up == nil {
		return ""
	}
	sc := r.up.SpanContext()
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// endUpstream ends the upstream span, once, naming the server.
func (r *Request) endUpstream(server, outcome string) {
	if r.up == nil || r.upEnded {
		return
	}
	r.upEnded = true
	if server != "" {
		r.up.SetAttributes(attribute.String("metamcp.server", server))
	}
	if outcome != OutcomeOK && outcome != "" {
		r.up.SetStatus(codes.Error, outcome)
	}
	r.up.End()
}

// endSpan ends the request's span with what came of it.
func (r *Request) endSpan(status int, l labels) {
	if r.span == nil {
		return
	}
	r.mu.Lock()
	r.endUpstream(l.server, l.outcome)
	r.mu.Unlock()
	attrs := []attribute.KeyValue{attribute.Int("http.response.status_code", status), attribute.String("metamcp.outcome", l.outcome)}
	if l.server != "" {
		attrs = append(attrs, attribute.String("metamcp.server", l.server))
	}
	if l.outcome != OutcomeOK {
		r.span.SetStatus(codes.Error, l.outcome)
		attrs = append(attrs, attribute.String("error.type", l.outcome))
	}
	r.span.SetAttributes(attrs...)
	r.span.End()
}
