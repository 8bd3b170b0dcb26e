package telemetry

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// fakeGateway plays the gateway's part: it tells the request's telemetry
// what it learnt, then answers with status.
func fakeGateway(endpoint, principal, method, name, server string, outcome metamcpv1.CallOutcome, status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if endpoint != "" {
			obs := From(w)
			obs.Begin(endpoint, principal, method)
			if name != "" {
				obs.Call(name, server, outcome)
			}
		}
		w.WriteHeader(status)
	})
}

func serve(t *testing.T, tel *Telemetry, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.Wrap(h).ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader("{}")))
	return rec
}

func TestMetricsCountRequestsWithBoundedLabels(t *testing.T) {
	m := NewMetrics(Sources{
		Upstreams: func() []*metamcpv1.UpstreamStatus {
			return []*metamcpv1.UpstreamStatus{
				{Server: "demo", State: metamcpv1.UpstreamState_UPSTREAM_STATE_HEALTHY, Sessions: 2, Processes: 1},
				{Server: "broken", State: metamcpv1.UpstreamState_UPSTREAM_STATE_DOWN},
			}
		},
		ClientSessions: func() int { return 3 },
		Revision:       func() int64 { return 7 },
	}, 2)
	tel := New(Options{Metrics: m})
	const url = "http://dp/metamcp/main/mcp"
	ok := metamcpv1.CallOutcome_CALL_OUTCOME_OK
	for range 3 {
		serve(t, tel, fakeGateway("main", "alice", "tools/call", "demo__add", "demo", ok, 200), "POST", url)
	}
	serve(t, tel, fakeGateway("main", "bob", "tools/call", "demo__echo", "demo", metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR, 200), "POST", url)
	// Past the cap of two tools: folded into one value.
	serve(t, tel, fakeGateway("main", "bob", "tools/call", "demo__now", "demo", ok, 200), "POST", url)
	serve(t, tel, fakeGateway("main", "bob", "tools/call", "demo__random", "demo", ok, 200), "POST", url)
	// A tool that reached no upstream, and a method no MCP revision has.
	serve(t, tel, fakeGateway("main", "bob", "tools/call", "made-up", "", metamcpv1.CallOutcome_CALL_OUTCOME_ERROR, 200), "POST", url)
	serve(t, tel, fakeGateway("main", "bob", "x/whatever-1", "", "", ok, 200), "POST", url)
	serve(t, tel, fakeGateway("main", "bob", "tools/list", "", "", ok, 200), "POST", url)
	// Refused before the endpoint.
	serve(t, tel, fakeGateway("", "", "", "", "", ok, 401), "POST", url)
	serve(t, tel, fakeGateway("", "", "", "", "", ok, 429), "POST", url)
	// Not an MCP path: not observed.
	serve(t, tel, fakeGateway("", "", "", "", "", ok, 401), "GET", "http://dp/readyz")

	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"main", "tools/call", "demo", "demo__add", "ok"}, 3},
		{[]string{"main", "tools/call", "demo", "demo__echo", "tool_error"}, 1},
		{[]string{"main", "tools/call", "demo", OtherTool, "ok"}, 2},
		{[]string{"main", "tools/call", "", "", "error"}, 1},
		{[]string{"main", "other", "", "", "ok"}, 1},
		{[]string{"main", "tools/list", "", "", "ok"}, 1},
	} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("requests%q = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.authFail.WithLabelValues(OutcomeUnauthorized)); got != 2-1 {
		t.Errorf("auth failures (unauthorized) = %v, want 1 (the /readyz one does not count)", got)
	}
	if got := testutil.ToFloat64(m.authFail.WithLabelValues(OutcomeThrottled)); got != 1 {
		t.Errorf("auth failures (throttled) = %v, want 1", got)
	}
	out, err := testutil.CollectAndFormat(m.reg, expfmt.TypeTextPlain, "metamcp_dataplane_upstream_up", "metamcp_dataplane_upstream_sessions", "metamcp_dataplane_client_sessions", "metamcp_dataplane_config_revision", "metamcp_dataplane_request_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{
		`metamcp_dataplane_upstream_up{server="broken"} 0`,
		`metamcp_dataplane_upstream_up{server="demo"} 1`,
		`metamcp_dataplane_upstream_sessions{server="demo"} 2`,
		`metamcp_dataplane_client_sessions 3`,
		`metamcp_dataplane_config_revision 7`,
		`metamcp_dataplane_request_duration_seconds_count{endpoint="main",method="tools/call",outcome="ok",server="demo",tool="demo__add"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
	for _, never := range []string{"alice", "bob", "made-up", "whatever"} {
		if strings.Contains(text, never) {
			t.Errorf("metrics name %q: principals and made-up names must never be labels:\n%s", never, text)
		}
	}
}

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	ok := metamcpv1.CallOutcome_CALL_OUTCOME_OK
	for _, c := range []struct {
		mode      AccessLog
		wantLines int
	}{{AccessLogOff, 0}, {AccessLogOn, 3}, {AccessLogErrors, 2}} {
		buf.Reset()
		tel := New(Options{AccessLog: c.mode, Logger: logger})
		rec := serve(t, tel, fakeGateway("main", "alice", "tools/call", "demo__add", "demo", ok, 200), "POST", "http://dp/metamcp/main/mcp?api_key=mm_secretkey")
		serve(t, tel, fakeGateway("main", "alice", "tools/call", "demo__add", "demo", metamcpv1.CallOutcome_CALL_OUTCOME_ERROR, 200), "POST", "http://dp/metamcp/main/mcp")
		serve(t, tel, fakeGateway("", "", "", "", "", ok, 401), "POST", "http://dp/metamcp/main/mcp")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if buf.Len() == 0 {
			lines = nil
		}
		if len(lines) != c.wantLines {
			t.Errorf("--access-log %s: %d lines, want %d:\n%s", c.mode, len(lines), c.wantLines, buf.String())
			continue
		}
		if strings.Contains(buf.String(), "mm_secretkey") || strings.Contains(buf.String(), "api_key") {
			t.Errorf("the access log shows the query string:\n%s", buf.String())
		}
		if c.mode == AccessLogOn {
			id := rec.Header().Get(HeaderRequestID)
			for _, want := range []string{`"msg":"request"`, `"request_id":"` + id + `"`, `"endpoint":"main"`, `"principal":"alice"`, `"method":"tools/call"`, `"name":"demo__add"`, `"status":200`, `"outcome":"ok"`, `"duration_ms":`} {
				if !strings.Contains(lines[0], want) {
					t.Errorf("the access log line lacks %s:\n%s", want, lines[0])
				}
			}
			if id == "" {
				t.Error("no X-Request-Id in the answer")
			}
			if !strings.Contains(lines[2], `"status":401`) || !strings.Contains(lines[2], `"outcome":"unauthorized"`) {
				t.Errorf("the refused request's line: %s", lines[2])
			}
		}
	}
	// A proxy's request id is kept when it is plain, replaced when not.
	tel := New(Options{AccessLog: AccessLogOn, Logger: logger})
	for id, keep := range map[string]bool{"abc-123.x": true, "bad id\"": false} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "http://dp/metamcp/main/mcp", nil)
		req.Header.Set(HeaderRequestID, id)
		tel.Wrap(fakeGateway("main", "a", "ping", "", "", ok, 200)).ServeHTTP(rec, req)
		if got := rec.Header().Get(HeaderRequestID); (got == id) != keep || got == "" {
			t.Errorf("X-Request-Id %q answered as %q (kept: want %v)", id, got, keep)
		}
	}
}
