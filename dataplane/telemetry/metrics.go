// Package telemetry is what a data plane tells its operators about the
// requests it serves: Prometheus metrics, the access log and, when
// configured, OpenTelemetry traces. The gateway fills a Request as it learns
// who called what; Middleware observes it once the request ends.
//
// Cardinality is bounded: principals never become labels (the audit trail
// holds per-caller detail), methods outside MCP's are folded into "other",
// tool labels are those of tools that routed to an upstream, and at most
// MaxTools distinct ones (the rest are folded into OtherTool).
package telemetry

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// DefaultMaxTools is how many distinct tool label values Metrics keeps.
const DefaultMaxTools = 500

// OtherTool is the tool label of the tools beyond the cap.
const OtherTool = "_other"

// Outcomes of a request, the outcome label.
const (
	OutcomeOK           = "ok"
	OutcomeError        = "error"      // a JSON-RPC error, or an HTTP status of 5xx
	OutcomeToolError    = "tool_error" // a tools/call result with isError
	OutcomeUnauthorized = "unauthorized"
	OutcomeForbidden    = "forbidden"
	OutcomeThrottled    = "throttled"
	OutcomeRejected     = "rejected" // another 4xx: bad request, unknown session...
	OutcomeRateLimited  = "rate_limited"
	OutcomeTimeout      = "timeout"   // the upstream did not answer in time
	OutcomeCancelled    = "cancelled" // the client cancelled the call
)

// Sources are what Metrics reads at scrape time; any may be nil.
type Sources struct {
	// Upstreams is the health and live sessions and processes per server.
	Upstreams func() []*metamcpv1.UpstreamStatus
	// ClientSessions is the number of live downstream sessions.
	ClientSessions func() int
	// Revision is the revision of the config served (0: none).
	Revision func() int64
	// SnapshotBuilt is when the control plane built the snapshot served
	// (zero: none, or unknown).
	SnapshotBuilt func() time.Time
	// SyncConnected reports whether the sync stream is up.
	SyncConnected func() bool
	// Redis reports the session bus's Redis: nil when it answers. Leave
	// nil without Redis.
	Redis func() error
	// Audit is the state of the audit trail's spool.
	Audit func() AuditStats
	// RateLimit is the state of the rate limiter.
	RateLimit func() RateLimitStats
}

// AuditStats is what Metrics shows of the audit trail (audit.Stats).
type AuditStats struct {
	Pending       int
	SpoolBytes    int64
	Dropped, Sent int64
	Connected     bool
}

// RateLimitStats is what Metrics shows of the rate limiter
// (ratelimit.Stats and its state).
type RateLimitStats struct {
	Checks, Refused, ShadowRefused, Unavailable, Local, Failures int64
	// Healthy: the shared store (Redis) answers, or there is none.
	Healthy        bool
	LiveDataPlanes int
}

// Metrics are the data plane's Prometheus metrics, in a registry of their
// own (with the Go runtime and process collectors).
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	authFail *prometheus.CounterVec
	applies  *prometheus.CounterVec
	// rlRefused counts rate-limit refusals by policy (names come from the
	// config: bounded).
	rlRefused *prometheus.CounterVec
	// upConnect and upInit time upstream sessions' start, by server
	// (names come from the config: bounded).
	upConnect, upInit *prometheus.HistogramVec

	maxTools int
	mu       sync.RWMutex
	children map[labels]*child
	tools    map[string]struct{}
}

type labels struct{ endpoint, method, server, tool, outcome string }

type child struct {
	count prometheus.Counter
	dur   prometheus.Observer
}

