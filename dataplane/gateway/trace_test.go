package gateway

import (
	"strings"
	"testing"
)

// TestTraceContextReachesUpstream: a client's W3C trace-context headers
// reach the HTTP upstream on the call's own request; its credentials and
// other headers do not.
func TestTraceContextReachesUpstream(t *testing.T) {
	lh := newLiveHarness(t)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__headers","arguments":{}}}`
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"trace context", map[string]string{"Traceparent": tp, "Tracestate": "vendor=x", "Baggage": "user=7", "X-Custom": "no"},
			"traceparent=" + tp + " tracestate=vendor=x baggage=user=7 authorization= x-custom="},
		{"none", map[string]string{}, "traceparent= tracestate= baggage= authorization= x-custom="},
		{"oversized traceparent dropped", map[string]string{"Traceparent": strings.Repeat("a", 200), "Baggage": "k=v"},
			"traceparent= tracestate= baggage=k=v authorization= x-custom="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{headerProtocolVersion: "2026-07-28", "Authorization": "Bearer " + keyAlice}
			for k, v := range tc.headers {
				hdr[k] = v
			}
			status, _, body := post(t, lh.url("main", "mcp"), withMeta(call), hdr)
			if status != 200 || !strings.Contains(body, `"text":"`+tc.want+`"`) {
				t.Errorf("status %d body %s, want text %q", status, body, tc.want)
			}
		})
	}
}
