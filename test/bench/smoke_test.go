package bench

import (
	"context"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
)

// TestSmoke runs every measurement of the benchmarks for a few calls (about
// 50 per mode through the gateway), so that CI proves the harness works: the
// data plane process syncs its config, proxied calls reach the upstream in
// both modes, /proc is readable, the in-process gateway serves. It asserts
// nothing about speed.
func TestSmoke(t *testing.T) {
	e := newEnv(t)
	inProcess := startInProcessGateway(t, e.upstreamURL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			lat, err := measureLatency(ctx, e.direct(), e.proxied(), m, 10)
			if err != nil {
				t.Fatalf("latency: %v\ndata plane log tail:\n%s", err, testharness.Tail(e.dp.logs.String(), 20))
			}
			if lat.directP50 <= 0 || lat.proxiedP50 <= 0 || lat.proxiedP99 < lat.proxiedP50 {
				t.Errorf("latency percentiles make no sense: %+v", lat)
			}
			if d, p, err := measureThroughput(ctx, e.direct(), e.proxied(), m, 2, 10); err != nil || d <= 0 || p <= 0 {
				t.Errorf("throughput: direct %v, proxied %v calls/s, %v", d, p, err)
			}
			cpu, err := measureCPU(ctx, e.proxied(), m, 2, 10, e.dp.pid, e.upstreamPID, nil)
			if err != nil || cpu.dataPlane < 0 || cpu.upstream < 0 {
				t.Errorf("CPU per call: %+v, %v", cpu, err)
			}
			allocs, err := measureAllocs(ctx, e.direct(), inProcess, m, 10)
			if err != nil {
				t.Errorf("allocations per call: %v", err)
			}
			t.Logf("%s: latency %+v; CPU per call %+v; allocations per call %+v (a few calls: not figures)", m, lat, cpu, allocs)
		})
	}
}