// NewMetrics registers the data plane's metrics; maxTools caps the distinct
// tool label values (DefaultMaxTools when 0).
func NewMetrics(src Sources, maxTools int) *Metrics {
	if maxTools <= 0 {
		maxTools = DefaultMaxTools
	}
	m := &Metrics{
		reg:      prometheus.NewRegistry(),
		maxTools: maxTools,
		children: make(map[labels]*child),
		tools:    make(map[string]struct{}),
	}
	names := []string{"endpoint", "method", "server", "tool", "outcome"}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metamcp_dataplane_requests_total",
		Help: "MCP requests (POSTs) served, by endpoint, JSON-RPC method, upstream server, tool and outcome.",
	}, names)
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metamcp_dataplane_request_duration_seconds",
		Help:    "Time to answer an MCP request (POST), by endpoint, JSON-RPC method, upstream server, tool and outcome.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, names)
	m.authFail = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metamcp_dataplane_auth_failures_total",
		Help: "Requests refused before reaching an endpoint's MCP server, by reason: unauthorized (401: no or bad credential), forbidden (403: a key not valid for the endpoint), throttled (429: too many failed attempts).",
	}, []string{"reason"})
	m.applies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metamcp_dataplane_snapshot_applies_total",
		Help: "Config snapshots received from the control plane, by result: applied, partial (some servers left out), keys_only (refused, its API and session keys applied) or refused.",
	}, []string{"result"})
	m.rlRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metamcp_dataplane_ratelimit_refusals_total",
		Help: "Calls refused by a rate-limit policy, by policy and reason: limited (over the limit), unavailable (its Redis away and the policy closed), shadow (a shadow policy would have refused; the call went on).",
	}, []string{"policy", "reason"})
	connectBuckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m.upConnect = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metamcp_dataplane_upstream_connect_duration_seconds",
		Help:    "Time to connect an upstream session, by server and result (ok or error): a stdio process started, an SSE stream opened (a Streamable HTTP server connects within its initialize).",
		Buckets: connectBuckets,
	}, []string{"server", "result"})
	m.upInit = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "metamcp_dataplane_upstream_initialize_duration_seconds",
		Help:    "Time of an upstream session's MCP initialize, by server and result (ok or error).",
		Buckets: connectBuckets,
	}, []string{"server", "result"})
	m.reg.MustRegister(m.requests, m.duration, m.authFail, m.applies, m.rlRefused, m.upConnect, m.upInit,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&sourceCollector{src: src})
	for _, r := range []string{"applied", "partial", "keys_only", "refused"} {
		m.applies.WithLabelValues(r)
	}
	for _, r := range []string{OutcomeUnauthorized, OutcomeForbidden, OutcomeThrottled} {
		m.authFail.WithLabelValues(r)
	}
	return m
}

// Registry is where the metrics are registered: serve it with promhttp, or
// register more collectors on it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Applied counts a snapshot the data plane applied or refused, by its Ack.
func (m *Metrics) Applied(ack *metamcpv1.Ack) {
	if m == nil {
		return
	}
	result := "applied"
	switch {
	case ack.GetOutcome() == metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY:
		result = "keys_only"
	case ack.GetError() != "":
		result = "refused"
	case ack.GetOutcome() == metamcpv1.ApplyOutcome_APPLY_OUTCOME_PARTIAL:
		result = "partial"
	}
	m.applies.WithLabelValues(result).Inc()
}

// UpstreamConnect times one phase ("connect" or "initialize") of an
// upstream session's start (upstream.PoolOptions.ObserveConnect).
func (m *Metrics) UpstreamConnect(server, phase string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	h := m.upInit
	if phase == "connect" {
		h = m.upConnect
	}
	h.WithLabelValues(server, result).Observe(d.Seconds())
}

// authFailure counts a refusal before the endpoint's server.
func (m *Metrics) authFailure(reason string) { m.authFail.WithLabelValues(reason).Inc() }

// observe counts one request and its duration.
func (m *Metrics) observe(l labels, d time.Duration) {
	l.method = methodLabel(l.method)
	if l.server == "" || l.method != "tools/call" {
		// Only a tool that reached an upstream is a label: names the
		// client made up stay out, and so do prompt names and resource
		// URIs.
		l.tool = ""
	}
	m.mu.RLock()
	c := m.children[l]
	m.mu.RUnlock()
	if c == nil {
		c = m.newChild(l)
	}
	c.count.Inc()
	c.dur.Observe(d.Seconds())
}

