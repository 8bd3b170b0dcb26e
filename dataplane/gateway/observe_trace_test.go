package gateway

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/dataplane/telemetry"
)

// otlpReceiver is an OTLP/HTTP trace receiver on loopback that keeps the
// spans it is sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestTracesOverOTLP: a proxied tools/call whose _meta carries a
// traceparent yields the data plane's span (its child, with the MCP
// attributes) and the upstream call's span as that span's child, exported
// over OTLP; the upstream receives the same trace, with the upstream span
// as parent.
func TestTracesOverOTLP(t *testing.T) {
	lh := newLiveHarness(t)
	rcv := &otlpReceiver{}
	collector := httptest.NewServer(rcv)
	defer collector.Close()
	tracing, err := telemetry.NewTracing(telemetry.TracingOptions{Endpoint: collector.URL, Service: "metamcp-dataplane"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tracing.Shutdown(context.Background()) }()
	tel := telemetry.New(telemetry.Options{Tracer: tracing.Tracer()})
	srv := httptest.NewServer(tel.Wrap(lh.gw.Handler()))
	defer srv.Close()

	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__headers","arguments":{},"_meta":{"traceparent":"00-` + traceID + `-` + clientSpan + `-01",` +
		`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	hdr := map[string]string{headerProtocolVersion: "2026-07-28", "Authorization": "Bearer " + keyAlice}
	status, _, body := post(t, srv.URL+"/metamcp/main/mcp", call, hdr)
	if status != 200 || !strings.Contains(body, "traceparent=00-"+traceID+"-") {
		t.Fatalf("status %d body %s: want the upstream to get trace %s", status, body, traceID)
	}
	if err := tracing.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var server, client *tracepb.Span
	for _, s := range rcv.spans {
		switch s.GetKind() {
		case tracepb.Span_SPAN_KIND_SERVER:
			server = s
		case tracepb.Span_SPAN_KIND_CLIENT:
			client = s
		}
	}
	if server == nil || client == nil {
		t.Fatalf("spans received: %v, want a server span and a client span", rcv.spans)
	}
	if got := hex.EncodeToString(server.GetTraceId()); got != traceID {
		t.Errorf("the request's span is in trace %s, want the client's %s", got, traceID)
	}
	if got := hex.EncodeToString(server.GetParentSpanId()); got != clientSpan {
		t.Errorf("the request's span has parent %s, want the client's span %s", got, clientSpan)
	}
	for k, want := range map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "alpha__headers", "metamcp.endpoint": "main", "metamcp.server": "alpha", "metamcp.outcome": "ok"} {
		if got := spanAttr(server, k); got != want {
			t.Errorf("the request's span: %s = %q, want %q", k, got, want)
		}
	}
	if server.GetName() != "tools/call alpha__headers" {
		t.Errorf("the request's span is named %q", server.GetName())
	}
	if !strings.EqualFold(hex.EncodeToString(client.GetParentSpanId()), hex.EncodeToString(server.GetSpanId())) ||
		hex.EncodeToString(client.GetTraceId()) != traceID {
		t.Errorf("the upstream span (trace %x, parent %x) is not the request span's (%x) child", client.GetTraceId(), client.GetParentSpanId(), server.GetSpanId())
	}
	if spanAttr(client, "metamcp.server") != "alpha" {
		t.Errorf("the upstream span names server %q", spanAttr(client, "metamcp.server"))
	}
	want := "traceparent=00-" + traceID + "-" + hex.EncodeToString(client.GetSpanId()) + "-01"
	if !strings.Contains(body, want) {
		t.Errorf("the upstream got %s, want %s (the upstream span as parent)", body, want)
	}
}

// TestRateLimitMetricsByPolicy: a refusal is counted under its policy, a
// shadow policy's would-be refusal under its own, and the refused request
// under outcome rate_limited.
func TestRateLimitMetricsByPolicy(t *testing.T) {
	p := &metamcpv1.RateLimitPolicy{Name: "pages", Rate: 1, Burst: proto.Int64(1), Period: durationpb.New(time.Hour), Tool: "alpha__echo"}
	shadow := &metamcpv1.RateLimitPolicy{Name: "trial", Rate: 1, Burst: proto.Int64(1), Period: durationpb.New(time.Hour), Tool: "alpha__echo", Shadow: true}
	h := newHarness(t, rateLimitedConfig(p, shadow), nil, func(o *Options) { o.Limiter = ratelimit.New(ratelimit.Options{}) })
	m := telemetry.NewMetrics(telemetry.Sources{}, 0)
	srv := httptest.NewServer(telemetry.New(telemetry.Options{Metrics: m}).Wrap(h.gw.Handler()))
	defer srv.Close()
	body, hdr := statelessCall("alpha__echo")
	for i, want := range []int{200, 429} {
		if status, _, b := post(t, srv.URL+"/metamcp/main/mcp", body, hdr); status != want {
			t.Fatalf("call %d: %d %s, want %d", i+1, status, b, want)
		}
	}
	out, err := testutil.CollectAndFormat(m.Registry(), expfmt.TypeTextPlain, "metamcp_dataplane_ratelimit_refusals_total", "metamcp_dataplane_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`metamcp_dataplane_ratelimit_refusals_total{policy="pages",reason="limited"} 1`,
		`metamcp_dataplane_ratelimit_refusals_total{policy="trial",reason="shadow"} 1`,
		`metamcp_dataplane_requests_total{endpoint="main",method="tools/call",outcome="rate_limited",server="alpha",tool="alpha__echo"} 1`,
		`metamcp_dataplane_requests_total{endpoint="main",method="tools/call",outcome="ok",server="alpha",tool="alpha__echo"} 1`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("metrics lack %s:\n%s", want, out)
		}
	}
}
