package gateway

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// JSON-RPC error codes of the rate limiter's refusals (implementation-
// defined server errors; -32029 after HTTP's 429).
const (
	codeRateLimited        = -32029
	codeLimiterUnavailable = -32030
)

// Response headers of a refusal.
const (
	headerRetryAfter      = "Retry-After"
	headerRateLimitPolicy = "Ratelimit-Policy"
	headerRateLimit       = "Ratelimit"
)

// rateLimit counts a request against the rate-limit policies of its
// endpoint (after authentication and authorization, before anything reaches
// an upstream, once, on the replica that received it) and returns the error
// to answer with when a policy refuses it. On a POST's response it sets
// Retry-After and the IETF RateLimit-Policy and RateLimit headers, which
// turn the answer into a 429 (writeStatus).
func (g *Gateway) rateLimit(ctx context.Context, c *call, msg *rpc.Message) *rpc.Error {
	l := g.opts.Limiter
	if l == nil || !l.Applies(c.t.snap, c.t.name, msg.Method) {
		return nil
	}
	if st, _ := c.params.str(msg.Params, "requestState"); strings.HasPrefix(st, requestStatePrefix) {
		// A stateless call continued with the input it was asked for: it
		// was counted when it started.
		return nil
	}
	rc := ratelimit.Call{Endpoint: c.t.name, Method: msg.Method, Principal: c.principal, ClientIP: c.clientIP}
	if c.who != nil {
		rc.Principal, rc.KeyID = c.who.Name, c.who.KeyID
	}
	target := ""
	switch msg.Method {
	case "tools/call":
		target, _ = c.params.str(msg.Params, "name")
		rc.Tool = target
		if l.NeedsRoute(c.t.snap, c.t.name) {
			if m, _, ok := routeTool(c.t.ep, target); ok {
				rc.Server = m.Server.GetName()
			}
		}
	case "prompts/get":
		target, _ = c.params.str(msg.Params, "name")
		if l.NeedsRoute(c.t.snap, c.t.name) {
			if m, _ := routeName(c.t.ep, target); m != nil {
				rc.Server = m.Server.GetName()
			}
		}
	case "resources/read":
		target, _ = c.params.str(msg.Params, "uri")
	}
	start := time.Now()
	d := l.Check(ctx, c.t.snap, &rc)
	c.shadowLimits = d.Shadow
	observeRateLimit(c, &d)
	if !d.Refused {
		return nil
	}
	rerr := refusalError(&d)
	if r, ok := upstream.CallerFrom(ctx).(*relay); ok && r.out != nil {
		setRateLimitHeaders(r.out.w.Header(), &d)
	}
	c.rateLimited = true
	g.record(c, msg.Method, target, rc.Server, start, nil, rerr)
	return rerr
}

// refusalError is the JSON-RPC error of a refused call: what an agent needs
// to back off in its data (policy, limit, milliseconds to wait).
func refusalError(d *ratelimit.Decision) *rpc.Error {
	p := d.Policy
	wait := retryMillis(d.RetryAfter)
	if d.Unavailable {
		data, _ := json.Marshal(map[string]any{"policy": p.Name, "limiterUnavailable": true, "retryAfterMs": wait})
		return &rpc.Error{Code: codeLimiterUnavailable, Data: data,
			Message: "the rate limiter is unavailable (Redis does not answer) and rate-limit policy " + quote(p.Name) + " refuses calls while it is: retry in " + waitText(d.RetryAfter)}
	}
	data, _ := json.Marshal(map[string]any{"policy": p.Name, "limit": p.Limit.Rate, "periodMs": p.Limit.Period.Milliseconds(), "burst": p.Limit.Burst, "retryAfterMs": wait})
	return &rpc.Error{Code: codeRateLimited, Data: data,
		Message: "rate limit exceeded: policy " + quote(p.Name) + " allows " + strconv.Itoa(p.Limit.Rate) + " calls per " + p.Limit.Period.String() + " (bursts of " + strconv.Itoa(p.Limit.Burst) + "): retry in " + waitText(d.RetryAfter)}
}

func retryMillis(d time.Duration) int64 {
	return int64(math.Ceil(float64(d) / float64(time.Millisecond)))
}

func waitText(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(retryMillis(d), 10) + "ms"
	}
	return d.Round(100 * time.Millisecond).String()
}

// retrySeconds is d in whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int64 {
	return max(int64(math.Ceil(d.Seconds())), 1)
}

// setRateLimitHeaders sets Retry-After and, for a policy's refusal, the
// RateLimit-Policy and RateLimit fields of the IETF draft
// (draft-ietf-httpapi-ratelimit-headers): quota q per window w seconds,
// remaining r and seconds t until calls are admitted again.
func setRateLimitHeaders(h http.Header, d *ratelimit.Decision) {
	secs := strconv.FormatInt(retrySeconds(d.RetryAfter), 10)
	h[headerRetryAfter] = []string{secs}
	if d.Unavailable {
		return
	}
	p := d.Policy
	name := string(rpc.AppendString(nil, p.Name))
	window := strconv.FormatInt(max(int64(math.Ceil(p.Limit.Period.Seconds())), 1), 10)
	h[headerRateLimitPolicy] = []string{name + ";q=" + strconv.Itoa(p.Limit.Rate) + ";w=" + window}
	h[headerRateLimit] = []string{name + ";r=0;t=" + secs}
}

// limitStatus is the HTTP status of a rate limiter's refusal whose headers
// rateLimit set, or 0.
func limitStatus(w http.ResponseWriter, rerr *rpc.Error) int {
	if rerr == nil || w.Header()[headerRetryAfter] == nil {
		return 0
	}
	switch rerr.Code {
	case codeRateLimited:
		return http.StatusTooManyRequests
	case codeLimiterUnavailable:
		return http.StatusServiceUnavailable
	}
	return 0
}
