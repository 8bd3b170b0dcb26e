package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/gcra"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

const testRedis = "redis://127.0.0.1:6379/0"

// snap builds a compiled snapshot with one endpoint "ep" listing policies.
func snap(t testing.TB, policies ...*metamcpv1.RateLimitPolicy) *snapshot.Compiled {
	t.Helper()
	names := make([]string, len(policies))
	for i, p := range policies {
		names[i] = p.Name
	}
	cfg := &metamcpv1.Config{
		Servers: []*metamcpv1.Server{
			{Name: "notion", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: "http://127.0.0.1:1/mcp"}}},
			{Name: "github", Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: &metamcpv1.HTTPTransport{Url: "http://127.0.0.1:2/mcp"}}},
		},
		Namespaces: []*metamcpv1.Namespace{{Name: "ns", Members: []*metamcpv1.NamespaceMember{{Server: "notion"}, {Server: "github"}}}},
		Endpoints:  []*metamcpv1.Endpoint{{Name: "ep", Namespace: "ns", RateLimits: names}, {Name: "other", Namespace: "ns"}},
		RateLimits: policies,
	}
	c, _, err := snapshot.Compile(&metamcpv1.Snapshot{Revision: 1, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func policy(name string, rate, burst int64, mods ...func(*metamcpv1.RateLimitPolicy)) *metamcpv1.RateLimitPolicy {
	p := &metamcpv1.RateLimitPolicy{Name: name, Rate: rate, Burst: proto.Int64(burst), Period: durationpb.New(time.Hour)}
	for _, m := range mods {
		m(p)
	}
	return p
}

func prefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "rltest-" + hex.EncodeToString(b[:]) + ":"
}

func redisStore(t testing.TB) (gcra.Store, redis.UniversalClient) {
	rdb, err := gcra.NewRedisClient(testRedis, "ratelimit-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s: %v (run scripts/ensure-services.sh)", testRedis, err)
	}
	return gcra.NewRedis(rdb), rdb
}

func call(tool, principal string) *Call {
	server := ""
	if len(tool) > 6 && tool[:6] == "notion" {
		server = "notion"
	} else if tool != "" {
		server = "github"
	}
	return &Call{Endpoint: "ep", Method: "tools/call", Tool: tool, Server: server, Principal: principal, ClientIP: "10.0.0.1"}
}

// both runs a test against the Redis limiter and the in-process one.
func both(t *testing.T, f func(t *testing.T, l *Limiter)) {
	t.Run("redis", func(t *testing.T) {
		store, _ := redisStore(t)
		// A long timeout: a busy machine must not send a check into the
		// failure mode (open) and make the counts wrong.
		f(t, New(Options{Store: store, Prefix: prefix(t), Timeout: 10 * time.Second}))
	})
	t.Run("in-process", func(t *testing.T) {
		f(t, New(Options{Prefix: prefix(t)}))
	})
}

func admitted(t *testing.T, l *Limiter, s *snapshot.Compiled, c *Call, n int) int {
	t.Helper()
	ok := 0
	for range n {
		if d := l.Check(context.Background(), s, c); !d.Refused {
			ok++
		}
	}
	return ok
}

func TestScope(t *testing.T) {
	both(t, func(t *testing.T, l *Limiter) {
		// The seed's scenario: one tool of one server, 1 per period, for one principal.
		pages := policy("pages", 1, 1, func(p *metamcpv1.RateLimitPolicy) { p.Server, p.Tool = "notion", "notion__create_*" })
		s := snap(t, pages)
		if n := admitted(t, l, s, call("notion__create_page", "marketing-bot"), 5); n != 1 {
			t.Fatalf("create_page: %d of 5 admitted, want 1", n)
		}
		if n := admitted(t, l, s, call("notion__search", "marketing-bot"), 5); n != 5 {
			t.Fatalf("another tool of the server: %d of 5 admitted, want 5", n)
		}
		if n := admitted(t, l, s, call("github__create_issue", "marketing-bot"), 5); n != 5 {
			t.Fatalf("another server: %d of 5 admitted, want 5", n)
		}
		if n := admitted(t, l, s, call("notion__create_page", "alice"), 5); n != 1 {
			t.Fatalf("another principal: %d of 5 admitted, want its own 1", n)
		}
		c := call("notion__create_page", "bob")
		c.Endpoint = "other"
		if n := admitted(t, l, s, c, 5); n != 5 {
			t.Fatalf("an endpoint that does not list the policy: %d of 5 admitted", n)
		}
		d := l.Check(context.Background(), s, call("notion__create_page", "marketing-bot"))
		if !d.Refused || d.Unavailable || d.Policy.Name != "pages" || d.RetryAfter < 59*time.Minute {
			t.Fatalf("decision %+v", d)
		}
	})
}

