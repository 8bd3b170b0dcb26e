package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/ratelimit"
	"github.com/metamcp/metamcp/pkg/gcra"
)

// BenchmarkRateLimit measures what rate limits add to a proxied stateless
// tools/call through the gateway's handler (one client, an upstream that
// answers at once): none, then one and three policies counted in Redis on
// loopback (127.0.0.1:6379), and one in process. cpu-ns/op is this
// process's CPU per call (Redis's own is not in it), p50-µs the median call.
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
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig()
			cfg.RateLimits = tc.policies
			for _, p := range tc.policies {
				cfg.Endpoints[0].RateLimits = append(cfg.Endpoints[0].RateLimits, p.Name)
			}
			h := &configHolder{}
			h.set(b, cfg)
			lo := ratelimit.Options{Prefix: "gateway-bench-" + tc.name + ":"}
			if tc.redis {
				lo.Store = redisStore(b)
			}
			g := New(Options{Config: h, Pool: fastUpstreams{}, Logger: testLogger(b), DefaultCallTimeout: time.Minute, Limiter: ratelimit.New(lo)})
			b.Cleanup(g.Close)
			handler := g.Handler()
			body := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
			req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:12008/metamcp/main/mcp", nil)
			for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
				"Authorization": "Bearer " + keyAlice, headerProtocolVersion: "2026-07-28", headerMethod: "tools/call", headerName: "alpha__echo"} {
				req.Header.Set(k, v)
			}
			w := &discardWriter{h: http.Header{}}
			rd := bytes.NewReader(body)
			lat := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for b.Loop() {
				t0 := time.Now()
				rd.Reset(body)
				r := req.Clone(context.Background())
				r.Body = io.NopCloser(rd)
				r.ContentLength = int64(len(body))
				clear(w.h)
				w.status = 0
				handler.ServeHTTP(w, r)
				if w.status != 0 && w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(t0))
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1000, "p50-µs")
		})
	}
}
