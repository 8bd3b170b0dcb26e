package telemetry

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/internal/testharness"
)

// BenchmarkWrap is the telemetry's own cost per MCP request: a tools/call
// that the gateway describes (Begin, Trace, Call) and answers at once,
// through Wrap as `metamcp dataplane` sets it up. "off" is the floor (the
// recorder and request the benchmark makes each time); the others add
// metrics (the default, tracing off: no --otlp-endpoint), the access log
// (JSON, discarded) and tracing (every span sampled and ended, none
// exported: the SDK's cost without the exporter's).
func BenchmarkWrap(b *testing.B) {
	gw := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		obs := From(w)
		obs.Begin("bench", "alice", "tools/call")
		if obs.Tracing() {
			obs.Trace(r.Header, "tools/call", "demo__add", nil, "session-1")
		}
		obs.Call("demo__add", "demo", metamcpv1.CallOutcome_CALL_OUTCOME_OK)
		w.WriteHeader(http.StatusOK)
	})
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())).Tracer("bench")
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"off", Options{}},
		{"metrics", Options{Metrics: NewMetrics(Sources{}, 0)}},
		{"metrics+access-log", Options{Metrics: NewMetrics(Sources{}, 0), AccessLog: AccessLogOn, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}},
		{"metrics+tracing-no-export", Options{Metrics: NewMetrics(Sources{}, 0), Tracer: tracer}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := New(tc.opts).Wrap(gw)
			b.ReportAllocs()
			start, ok := testharness.ProcessCPU()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/metamcp/bench/mcp", strings.NewReader(""))
				h.ServeHTTP(httptest.NewRecorder(), r)
			}
			// CPU time, not wall time: on a shared machine the wall clock
			// counts the waits for a core too.
			if end, _ := testharness.ProcessCPU(); ok {
				b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
