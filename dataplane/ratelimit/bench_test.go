package ratelimit

import (
	"context"
	"slices"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// BenchmarkCheck: one call's check with Redis on loopback, one client.
// cpu-ns/op is this process's CPU per check (go-redis and the limiter, not
// Redis), p50-µs the median check.
func BenchmarkCheck(b *testing.B) {
	for _, tc := range []struct {
		name     string
		policies []*metamcpv1.RateLimitPolicy
	}{
		{"one-policy", []*metamcpv1.RateLimitPolicy{policy("a", 1e9, 1e9)}},
		{"three-policies", []*metamcpv1.RateLimitPolicy{policy("a", 1e9, 1e9), policy("b", 1e9, 1e9, func(p *metamcpv1.RateLimitPolicy) { p.Server = "github" }),
			policy("c", 1e9, 1e9, func(p *metamcpv1.RateLimitPolicy) { p.Key = metamcpv1.RateLimitKey_RATE_LIMIT_KEY_GLOBAL })}},
	} {
		b.Run("redis/"+tc.name, func(b *testing.B) {
			store, _ := redisStore(b)
			// A long timeout: on a loaded machine a check over the default
			// 100ms would open the breaker, and the figures would be those
			// of checks that skip Redis (checked below).
			l := New(Options{Store: store, Prefix: prefix(b), Timeout: 10 * time.Second})
			s := snap(b, tc.policies...)
			c := call("github__x", "a")
			ctx := context.Background()
			l.Check(ctx, s, c)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			lat := make([]time.Duration, 0, 1<<16)
			for b.Loop() {
				t0 := time.Now()
				if d := l.Check(ctx, s, c); d.Refused {
					b.Fatal("refused")
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(t0))
				}
			}
			// The data plane's CPU per check (the benchmark's process: go-redis
			// and the limiter, not Redis) and the median round trip.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			if st := l.Stats(); st.Failures > 0 {
				b.Fatalf("Redis failed %d times: the figures are not those of checks in Redis", st.Failures)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		})
		b.Run("in-process/"+tc.name, func(b *testing.B) {
			l := New(Options{Prefix: prefix(b)})
			s := snap(b, tc.policies...)
			c := call("github__x", "a")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				l.Check(ctx, s, c)
			}
		})
	}
}
