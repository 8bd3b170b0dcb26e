package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/metamcp/metamcp/dataplane/telemetry"
	"github.com/metamcp/metamcp/internal/testharness"
)

// benchWrap, when set, puts a handler in front of the gateway in
// benchToolsCall (the data plane's telemetry).
var benchWrap func(http.Handler) http.Handler

// BenchmarkToolsCallObserved is BenchmarkToolsCall with the data plane's
// telemetry in front, as `metamcp dataplane` runs it: metrics alone (the
// default), and metrics with an access log line per call.
func BenchmarkToolsCallObserved(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts func() telemetry.Options
	}{
		{"none", func() telemetry.Options { return telemetry.Options{} }},
		{"metrics", func() telemetry.Options {
			return telemetry.Options{Metrics: telemetry.NewMetrics(telemetry.Sources{}, 0)}
		}},
		{"metrics+tracing", func() telemetry.Options {
			collector := httptest.NewServer(&otlpReceiver{})
			b.Cleanup(collector.Close)
			tracing, err := telemetry.NewTracing(telemetry.TracingOptions{Endpoint: collector.URL, Service: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
			return telemetry.Options{Metrics: telemetry.NewMetrics(telemetry.Sources{}, 0), Tracer: tracing.Tracer()}
		}},
		{"metrics+access-log", func() telemetry.Options {
			return telemetry.Options{Metrics: telemetry.NewMetrics(telemetry.Sources{}, 0), AccessLog: telemetry.AccessLogOn,
				Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tel := telemetry.New(tc.opts())
			benchWrap = tel.Wrap
			defer func() { benchWrap = nil }()
			b.Run("session", func(b *testing.B) {
				start, ok := testharness.ProcessCPU()
				benchToolsCall(b, nil, "")
				if end, _ := testharness.ProcessCPU(); ok {
					b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
				}
			})
		})
	}
}