func TestMethods(t *testing.T) {
	both(t, func(t *testing.T, l *Limiter) {
		s := snap(t, policy("calls", 1, 2), policy("all", 1, 4, func(p *metamcpv1.RateLimitPolicy) { p.EveryRequest = true }))
		list := &Call{Endpoint: "ep", Method: "tools/list", Principal: "a"}
		if n := admitted(t, l, s, list, 6); n != 4 {
			t.Fatalf("tools/list: %d of 6 admitted, want 4 (only the every_request policy counts it)", n)
		}
		if !l.Applies(s, "ep", "tools/list") {
			t.Fatal("Applies(tools/list) false with an every_request policy")
		}
		s2 := snap(t, policy("calls", 1, 2))
		if l.Applies(s2, "ep", "tools/list") || !l.Applies(s2, "ep", "tools/call") || l.Applies(s2, "other", "tools/call") {
			t.Fatal("Applies wrong")
		}
	})
}

func TestKeys(t *testing.T) {
	both(t, func(t *testing.T, l *Limiter) {
		s := snap(t,
			policy("ip", 1, 2, func(p *metamcpv1.RateLimitPolicy) { p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_CLIENT_IP }),
		)
		a, b := call("x", "a"), call("x", "b")
		if n := admitted(t, l, s, a, 2) + admitted(t, l, s, b, 2); n != 2 {
			t.Fatalf("one address, two principals: %d admitted, want 2", n)
		}
		b.ClientIP = "10.0.0.2"
		if n := admitted(t, l, s, b, 3); n != 2 {
			t.Fatalf("another address: %d admitted, want 2", n)
		}
		g := snap(t, policy("global", 1, 3, func(p *metamcpv1.RateLimitPolicy) { p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_GLOBAL }))
		if n := admitted(t, l, g, call("x", "a"), 2) + admitted(t, l, g, call("x", "b"), 2); n != 3 {
			t.Fatalf("global: %d admitted, want 3", n)
		}
		k := snap(t, policy("key", 1, 1, func(p *metamcpv1.RateLimitPolicy) { p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_API_KEY }))
		k1, k2 := call("x", "a"), call("x", "a")
		k1.KeyID, k2.KeyID = "laptop", "ci"
		if n := admitted(t, l, k, k1, 2) + admitted(t, l, k, k2, 2); n != 2 {
			t.Fatalf("two keys of one principal: %d admitted, want 1 each", n)
		}
	})
}

func TestRefusalCountsNowhere(t *testing.T) {
	both(t, func(t *testing.T, l *Limiter) {
		s := snap(t, policy("wide", 1, 5), policy("narrow", 1, 1, func(p *metamcpv1.RateLimitPolicy) { p.Tool = "github__*" }))
		admitted(t, l, s, call("github__x", "a"), 4)
		// Three refusals by narrow did not count in wide: 4 left there.
		if n := admitted(t, l, s, call("notion__x", "a"), 10); n != 4 {
			t.Fatalf("wide: %d admitted after refusals by narrow, want 4", n)
		}
	})
}