func (m *Metrics) newChild(l labels) *child {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.children[l]; c != nil {
		return c
	}
	folded := l
	if l.tool != "" {
		if _, ok := m.tools[l.tool]; !ok {
			if len(m.tools) < m.maxTools {
				m.tools[l.tool] = struct{}{}
			} else {
				folded.tool = OtherTool
			}
		}
	}
	lv := []string{folded.endpoint, folded.method, folded.server, folded.tool, folded.outcome}
	c := &child{count: m.requests.WithLabelValues(lv...), dur: m.duration.WithLabelValues(lv...)}
	m.children[l] = c
	return c
}

// methods are the JSON-RPC methods that are labels as they are; a client
// may send anything, and everything else is "other".
var methods = map[string]bool{
	"initialize": true, "ping": true, "server/discover": true,
	"tools/list": true, "tools/call": true,
	"prompts/list": true, "prompts/get": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"completion/complete": true, "logging/setLevel": true,
	"subscriptions/listen": true, "tasks/get": true, "tasks/result": true, "tasks/list": true, "tasks/cancel": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/roots/list_changed": true,
	"notifications/progress": true,
}

func methodLabel(m string) string {
	if m == "" || methods[m] {
		return m
	}
	return "other"
}

// sourceCollector reads Sources at scrape time.
type sourceCollector struct{ src Sources }

