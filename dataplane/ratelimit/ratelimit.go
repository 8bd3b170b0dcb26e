// Package ratelimit enforces a snapshot's RateLimitPolicy resources on the
// data plane: for each call it picks the policies that apply (endpoint,
// server, tool glob, method), counts the call in their buckets in one Redis
// round trip (pkg/gcra: redis_rate's GCRA), and says whether the call may
// go on. A call refused by one policy is counted in none. While Redis is
// away, each policy does as its failure mode says: open (admit), closed
// (refuse: the limiter is unavailable) or local (count in this process at
// the policy's rate divided by the number of live data planes); a circuit
// breaker keeps calls from waiting on a dead Redis and probes it again.
package ratelimit

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/gcra"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// Defaults for zero Options fields.
const (
	// DefaultTimeout bounds the Redis round trip of one call: past it the
	// call goes on as the policies' failure modes say.
	DefaultTimeout = 100 * time.Millisecond
	// DefaultMinBackoff and DefaultMaxBackoff bound how long the breaker
	// keeps calls off a Redis that failed before one call probes it again.
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// Options configure a Limiter.
type Options struct {
	// Store is where the buckets shared by every replica live (a
	// *gcra.Redis). When nil or a *gcra.Memory, the limiter counts in this
	// process (`metamcp dev`, or a data plane without Redis) and never
	// fails.
	Store gcra.Store
	// Prefix starts every bucket's key, so deployments sharing a Redis
	// stay apart (the data plane's Redis prefix).
	Prefix string
	// Timeout bounds one call's wait for Redis (DefaultTimeout when 0).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the circuit breaker's pauses.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Limiter decides whether calls may go on. It is safe for concurrent use.
type Limiter struct {
	opts   Options
	log    *slog.Logger
	shared gcra.Store // Options.Store, or the in-process store
	local  *gcra.Memory
	remote bool // shared is Redis: it may fail

	replicas atomic.Int32
	breaker  breaker
	compiled atomic.Pointer[compiled]

	stats struct {
		checks, refused, shadowRefused, unavailable, local, failures atomic.Int64
	}
	shadowLog logEvery
}

// New returns a Limiter.
func New(opts Options) *Limiter {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	l := &Limiter{opts: opts, log: opts.Logger, local: gcra.NewMemory(), shared: opts.Store, remote: opts.Store != nil}
	if m, ok := opts.Store.(*gcra.Memory); ok {
		// In process (`metamcp dev`): it cannot fail.
		l.shared, l.remote = m, false
	}
	if l.shared == nil {
		l.shared = l.local
	}
	l.replicas.Store(1)
	l.breaker.min, l.breaker.max = opts.MinBackoff, opts.MaxBackoff
	l.breaker.log = opts.Logger
	return l
}

// SetLiveDataPlanes tells the limiter how many data planes share the load
// (the control plane's count, at least 1): a `local` policy admits its rate
// divided by it while Redis is away.
func (l *Limiter) SetLiveDataPlanes(n int) {
	l.replicas.Store(int32(max(n, 1)))
}

// LiveDataPlanes is the last SetLiveDataPlanes (1 before any).
func (l *Limiter) LiveDataPlanes() int { return int(l.replicas.Load()) }

// Call is what the limiter needs to know of one request.
type Call struct {
	Endpoint string
	// Method is the JSON-RPC method.
	Method string
	// Tool is the exposed (prefixed) tool name of a tools/call; Server the
	// server the request is routed to ("" when none or not known).
	Tool, Server string
	// Principal is the caller's name; KeyID the API key's name (when the
	// caller used one); ClientIP the client's address (through trusted
	// proxies).
	Principal, KeyID, ClientIP string
}

// Decision is the limiter's answer for one call.
type Decision struct {
	// Refused: the call must not go on.
	Refused bool
	// Unavailable: refused because Redis is away and Policy's failure mode
	// is closed, not because the caller is over a limit.
	Unavailable bool
	// Policy is the policy that refused the call.
	Policy *Policy
	// RetryAfter is how long until the call would be admitted.
	RetryAfter time.Duration
	// Shadow names the shadow policies that would have refused the call.
	Shadow []string
}

// Policy is one RateLimitPolicy as the limiter applies it.
type Policy struct {
	Spec   *metamcpv1.RateLimitPolicy
	Name   string
	Limit  gcra.Limit
	bucket gcra.Bucket // Limit boxed for Redis, Key unset
}

// Period returns the policy's period.
func (p *Policy) Period() time.Duration { return p.Limit.Period }

// NewPolicy compiles a policy.
func NewPolicy(p *metamcpv1.RateLimitPolicy) *Policy {
	return &Policy{Spec: p, Name: p.GetName(), Limit: gcra.PolicyLimit(p), bucket: gcra.NewBucket(gcra.PolicyLimit(p), p.GetShadow())}
}

// compiled holds one snapshot's policies per endpoint.
type compiled struct {
	snap       *snapshot.Compiled
	byEndpoint map[string][]*Policy
}

// policies returns the policies of endpoint in snap, compiled once per snapshot.
func (l *Limiter) policies(snap *snapshot.Compiled, endpoint string) []*Policy {
	c := l.compiled.Load()
	if c == nil || c.snap != snap {
		c = &compiled{snap: snap, byEndpoint: map[string][]*Policy{}}
		byName := map[string]*Policy{}
		for name, ep := range snap.Endpoints {
			for _, p := range ep.RateLimits {
				if p == nil {
					continue
				}
				cp := byName[p.GetName()]
				if cp == nil {
					cp = NewPolicy(p)
					byName[p.GetName()] = cp
				}
				c.byEndpoint[name] = append(c.byEndpoint[name], cp)
			}
		}
		l.compiled.Store(c)
	}
	return c.byEndpoint[endpoint]
}

// applies reports whether p counts call.
func applies(p *Policy, call *Call) bool {
	s := p.Spec
	if !s.GetEveryRequest() && call.Method != "tools/call" {
		return false
	}
	if sv := s.GetServer(); sv != "" && sv != call.Server {
		return false
	}
	if t := s.GetTool(); t != "" && (call.Tool == "" || !snapshot.MatchGlob(t, call.Tool)) {
		return false
	}
	return true
}

// Applies reports whether any policy of the call's endpoint in snap may
// count a request of method (before routing: server and tool aside), so a
// caller can skip routing work for calls no policy counts.
func (l *Limiter) Applies(snap *snapshot.Compiled, endpoint, method string) bool {
	if snap == nil {
		return false
	}
	for _, p := range l.policies(snap, endpoint) {
		if method == "tools/call" || p.Spec.GetEveryRequest() {
			return true
		}
	}
	return false
}

// NeedsRoute reports whether a policy of endpoint narrows by server or
// tool, so the caller must say which server and tool a call goes to.
func (l *Limiter) NeedsRoute(snap *snapshot.Compiled, endpoint string) bool {
	for _, p := range l.policies(snap, endpoint) {
		if p.Spec.GetServer() != "" || p.Spec.GetTool() != "" {
			return true
		}
	}
	return false
}

// Check counts call against the policies of its endpoint in snap.
func (l *Limiter) Check(ctx context.Context, snap *snapshot.Compiled, call *Call) Decision {
	if snap == nil {
		return Decision{}
	}
	all := l.policies(snap, call.Endpoint)
	if len(all) == 0 {
		return Decision{}
	}
	var pbuf [4]*Policy
	var bbuf [4]gcra.Bucket
	var rbuf [4]gcra.Result
	pols, buckets := pbuf[:0], bbuf[:0]
	for _, p := range all {
		if !applies(p, call) {
			continue
		}
		b := p.bucket
		b.Key = gcra.Key(l.opts.Prefix, call.Endpoint, p.Name, gcra.Subject(p.Spec.GetKey(), call.Principal, call.KeyID, call.ClientIP))
		pols, buckets = append(pols, p), append(buckets, b)
	}
	if len(pols) == 0 {
		return Decision{}
	}
	l.stats.checks.Add(1)
	res := rbuf[:0]
	for range buckets {
		res = append(res, gcra.Result{})
	}
	if !l.remote {
		admitted, _ := l.shared.Allow(ctx, buckets, res)
		return l.decide(call, pols, res, admitted)
	}
	if probe, ask := l.breaker.ask(); ask {
		cctx, cancel := context.WithTimeout(ctx, l.opts.Timeout)
		admitted, err := l.shared.Allow(cctx, buckets, res)
		cancel()
		if err == nil {
			l.breaker.ok(probe)
			return l.decide(call, pols, res, admitted)
		}
		if ctx.Err() == nil {
			// Redis failed, not the caller who went away.
			l.stats.failures.Add(1)
			l.breaker.fail(probe, err)
		} else {
			l.breaker.abandon(probe)
		}
	}
	return l.fallback(ctx, call, pols, buckets, res)
}

// decide turns bucket results into a Decision.
func (l *Limiter) decide(call *Call, pols []*Policy, res []gcra.Result, admitted bool) Decision {
	var d Decision
	for i, p := range pols {
		if res[i].Allowed {
			continue
		}
		if p.Spec.GetShadow() {
			d.Shadow = append(d.Shadow, p.Name)
			continue
		}
		if !admitted && (d.Policy == nil || res[i].RetryAfter > d.RetryAfter) {
			d.Policy, d.RetryAfter = p, res[i].RetryAfter
		}
	}
	d.Refused = !admitted
	if d.Refused && d.Policy == nil {
		// Not expected: a refusal names the bucket that refused.
		d.Policy = pols[0]
	}
	if d.Refused {
		l.stats.refused.Add(1)
	}
	if len(d.Shadow) > 0 {
		l.stats.shadowRefused.Add(1)
		if l.shadowLog.ok() {
			l.log.Info("a shadow rate-limit policy would have refused a call (it refuses nothing: shadow mode)",
				"policies", d.Shadow, "endpoint", call.Endpoint, "principal", call.Principal, "method", call.Method, "tool", call.Tool)
		}
	}
	return d
}

// fallback decides while Redis is away: closed policies refuse, local
// policies count in this process at their share of the rate, open ones
// admit.
func (l *Limiter) fallback(ctx context.Context, call *Call, pols []*Policy, buckets []gcra.Bucket, res []gcra.Result) Decision {
	for _, p := range pols {
		if p.Spec.GetOnRedisFailure() == metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_CLOSED && !p.Spec.GetShadow() {
			l.stats.unavailable.Add(1)
			return Decision{Refused: true, Unavailable: true, Policy: p, RetryAfter: l.breaker.retryIn()}
		}
	}
	n := int(l.replicas.Load())
	// The local buckets reuse buckets' and res's arrays: the i-th is
	// read before anything is written at i or beyond.
	var pbuf [4]*Policy
	lp, lb, lr := pbuf[:0], buckets[:0], res[:0]
	for i, p := range pols {
		if p.Spec.GetOnRedisFailure() != metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_LOCAL {
			continue
		}
		b := buckets[i]
		b.Limit = share(p.Limit, n)
		lp, lb, lr = append(lp, p), append(lb, b), append(lr, gcra.Result{})
	}
	if len(lp) == 0 {
		return Decision{}
	}
	l.stats.local.Add(1)
	admitted, _ := l.local.Allow(ctx, lb, lr)
	return l.decide(call, lp, lr, admitted)
}

// share is one replica's part of limit among n: the same burst and rate
// spread over n replicas (the period n times as long; the burst divided,
// at least 1).
func share(l gcra.Limit, n int) gcra.Limit {
	if n <= 1 {
		return l
	}
	return gcra.Limit{Rate: l.Rate, Burst: max(l.Burst/n, 1), Period: l.Period * time.Duration(n)}
}

// State describes the limiter for /readyz.
func (l *Limiter) State() string {
	if !l.remote {
		return "in-process (no Redis): counts per data plane"
	}
	live := strconv.Itoa(l.LiveDataPlanes()) + " data planes live"
	if since, open := l.breaker.openSince(); open {
		return "redis unavailable for " + time.Since(since).Round(time.Second).String() + ": policies follow their failure mode (open, closed, or local at 1/" + strconv.Itoa(l.LiveDataPlanes()) + " of the rate here); " + live
	}
	return "redis ok; " + live
}

// Healthy reports whether the shared store answers (always, in process).
func (l *Limiter) Healthy() bool {
	_, open := l.breaker.openSince()
	return !l.remote || !open
}

// Stats are counters since the limiter started.
type Stats struct {
	Checks, Refused, ShadowRefused, Unavailable, Local, Failures int64
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() Stats {
	return Stats{
		Checks: l.stats.checks.Load(), Refused: l.stats.refused.Load(), ShadowRefused: l.stats.shadowRefused.Load(),
		Unavailable: l.stats.unavailable.Load(), Local: l.stats.local.Load(), Failures: l.stats.failures.Load(),
	}
}

// breaker keeps calls off a Redis that failed: after a failure, calls use
// the failure modes without asking Redis for a pause (MinBackoff, doubling
// up to MaxBackoff while probes fail); then one call probes Redis while the
// others keep to the failure modes; a probe that succeeds closes the breaker.
type breaker struct {
	open     atomic.Bool
	min, max time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	since   time.Time // when it opened
	retryAt time.Time
	backoff time.Duration
	probing bool
}

// ask reports whether to ask Redis now, and whether this call is the probe.
func (b *breaker) ask() (probe, ask bool) {
	if !b.open.Load() {
		return false, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return false, true
	}
	if b.probing || time.Now().Before(b.retryAt) {
		return false, false
	}
	b.probing = true
	return true, true
}

func (b *breaker) ok(probe bool) {
	if !b.open.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe || b.open.Load() {
		b.log.Info("Redis answers again: rate limits are counted there again", "after", time.Since(b.since).Round(time.Millisecond))
		b.open.Store(false)
		b.probing = false
		b.backoff = 0
	}
}

func (b *breaker) fail(probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	switch {
	case !b.open.Load():
		b.open.Store(true)
		b.since = now
		b.backoff = b.min
		b.log.Warn("Redis failed: rate-limit policies follow their failure mode (open, closed or local) until it answers again", "err", err, "retry_in", b.backoff)
	case probe:
		b.backoff = min(2*b.backoff, b.max)
		b.probing = false
	default:
		return // a call that was in flight when Redis failed
	}
	b.retryAt = now.Add(b.backoff)
}

// abandon ends a probe whose caller went away before Redis answered.
func (b *breaker) abandon(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// retryIn is how long until the breaker lets a call probe Redis (at least a second).
func (b *breaker) retryIn() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(time.Until(b.retryAt), time.Second)
}

func (b *breaker) openSince() (time.Time, bool) {
	if !b.open.Load() {
		return time.Time{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.since, b.open.Load()
}

// logEvery lets one log line through per second.
type logEvery struct{ next atomic.Int64 }

func (e *logEvery) ok() bool {
	now := time.Now().UnixNano()
	n := e.next.Load()
	return now >= n && e.next.CompareAndSwap(n, now+int64(time.Second))
}
