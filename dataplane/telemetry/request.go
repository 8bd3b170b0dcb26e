package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// AccessLog says which requests get an access log line.
type AccessLog int

// The access log modes (--access-log).
const (
	AccessLogOff    AccessLog = iota // no line
	AccessLogOn                      // a line per request
	AccessLogErrors                  // a line per request that failed: an HTTP status of 400 or more, or an outcome other than ok
)

// ParseAccessLog reads "off", "on" or "errors".
func ParseAccessLog(s string) (AccessLog, error) {
	switch strings.ToLower(s) {
	case "off", "":
		return AccessLogOff, nil
	case "on":
		return AccessLogOn, nil
	case "errors":
		return AccessLogErrors, nil
	}
	return 0, fmt.Errorf("invalid access log mode %q: use off, on or errors", s)
}

func (a AccessLog) String() string {
	switch a {
	case AccessLogOn:
		return "on"
	case AccessLogErrors:
		return "errors"
	}
	return "off"
}

// Options configure Telemetry.
type Options struct {
	// Metrics, when set, count every MCP request.
	Metrics *Metrics
	// AccessLog says which requests Logger records.
	AccessLog AccessLog
	// Logger receives the access log lines (at level info).
	Logger *slog.Logger
	// Tracer, when set, makes a span per MCP request (POST) and one for
	// its upstream call.
	Tracer trace.Tracer
}

// Telemetry observes the MCP requests of a data plane. The zero value, and
// nil, observe nothing.
type Telemetry struct {
	opts   Options
	prefix string
	seq    atomic.Uint64
}

// New returns a Telemetry.
func New(opts Options) *Telemetry {
	if opts.Logger == nil {
		opts.AccessLog = AccessLogOff
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Telemetry{opts: opts, prefix: hex.EncodeToString(b[:]) + "-"}
}

// HeaderRequestID carries a request's id: taken from the request when a
// proxy in front set a usable one, else made here; always answered.
const HeaderRequestID = "X-Request-Id"

// Wrap observes the requests to MCP endpoints (paths under /metamcp/) that
// next serves; other paths (health checks, metrics) pass as they are.
func (t *Telemetry) Wrap(next http.Handler) http.Handler {
	if t == nil || (t.opts.Metrics == nil && t.opts.AccessLog == AccessLogOff && t.opts.Tracer == nil) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/metamcp/") {
			next.ServeHTTP(w, r)
			return
		}
		ow := &writer{ResponseWriter: w}
		ow.req.start = time.Now()
		ow.req.metrics = t.opts.Metrics
		if r.Method == http.MethodPost {
			ow.req.tracer = t.opts.Tracer
		}
		if t.opts.AccessLog != AccessLogOff {
			ow.req.id = t.requestID(r)
			w.Header()[HeaderRequestID] = []string{ow.req.id}
		}
		next.ServeHTTP(ow, r)
		t.done(r, &ow.req)
	})
}

// requestID is the request's X-Request-Id when it is short and plain, or a
// new one.
func (t *Telemetry) requestID(r *http.Request) string {
	if v := r.Header[HeaderRequestID]; len(v) == 1 && plainID(v[0]) {
		return v[0]
	}
	return t.prefix + strconv.FormatUint(t.seq.Add(1), 10)
}

func plainID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// done observes a finished request.
func (t *Telemetry) done(r *http.Request, req *Request) {
	d := time.Since(req.start)
	status := int(req.status.Load())
	req.mu.Lock()
	l := labels{endpoint: req.endpoint, method: req.method, server: req.server, tool: req.name, outcome: req.outcome}
	principal := req.principal
	req.mu.Unlock()
	if l.outcome == "" {
		l.outcome = statusOutcome(status)
	}
	req.endSpan(status, l)
	if m := t.opts.Metrics; m != nil {
		switch {
		case l.endpoint == "" && (status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusTooManyRequests):
			m.authFailure(l.outcome)
		case l.endpoint != "" && l.method != "" && r.Method == http.MethodPost:
			m.observe(l, d)
		}
	}
	if t.opts.AccessLog == AccessLogOff || (t.opts.AccessLog == AccessLogErrors && status < 400 && (l.outcome == OutcomeOK || status == 0)) {
		return
	}
	t.opts.Logger.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("request_id", req.id),
		slog.String("http_method", r.Method),
		slog.String("path", r.URL.Path), // never the query: it may hold a key
		slog.String("endpoint", l.endpoint),
		slog.String("principal", principal),
		slog.String("method", l.method),
		slog.String("name", l.tool),
		slog.String("server", l.server),
		slog.Int("status", status),
		slog.String("outcome", l.outcome),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
	)
}

