package controlplane

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Metrics are the control plane's Prometheus metrics, in a registry of
// their own (with the Go runtime and process collectors).
type Metrics struct {
	reg       *prometheus.Registry
	calls     *prometheus.CounterVec
	callDur   *prometheus.HistogramVec
	dataPlane prometheus.Gauge
	acks      *prometheus.CounterVec
	push      prometheus.Histogram
	build     *prometheus.HistogramVec
	records   prometheus.Counter
	lag       prometheus.Histogram
	storeDur  *prometheus.HistogramVec
}

// NewMetrics registers the control plane's metrics.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metamcp_controlplane_grpc_calls_total",
		Help: "gRPC calls answered (admin API; sync streams when they end), by method and status code.",
	}, []string{"method", "code"})
	m.callDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metamcp_controlplane_grpc_call_duration_seconds",
		Help:    "Time to answer an admin API call, by method; most of it is the store's.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"method"})
	m.dataPlane = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "metamcp_controlplane_connected_dataplanes",
		Help: "Data planes with a sync stream open to this control plane replica.",
	})
	m.acks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metamcp_controlplane_snapshot_acks_total",
		Help: "Answers of data planes to the snapshots sent: ack (applied) or nack (refused).",
	}, []string{"result"})
	m.push = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "metamcp_controlplane_config_push_seconds",
		Help:    "Time from a snapshot's build (right after the commit that made its revision) to a data plane's answer.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.build = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metamcp_controlplane_snapshot_build_duration_seconds",
		Help:    "Time to read the whole config of a revision from the store and build its snapshot, by result (ok or error).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"result"})
	m.records = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metamcp_controlplane_call_records_stored_total",
		Help: "Call records (the audit trail) received from data planes and stored.",
	})
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "metamcp_controlplane_call_record_lag_seconds",
		Help:    "Time from a call (its record's time, on the data plane's clock) to its record being stored here: the audit trail's ingestion lag, spool waits and retries included.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
	})
	m.storeDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metamcp_controlplane_store_duration_seconds",
		Help:    "Time of the store's writes on the ingestion path, by operation (append_call_records) and result (ok or error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"operation", "result"})
	m.reg.MustRegister(m.calls, m.callDur, m.dataPlane, m.acks, m.push, m.build, m.records, m.lag, m.storeDur,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.acks.WithLabelValues("ack")
	m.acks.WithLabelValues("nack")
	return m
}

// Registry is where the metrics are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.callDur.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	m.calls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

func (m *Metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	m.calls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}

// Streams counts sync streams opening and ending (syncserver.Observer).
func (m *Metrics) Streams(delta int) { m.dataPlane.Add(float64(delta)) }

// Acked counts a data plane's answer to a snapshot and its push latency.
func (m *Metrics) Acked(nack bool, sinceBuild time.Duration) {
	if nack {
		m.acks.WithLabelValues("nack").Inc()
	} else {
		m.acks.WithLabelValues("ack").Inc()
	}
	if sinceBuild > 0 {
		m.push.Observe(sinceBuild.Seconds())
	}
}

// Built times a snapshot build.
func (m *Metrics) Built(d time.Duration, err error) {
	r := "ok"
	if err != nil {
		r = "error"
	}
	m.build.WithLabelValues(r).Observe(d.Seconds())
}

// Stored counts stored call records, their lag, and times the store's
// append.
func (m *Metrics) Stored(recs []*metamcpv1.CallRecord, d time.Duration, err error) {
	r := "ok"
	if err != nil {
		r = "error"
	} else {
		m.records.Add(float64(len(recs)))
		now := time.Now()
		for _, rec := range recs {
			if t := rec.GetTime(); t != nil {
				// A data plane's clock ahead of ours would make it negative.
				m.lag.Observe(max(0, now.Sub(t.AsTime()).Seconds()))
			}
		}
	}
	m.storeDur.WithLabelValues("append_call_records", r).Observe(d.Seconds())
}