func TestShadow(t *testing.T) {
	both(t, func(t *testing.T, l *Limiter) {
		s := snap(t, policy("try", 1, 2, func(p *metamcpv1.RateLimitPolicy) { p.Shadow = true }))
		var shadow int
		for range 5 {
			d := l.Check(context.Background(), s, call("x", "a"))
			if d.Refused {
				t.Fatal("a shadow policy refused a call")
			}
			if len(d.Shadow) == 1 && d.Shadow[0] == "try" {
				shadow++
			}
		}
		if shadow != 3 {
			t.Fatalf("%d would-be refusals recorded, want 3", shadow)
		}
		if st := l.Stats(); st.ShadowRefused != 3 || st.Refused != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// failing is a store whose Redis is away.
type failing struct {
	calls atomic.Int64
	block bool
}

func (f *failing) Allow(ctx context.Context, _ []gcra.Bucket, _ []gcra.Result) (bool, error) {
	f.calls.Add(1)
	if f.block {
		<-ctx.Done()
		return false, ctx.Err()
	}
	return false, errors.New("dial tcp 127.0.0.1:1: connection refused")
}
func (f *failing) Peek(context.Context, string, gcra.Limit) (gcra.Result, error) {
	return gcra.Result{}, errors.New("down")
}
func (f *failing) Reset(context.Context, ...string) error { return errors.New("down") }

func TestFailModes(t *testing.T) {
	mode := func(m metamcpv1.RateLimitFailureMode) func(*metamcpv1.RateLimitPolicy) {
		return func(p *metamcpv1.RateLimitPolicy) { p.OnRedisFailure = m }
	}
	store := &failing{}
	l := New(Options{Store: store, Prefix: prefix(t), MinBackoff: time.Hour})
	open := snap(t, policy("open", 1, 1, mode(metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_OPEN)))
	if n := admitted(t, l, open, call("x", "a"), 5); n != 5 {
		t.Fatalf("open: %d of 5 admitted", n)
	}
	if !l.breaker.open.Load() || store.calls.Load() != 1 {
		t.Fatalf("breaker open %v after %d store calls, want open after the first", l.breaker.open.Load(), store.calls.Load())
	}
	closed := snap(t, policy("closed", 100, 100, mode(metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_CLOSED)))
	d := l.Check(context.Background(), closed, call("x", "a"))
	if !d.Refused || !d.Unavailable || d.Policy.Name != "closed" || d.RetryAfter < time.Second {
		t.Fatalf("closed: %+v", d)
	}
	local := snap(t, policy("local", 1, 6, mode(metamcpv1.RateLimitFailureMode_RATE_LIMIT_FAILURE_MODE_LOCAL)))
	l.SetLiveDataPlanes(3)
	if n := admitted(t, l, local, call("x", "a"), 10); n != 2 {
		t.Fatalf("local with 3 data planes: %d admitted, want a third of the burst of 6", n)
	}
	if store.calls.Load() != 1 {
		t.Fatalf("%d store calls while the breaker is open, want none after the first", store.calls.Load())
	}
	if l.Healthy() || l.State() == "redis ok" {
		t.Fatalf("state %q while Redis is away", l.State())
	}
}

// TestTimeout: a Redis that does not answer holds a call no longer than the
// limiter's timeout.
func TestTimeout(t *testing.T) {
	store := &failing{block: true}
	l := New(Options{Store: store, Prefix: prefix(t), Timeout: 50 * time.Millisecond})
	s := snap(t, policy("p", 1, 1))
	start := time.Now()
	d := l.Check(context.Background(), s, call("x", "a"))
	if el := time.Since(start); el > time.Second || d.Refused {
		t.Fatalf("waited %s, decision %+v", el, d)
	}
	if !l.breaker.open.Load() {
		t.Fatal("breaker not open after a timeout")
	}
}

// TestBreakerProbes: after the backoff one call probes Redis; a working
// Redis closes the breaker and counting resumes there.
func TestBreakerProbes(t *testing.T) {
	store, _ := redisStore(t)
	sw := &switchable{real: store}
	sw.down.Store(true)
	l := New(Options{Store: sw, Prefix: prefix(t), MinBackoff: 20 * time.Millisecond, Timeout: 10 * time.Second})
	s := snap(t, policy("p", 1, 2))
	l.Check(context.Background(), s, call("x", "a"))
	if !l.breaker.open.Load() {
		t.Fatal("breaker closed after a failure")
	}
	sw.down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for l.breaker.open.Load() {
		if time.Now().After(deadline) {
			t.Fatal("breaker still open 5s after Redis came back")
		}
		l.Check(context.Background(), s, call("y", "b"))
		time.Sleep(5 * time.Millisecond)
	}
	if n := admitted(t, l, s, call("x", "a"), 3); n != 2 {
		t.Fatalf("%d admitted after Redis came back, want the burst of 2 (counted in Redis)", n)
	}
}

type switchable struct {
	real gcra.Store
	down atomic.Bool
}

func (s *switchable) Allow(ctx context.Context, b []gcra.Bucket, r []gcra.Result) (bool, error) {
	if s.down.Load() {
		return false, errors.New("connection refused")
	}
	return s.real.Allow(ctx, b, r)
}
func (s *switchable) Peek(ctx context.Context, k string, l gcra.Limit) (gcra.Result, error) {
	return s.real.Peek(ctx, k, l)
}
func (s *switchable) Reset(ctx context.Context, k ...string) error { return s.real.Reset(ctx, k...) }

// TestOneRoundTrip: three policies on one call take one Redis command.
func TestOneRoundTrip(t *testing.T) {
	store, rdb := redisStore(t)
	var cmds atomic.Int64
	rdb.AddHook(countHook{&cmds})
	l := New(Options{Store: store, Prefix: prefix(t), Timeout: 10 * time.Second})
	s := snap(t, policy("a", 10, 10), policy("b", 10, 10, func(p *metamcpv1.RateLimitPolicy) { p.Server = "github" }),
		policy("c", 10, 10, func(p *metamcpv1.RateLimitPolicy) { p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_GLOBAL }))
	l.Check(context.Background(), s, call("github__x", "a")) // loads the script (NOSCRIPT, then EVAL)
	cmds.Store(0)
	for range 5 {
		if d := l.Check(context.Background(), s, call("github__x", "a")); d.Refused {
			t.Fatalf("refused: %+v", d)
		}
	}
	if n := cmds.Load(); n != 5 {
		t.Fatalf("%d Redis commands for 5 calls with 3 policies each, want 5", n)
	}
}

type countHook struct{ n *atomic.Int64 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestShare(t *testing.T) {
	l := gcra.Limit{Rate: 60, Burst: 10, Period: time.Minute}
	if s := share(l, 3); s.Rate != 60 || s.Burst != 3 || s.Period != 3*time.Minute {
		t.Fatalf("share %+v", s)
	}
	if s := share(gcra.Limit{Rate: 1, Burst: 1, Period: time.Minute}, 3); s.Burst != 1 {
		t.Fatalf("share keeps a burst of at least 1: %+v", s)
	}
}