// statusOutcome is the outcome of a request the gateway gave none.
func statusOutcome(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return OutcomeUnauthorized
	case status == http.StatusForbidden:
		return OutcomeForbidden
	case status == http.StatusTooManyRequests:
		return OutcomeThrottled
	case status >= 500:
		return OutcomeError
	case status >= 400:
		return OutcomeRejected
	}
	return OutcomeOK
}

// Request is what the gateway tells of one MCP request. A nil *Request
// (no telemetry) takes every call and does nothing.
type Request struct {
	start  time.Time
	id     string
	status atomic.Int32

	mu        sync.Mutex
	endpoint  string
	principal string
	method    string
	name      string
	server    string
	outcome   string

	metrics *Metrics     // nil: no metrics
	tracer  trace.Tracer // nil: not traced
	span    trace.Span   // the request's
	up      trace.Span   // its upstream call's
	upEnded bool
}

// From returns the Request that Wrap made for w, or nil.
func From(w http.ResponseWriter) *Request {
	for {
		switch v := w.(type) {
		case *writer:
			return &v.req
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}

// ID is the request's id ("" when the access log is off).
func (r *Request) ID() string {
	if r == nil {
		return ""
	}
	return r.id
}

// Begin says which endpoint the request reached, who made it (the
// principal's name, never a label) and its JSON-RPC method.
func (r *Request) Begin(endpoint, principal, method string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.endpoint, r.principal, r.method = endpoint, principal, method
	r.mu.Unlock()
}

// Call says what a tools/call, prompts/get or resources/read targeted (its
// name or URI), which upstream server served it ("" when none) and how it
// ended.
func (r *Request) Call(name, server string, outcome metamcpv1.CallOutcome) {
	if r == nil {
		return
	}
	o := OutcomeError
	switch outcome {
	case metamcpv1.CallOutcome_CALL_OUTCOME_OK:
		o = OutcomeOK
	case metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR:
		o = OutcomeToolError
	case metamcpv1.CallOutcome_CALL_OUTCOME_RATE_LIMITED:
		o = OutcomeRateLimited
	case metamcpv1.CallOutcome_CALL_OUTCOME_TIMEOUT:
		o = OutcomeTimeout
	case metamcpv1.CallOutcome_CALL_OUTCOME_CANCELLED:
		o = OutcomeCancelled
	case metamcpv1.CallOutcome_CALL_OUTCOME_FORBIDDEN:
		o = OutcomeForbidden
	case metamcpv1.CallOutcome_CALL_OUTCOME_UNAUTHORIZED:
		o = OutcomeUnauthorized
	}
	r.mu.Lock()
	r.name, r.server, r.outcome = name, server, o
	r.endUpstream(server, o)
	r.mu.Unlock()
}

// RateLimit counts a call that rate-limit policy refused ("" when none
// did; unavailable: its Redis was away and the policy is closed) and the
// shadow policies that would have refused it.
func (r *Request) RateLimit(policy string, unavailable bool, shadow []string) {
	if r == nil || r.metrics == nil {
		return
	}
	if policy != "" {
		reason := "limited"
		if unavailable {
			reason = "unavailable"
		}
		r.metrics.rlRefused.WithLabelValues(policy, reason).Inc()
	}
	for _, p := range shadow {
		r.metrics.rlRefused.WithLabelValues(p, "shadow").Inc()
	}
}

// writer notes the status of a response; Unwrap and Flush keep the
// gateway's streaming and the lean server's fast paths working through it.
type writer struct {
	http.ResponseWriter
	req Request
}

func (w *writer) WriteHeader(code int) {
	if code >= 200 {
		w.req.status.CompareAndSwap(0, int32(code))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(b []byte) (int, error) {
	w.req.status.CompareAndSwap(0, http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *writer) Flush() {
	w.req.status.CompareAndSwap(0, http.StatusOK)
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