var (
	descUpUp           = prometheus.NewDesc("metamcp_dataplane_upstream_up", "0 when the upstream server is down on this replica (its last connection or initialize failed), 1 otherwise (healthy, or idle: not needed yet).", []string{"server"}, nil)
	descUpSessions     = prometheus.NewDesc("metamcp_dataplane_upstream_sessions", "Live upstream MCP sessions per server.", []string{"server"}, nil)
	descUpProcesses    = prometheus.NewDesc("metamcp_dataplane_upstream_processes", "Live stdio processes per server.", []string{"server"}, nil)
	descSessions       = prometheus.NewDesc("metamcp_dataplane_client_sessions", "Live downstream (client) sessions: Streamable HTTP and SSE.", nil, nil)
	descRevision       = prometheus.NewDesc("metamcp_dataplane_config_revision", "Revision of the config snapshot served (0: none yet).", nil, nil)
	descSnapshotAge    = prometheus.NewDesc("metamcp_dataplane_snapshot_age_seconds", "Time since the control plane built the config snapshot served (absent before the first); it grows while the config does not change, and while this data plane cannot hear of changes (see metamcp_dataplane_sync_connected).", nil, nil)
	descSync           = prometheus.NewDesc("metamcp_dataplane_sync_connected", "1 while the sync stream to the control plane is up.", nil, nil)
	descRedis          = prometheus.NewDesc("metamcp_dataplane_redis_up", "1 while the Redis of the session bus answers (absent without Redis).", nil, nil)
	descAuditPending   = prometheus.NewDesc("metamcp_dataplane_audit_spool_records", "Call records in the audit spool, waiting for the control plane to store them.", nil, nil)
	descAuditBytes     = prometheus.NewDesc("metamcp_dataplane_audit_spool_bytes", "Size of the audit spool on disk.", nil, nil)
	descAuditDropped   = prometheus.NewDesc("metamcp_dataplane_audit_records_dropped_total", "Call records lost: the spool or the gateway's record buffer was full.", nil, nil)
	descAuditSent      = prometheus.NewDesc("metamcp_dataplane_audit_records_sent_total", "Call records the control plane acknowledged.", nil, nil)
	descAuditConnected = prometheus.NewDesc("metamcp_dataplane_audit_connected", "1 while the record stream to the control plane is up.", nil, nil)
	descRLDecisions    = prometheus.NewDesc("metamcp_dataplane_ratelimit_decisions_total", "Rate-limit checks of calls that some policy covers, by result: checked (all), refused, shadow_refused (a shadow policy would have refused), unavailable (refused: Redis away and a closed policy), local (counted in process: Redis away and a local policy).", []string{"result"}, nil)
	descRLFailures     = prometheus.NewDesc("metamcp_dataplane_ratelimit_redis_failures_total", "Rate-limit round trips to Redis that failed.", nil, nil)
	descRLHealthy      = prometheus.NewDesc("metamcp_dataplane_ratelimit_redis_up", "1 while the rate limiter's Redis answers (or it counts in process), 0 while its circuit breaker is open.", nil, nil)
	descRLLive         = prometheus.NewDesc("metamcp_dataplane_ratelimit_live_dataplanes", "Data planes live as the control plane last said (a local policy's rate is shared among them).", nil, nil)
)

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUpUp, descUpSessions, descUpProcesses, descSessions, descRevision, descSnapshotAge, descSync, descRedis,
		descAuditPending, descAuditBytes, descAuditDropped, descAuditSent, descAuditConnected, descRLDecisions, descRLFailures, descRLHealthy, descRLLive} {
		ch <- d
	}
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src
	if s.Upstreams != nil {
		for _, u := range s.Upstreams() {
			up := b2f(u.GetState() != metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN)
			ch <- prometheus.MustNewConstMetric(descUpUp, prometheus.GaugeValue, up, u.GetServer())
			ch <- prometheus.MustNewConstMetric(descUpSessions, prometheus.GaugeValue, float64(u.GetSessions()), u.GetServer())
			ch <- prometheus.MustNewConstMetric(descUpProcesses, prometheus.GaugeValue, float64(u.GetProcesses()), u.GetServer())
		}
	}
	if s.ClientSessions != nil {
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(s.ClientSessions()))
	}
	if s.Revision != nil {
		ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(s.Revision()))
	}
	if s.SnapshotBuilt != nil {
		if built := s.SnapshotBuilt(); !built.IsZero() {
			ch <- prometheus.MustNewConstMetric(descSnapshotAge, prometheus.GaugeValue, max(0, time.Since(built).Seconds()))
		}
	}
	if s.SyncConnected != nil {
		ch <- prometheus.MustNewConstMetric(descSync, prometheus.GaugeValue, b2f(s.SyncConnected()))
	}
	if s.Redis != nil {
		ch <- prometheus.MustNewConstMetric(descRedis, prometheus.GaugeValue, b2f(s.Redis() == nil))
	}
	if s.Audit != nil {
		a := s.Audit()
		ch <- prometheus.MustNewConstMetric(descAuditPending, prometheus.GaugeValue, float64(a.Pending))
		ch <- prometheus.MustNewConstMetric(descAuditBytes, prometheus.GaugeValue, float64(a.SpoolBytes))
		ch <- prometheus.MustNewConstMetric(descAuditDropped, prometheus.CounterValue, float64(a.Dropped))
		ch <- prometheus.MustNewConstMetric(descAuditSent, prometheus.CounterValue, float64(a.Sent))
		ch <- prometheus.MustNewConstMetric(descAuditConnected, prometheus.GaugeValue, b2f(a.Connected))
	}
	if s.RateLimit != nil {
		r := s.RateLimit()
		for _, v := range []struct {
			result string
			n      int64
		}{{"checked", r.Checks}, {"refused", r.Refused}, {"shadow_refused", r.ShadowRefused}, {"unavailable", r.Unavailable}, {"local", r.Local}} {
			ch <- prometheus.MustNewConstMetric(descRLDecisions, prometheus.CounterValue, float64(v.n), v.result)
		}
		ch <- prometheus.MustNewConstMetric(descRLFailures, prometheus.CounterValue, float64(r.Failures))
		ch <- prometheus.MustNewConstMetric(descRLHealthy, prometheus.GaugeValue, b2f(r.Healthy))
		ch <- prometheus.MustNewConstMetric(descRLLive, prometheus.GaugeValue, float64(r.LiveDataPlanes))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
