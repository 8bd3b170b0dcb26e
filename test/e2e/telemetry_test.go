package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape GETs a Prometheus endpoint and returns its text.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// metricValue is the value of the sample of name whose labels include all
// of labels (k="v" pairs), or -1 when there is none.
func metricValue(text, name string, labels ...string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		head := line[:sp]
		all := true
		for _, l := range labels {
			if !strings.Contains(head, l) {
				all = false
				break
			}
		}
		if all {
			v, err := strconv.ParseFloat(line[sp+1:], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

var metricsListening = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// TestMetricsAndAccessLog scrapes both planes after known traffic: calls
// that succeed and fail, a refused key, a rate-limited call, an upstream
// that is down and a config change; the data plane's access log has a line
// per request and never the key.
func TestMetricsAndAccessLog(t *testing.T) {
	cp := startControlPlane(t, "--metrics-listen", "127.0.0.1:0")
	m := metricsListening.FindStringSubmatch(cp.logs.String())
	if m == nil {
		t.Fatalf("the control plane did not log where its metrics are:\n%s", cp.logs)
	}
	cpMetrics := "http://" + m[1] + "/metrics"
	dp := startDataPlane(t, cp, "dp-metrics", "--access-log", "on")
	cp.ok(t, "create", "server", "demo", "--command", metamcpBin, "--arg", "demo-server")
	cp.ok(t, "create", "server", "broken", "--command", metamcpBin, "--arg", "no-such-command")
	url, key := gatewayEndpoint(t, cp, dp, "obs", "demo", "broken")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &rawMCP{url: url + "/mcp", key: key}
	c.initialize(ctx, t, "2025-11-25")
	c.call(ctx, t, "tools/list", `{}`)
	for range 3 {
		if r := c.call(ctx, t, "tools/call", `{"name":"demo__add","arguments":{"a":1,"b":2}}`); r.Error != nil {
			t.Fatalf("tools/call demo__add: %s", r.Error)
		}
	}
	if r := c.call(ctx, t, "tools/call", `{"name":"nope__missing","arguments":{}}`); r.Error == nil {
		t.Fatalf("tools/call of an unknown tool succeeded: %s", r.body)
	}
	// A refused key, and a key in the query string that must not be logged.
	bad := &rawMCP{url: url + "/mcp?api_key=mm_querysecret", key: "mm_notakey"}
	if code, _ := bad.post(ctx, t, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Fatalf("a bad key got HTTP %d, want 401 or 403", code)
	}
	// A rate-limited call: one demo__add an hour on endpoint lim.
	cp.ok(t, "create", "ratelimit", "tight", "--rate", "1", "--per", "1h", "--tool", "demo__add")
	cp.ok(t, "create", "endpoint", "lim", "--namespace", "obs", "--rate-limit", "tight")
	limKey := createAPIKey(t, cp, "lim-key", "lim")
	waitApplied(t, cp, cp.revisionNum(t), dp)
	lim := &rawMCP{url: strings.Replace(url, "/obs", "/lim", 1) + "/mcp", key: limKey}
	lim.initialize(ctx, t, "2025-11-25")
	if r := lim.call(ctx, t, "tools/call", `{"name":"demo__add","arguments":{"a":1,"b":2}}`); r.Error != nil {
		t.Fatalf("the first tools/call on lim: %s", r.Error)
	}
	if r, err := lim.do(ctx, `"over"`, "tools/call", `{"name":"demo__add","arguments":{"a":1,"b":2}}`); err == nil && r.Error == nil {
		t.Fatalf("the second tools/call on lim, over its rate limit, succeeded: %s", r.body)
	}
	// A config change: one more snapshot applied.
	before := cp.revisionNum(t)
	cp.ok(t, "create", "namespace", "spare", "--server", "demo")
	waitApplied(t, cp, before+1, dp)

	dpText := ""
	eventually(t, "the data plane's metrics show the traffic", func() (bool, string) {
		dpText = scrape(t, "http://"+dp.addr+"/metrics")
		return metricValue(dpText, "metamcp_dataplane_upstream_up", `server="broken"`) == 0 &&
			metricValue(dpText, "metamcp_dataplane_config_revision") == float64(before+1) &&
			metricValue(dpText, "metamcp_dataplane_audit_records_sent_total") >= 4, dpText
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		say    string
	}{
		{"metamcp_dataplane_requests_total", []string{`endpoint="obs"`, `method="tools/call"`, `server="demo"`, `tool="demo__add"`, `outcome="ok"`}, eq(3), "3"},
		{"metamcp_dataplane_request_duration_seconds_count", []string{`endpoint="obs"`, `method="tools/call"`, `tool="demo__add"`, `outcome="ok"`}, eq(3), "3"},
		{"metamcp_dataplane_requests_total", []string{`endpoint="obs"`, `method="tools/call"`, `server=""`, `tool=""`, `outcome="error"`}, eq(1), "1"},
		{"metamcp_dataplane_requests_total", []string{`endpoint="obs"`, `method="initialize"`, `outcome="ok"`}, eq(1), "1"},
		{"metamcp_dataplane_auth_failures_total", nil, atLeast(1), ">= 1 (the bad key)"},
		{"metamcp_dataplane_upstream_up", []string{`server="demo"`}, eq(1), "1"},
		{"metamcp_dataplane_upstream_processes", []string{`server="demo"`}, eq(1), "1"},
		{"metamcp_dataplane_client_sessions", nil, eq(2), "2 (obs, lim)"},
		{"metamcp_dataplane_sync_connected", nil, eq(1), "1"},
		{"metamcp_dataplane_snapshot_applies_total", []string{`result="applied"`}, atLeast(2), ">= 2"},
		{"metamcp_dataplane_audit_records_dropped_total", nil, eq(0), "0"},
		{"metamcp_dataplane_audit_spool_records", nil, atLeast(0), "present"},
		{"metamcp_dataplane_ratelimit_decisions_total", []string{`result="refused"`}, eq(1), "1"},
		{"metamcp_dataplane_ratelimit_decisions_total", []string{`result="checked"`}, eq(2), "2"},
		{"metamcp_dataplane_ratelimit_refusals_total", []string{`policy="tight"`, `reason="limited"`}, eq(1), "1"},
		{"metamcp_dataplane_requests_total", []string{`endpoint="lim"`, `method="tools/call"`, `outcome="rate_limited"`}, eq(1), "1"},
		{"metamcp_dataplane_ratelimit_redis_up", nil, eq(1), "1 (no Redis: counted in process)"},
		// demo started and initialized once; broken's process starts, its
		// initialize fails.
		{"metamcp_dataplane_upstream_connect_duration_seconds_count", []string{`server="demo"`, `result="ok"`}, eq(1), "1"},
		{"metamcp_dataplane_upstream_initialize_duration_seconds_count", []string{`server="demo"`, `result="ok"`}, eq(1), "1"},
		{"metamcp_dataplane_upstream_initialize_duration_seconds_count", []string{`server="broken"`, `result="error"`}, atLeast(1), ">= 1"},
		{"metamcp_dataplane_upstream_initialize_duration_seconds_count", []string{`server="broken"`, `result="ok"`}, eq(-1), "absent"},
		{"metamcp_dataplane_snapshot_age_seconds", nil, func(v float64) bool { return v >= 0 && v < 120 }, "between 0 and 120 s"},
		{"go_goroutines", nil, atLeast(1), ">= 1"},
		{"process_cpu_seconds_total", nil, atLeast(0), "present"},
	} {
		if v := metricValue(dpText, c.name, c.labels...); !c.want(v) {
			t.Errorf("data plane: %s%v = %v, want %s", c.name, c.labels, v, c.say)
		}
	}
	if strings.Contains(dpText, "alice") || strings.Contains(dpText, "obs-key") || strings.Contains(dpText, "nope__missing") {
		t.Errorf("a principal or a made-up tool name is a label:\n%s", dpText)
	}

	cpText := scrape(t, cpMetrics)
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		say    string
	}{
		{"metamcp_controlplane_grpc_calls_total", []string{`method="/metamcp.v1.AdminService/CreateServer"`, `code="OK"`}, eq(2), "2"},
		{"metamcp_controlplane_grpc_call_duration_seconds_count", []string{`method="/metamcp.v1.AdminService/CreateServer"`}, eq(2), "2"},
		{"metamcp_controlplane_connected_dataplanes", nil, eq(1), "1"},
		{"metamcp_controlplane_snapshot_acks_total", []string{`result="ack"`}, atLeast(2), ">= 2"},
		{"metamcp_controlplane_snapshot_acks_total", []string{`result="nack"`}, eq(0), "0"},
		{"metamcp_controlplane_config_push_seconds_count", nil, atLeast(2), ">= 2"},
		{"metamcp_controlplane_snapshot_build_duration_seconds_count", []string{`result="ok"`}, atLeast(2), ">= 2"},
		{"metamcp_controlplane_call_records_stored_total", nil, atLeast(4), ">= 4 (3 calls, a refusal)"},
		{"metamcp_controlplane_store_duration_seconds_count", []string{`operation="append_call_records"`, `result="ok"`}, atLeast(1), ">= 1"},
		{"metamcp_controlplane_call_record_lag_seconds_count", nil, atLeast(4), ">= 4"},
		{"metamcp_controlplane_call_record_lag_seconds_bucket", []string{`le="60"`}, atLeast(4), ">= 4 (stored within a minute)"},
		{"go_goroutines", nil, atLeast(1), ">= 1"},
	} {
		if v := metricValue(cpText, c.name, c.labels...); !c.want(v) {
			t.Errorf("control plane: %s%v = %v, want %s", c.name, c.labels, v, c.say)
		}
	}

	logs := dp.logs.String()
	var calls int
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "log=access") && strings.Contains(line, "endpoint=obs ") && strings.Contains(line, "name=demo__add") {
			calls++
			for _, want := range []string{"msg=request", "request_id=", "endpoint=obs", "principal=obs-key", "method=tools/call", "status=200", "outcome=ok", "duration_ms="} {
				if !strings.Contains(line, want) {
					t.Errorf("access log line lacks %s: %s", want, line)
				}
			}
		}
	}
	if calls != 3 {
		t.Errorf("%d access log lines for demo__add, want 3:\n%s", calls, logs)
	}
	if !regexp.MustCompile(`log=access .*status=40[13] outcome=(unauthorized|forbidden)`).MatchString(logs) {
		t.Errorf("no access log line for the refused key:\n%s", logs)
	}
	for _, secret := range []string{key, "mm_querysecret", "mm_notakey"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the data plane's log shows a credential (%s...)", secret[:6])
		}
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

func atLeast(want float64) func(float64) bool { return func(v float64) bool { return v >= want } }
