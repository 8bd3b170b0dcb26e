package gateway

import (
	"encoding/json"
	"net/http"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/telemetry"
)

// observe tells the data plane's telemetry (metrics, access log, traces),
// when it wraps w, which endpoint, caller and method a POST is; record adds
// what the call targeted and how it ended.
func observe(w http.ResponseWriter, r *http.Request, c *call, msg *rpc.Message) *telemetry.Request {
	obs := telemetry.From(w)
	obs.Begin(c.t.name, c.principal, msg.Method)
	if obs.Tracing() {
		var name string
		if msg.Method == "tools/call" || msg.Method == "prompts/get" {
			name, _ = rpc.StringField(msg.Params, "name")
		}
		meta, _ := rpc.RawField(msg.Params, "_meta")
		obs.Trace(r.Header, msg.Method, name, meta, headerValue(r.Header, headerSessionID))
	}
	return obs
}

// callOutcome is the outcome of a call that goes unrecorded (as record
// would classify it).
func callOutcome(c *call, method string, res json.RawMessage, rerr *rpc.Error) metamcpv1.CallOutcome {
	switch {
	case c.rateLimited:
		return metamcpv1.CallOutcome_CALL_OUTCOME_RATE_LIMITED
	case rerr != nil:
		return failureOutcome(rerr)
	case method == "tools/call" && isToolError(res):
		return metamcpv1.CallOutcome_CALL_OUTCOME_TOOL_ERROR
	}
	return metamcpv1.CallOutcome_CALL_OUTCOME_OK
}

// observeRateLimit counts, by policy, a rate-limit refusal and the shadow
// policies that would have refused.
func observeRateLimit(c *call, d *ratelimit.Decision) {
	if !d.Refused && len(d.Shadow) == 0 {
		return
	}
	policy := ""
	if d.Refused && d.Policy != nil {
		policy = d.Policy.Name
	}
	c.obs.RateLimit(policy, d.Unavailable, d.Shadow)
}
