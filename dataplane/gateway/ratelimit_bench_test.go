package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/pkg/gcra"
)

// BenchmarkRateLimit measures what rate limits add to a proxied stateless
// tools/call through the gateway's handler (an upstream that answers at
// once): none, then one and three policies counted in Redis on loopback
// (127.0.0.1:6379), and one in process; by one client calling after the
// other, and by 32 at once. cpu-ns/op is this process's CPU per call
// (Redis's own is not in it), p50-µs the median call.
func BenchmarkRateLimit(b *testing.B) {
	big := func(name string, mod func(*metamcpv1.RateLimitPolicy)) *metamcpv1.RateLimitPolicy {
		p := &metamcpv1.RateLimitPolicy{Name: name, Rate: 1e9, Burst: proto.Int64(1e9), Period: durationpb.New(time.Hour)}
		if mod != nil {
			mod(p)
		}
		return p
	}
	one := []*metamcpv1.RateLimitPolicy{big("per-user", nil)}
	three := []*metamcpv1.RateLimitPolicy{big("per-user", nil), big("alpha", func(p *metamcpv1.RateLimitPolicy) { p.Server, p.Tool = "alpha", "alpha__*" }),
		big("everyone", func(p *metamcpv1.RateLimitPolicy) { p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_GLOBAL })}
	redisStore := func(b *testing.B) gcra.Store {
		rdb, err := gcra.NewRedisClient("redis://127.0.0.1:6379/0", "gateway-bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = rdb.Close() })
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			b.Fatalf("Redis at 127.0.0.1:6379: %v", err)
		}
		return gcra.NewRedis(rdb)
	}
	for _, tc := range []struct {
		name     string
		policies []*metamcpv1.RateLimitPolicy
		redis    bool
	}{
		{"none", nil, false},
		{"redis-1-policy", one, true},
		{"redis-3-policies", three, true},
		{"in-process-1-policy", one, false},
	} {
		for _, clients := range []int{1, 32} {
			b.Run(tc.name+"/clients="+strconv.Itoa(clients), func(b *testing.B) {
				cfg := testConfig()
				cfg.RateLimits = tc.policies
				for _, p := range tc.policies {
					cfg.Endpoints[0].RateLimits = append(cfg.Endpoints[0].RateLimits, p.Name)
				}
				h := &configHolder{}
				h.set(b, cfg)
				// A long timeout: on a loaded machine a check that took over
				// the default 100ms would open the breaker, and the figures
				// would be those of calls that skip Redis (checked below).
				lo := ratelimit.Options{Prefix: "gateway-bench-" + tc.name + ":", Timeout: 10 * time.Second}
				if tc.redis {
					lo.Store = redisStore(b)
				}
				limiter := ratelimit.New(lo)
				g := New(Options{Config: h, Pool: fixedPool(fastUpstreams{}), Logger: testLogger(b), DefaultCallTimeout: time.Minute, Limiter: limiter})
				b.Cleanup(g.Close)
				handler := g.Handler()
				body := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
				req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:12008/metamcp/main/mcp", nil)
				for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
					"Authorization": "Bearer " + keyAlice, headerProtocolVersion: "2026-07-28", headerMethod: "tools/call", headerName: "alpha__echo"} {
					req.Header.Set(k, v)
				}
				// client makes calls one after another, each timed into lat
				// while it has room.
				type client struct {
					w   *discardWriter
					rd  *bytes.Reader
					lat []time.Duration
				}
				newClient := func(n int) *client {
					return &client{w: &discardWriter{h: http.Header{}}, rd: bytes.NewReader(body), lat: make([]time.Duration, 0, n)}
				}
				do := func(c *client) {
					t0 := time.Now()
					c.rd.Reset(body)
					r := req.Clone(context.Background())
					r.Body = io.NopCloser(c.rd)
					r.ContentLength = int64(len(body))
					clear(c.w.h)
					c.w.status = 0
					handler.ServeHTTP(c.w, r)
					if c.w.status != 0 && c.w.status != http.StatusOK {
						b.Errorf("status %d", c.w.status)
					}
					if len(c.lat) < cap(c.lat) {
						c.lat = append(c.lat, time.Since(t0))
					}
				}
				do(newClient(0)) // the first call loads the script into Redis
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuTime()
				var lat []time.Duration
				if clients == 1 {
					c := newClient(1 << 16)
					for b.Loop() {
						do(c)
					}
					lat = c.lat
				} else {
					var mu sync.Mutex
					b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) {
						c := newClient(1 << 12)
						for pb.Next() {
							do(c)
						}
						mu.Lock()
						lat = append(lat, c.lat...)
						mu.Unlock()
					})
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
				if st := limiter.Stats(); st.Failures+st.Local+st.Unavailable > 0 {
					b.Fatalf("Redis failed %d times: the figures are not those of checks in Redis", st.Failures)
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1000, "p50-µs")
			})
		}
	}
}
