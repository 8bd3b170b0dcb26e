package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/testharness"
)

// benchContext bounds one benchmark point.
func benchContext(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkLatency measures the latency a proxied tools/call adds over a
// direct call to the same upstream, at one client: the p50 and p99 of each
// and their differences (added-p99-ms is the difference of the two p99s).
// The data plane is a `metamcp dataplane` process. Target: added p50 <= 0.35 ms.
func BenchmarkLatency(b *testing.B) {
	e := newEnv(b)
	for _, m := range modes {
		b.Run(string(m), func(b *testing.B) {
			r, err := measureLatency(benchContext(b), e.direct(), e.proxied(), m, *callsPerPoint*b.N)
			if err != nil {
				b.Fatalf("%v\ndata plane log tail:\n%s", err, testharness.Tail(e.dp.logs.String(), 20))
			}
			b.ReportMetric(ms(r.directP50), "direct-p50-ms")
			b.ReportMetric(ms(r.proxiedP50), "proxied-p50-ms")
			b.ReportMetric(ms(r.proxiedP50-r.directP50), "added-p50-ms")
			b.ReportMetric(ms(r.directP99), "direct-p99-ms")
			b.ReportMetric(ms(r.proxiedP99), "proxied-p99-ms")
			b.ReportMetric(ms(r.proxiedP99-r.directP99), "added-p99-ms")
		})
	}
}

// BenchmarkThroughput measures calls per second at 1, 8 and 32 concurrent
// clients (each its own session and connection) straight to the upstream and
// through one data plane process, in alternating rounds, and the ratio.
// Target: >= 75% at 32.
func BenchmarkThroughput(b *testing.B) {
	e := newEnv(b)
	for _, m := range modes {
		for _, clients := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/clients=%d", m, clients), func(b *testing.B) {
				direct, proxied, err := measureThroughput(benchContext(b), e.direct(), e.proxied(), m, clients, *callsPerPoint*b.N)
				if err != nil {
					b.Fatalf("%v\ndata plane log tail:\n%s", err, testharness.Tail(e.dp.logs.String(), 20))
				}
				b.ReportMetric(direct, "direct-calls/s")
				b.ReportMetric(proxied, "proxied-calls/s")
				b.ReportMetric(100*proxied/direct, "proxied/direct-%")
			})
		}
	}
}

// BenchmarkCPUPerCall measures the CPU time the data plane process spends
// per proxied call, at 1 and 32 clients; the upstream's, for scale. Target:
// at most 3 times nginx's proxy-us/call (BenchmarkReference) in the same run,
// at 32 clients. dp-us/call is read from the process's CPU clock, to
// the nanosecond; its split into dp-user- and dp-sys-us/call comes from
// utime and stime in /proc, whose resolution is one clock tick (10 ms at
// 100 Hz) over the whole run: dp-ticks says how many.
func BenchmarkCPUPerCall(b *testing.B) {
	e := newEnv(b)
	for _, m := range modes {
		for _, clients := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/clients=%d", m, clients), func(b *testing.B) {
				var ins *callgrindCounter
				if e.dp.callgrindOut != "" {
					ins = &callgrindCounter{pid: e.dp.pid, out: e.dp.callgrindOut}
				}
				r, err := measureCPU(benchContext(b), e.proxied(), m, clients, *cpuCallsPerPoint*b.N, e.dp.pid, e.upstreamPID, ins)
				if err != nil {
					b.Fatalf("%v\ndata plane log tail:\n%s", err, testharness.Tail(e.dp.logs.String(), 20))
				}
				b.ReportMetric(float64(r.dataPlane)/float64(time.Microsecond), "dp-us/call")
				b.ReportMetric(float64(r.dataPlaneUser)/float64(time.Microsecond), "dp-user-us/call")
				b.ReportMetric(float64(r.dataPlaneSys)/float64(time.Microsecond), "dp-sys-us/call")
				b.ReportMetric(float64(r.upstream)/float64(time.Microsecond), "upstream-us/call")
				b.ReportMetric(float64(r.dataPlaneTicks), "dp-ticks")
				if ins != nil {
					b.ReportMetric(r.dataPlaneInstr, "dp-instr/call")
				}
				switch {
				case ins != nil && *dpProfileDir != "":
					// The counts by function, for callgrind_annotate, instead of a
					// CPU profile (valgrind's one thread at a time skews those).
					path := filepath.Join(*dpProfileDir, fmt.Sprintf("callgrind-%s-clients=%d.out", m, clients))
					if err := os.Rename(ins.last, path); err != nil {
						b.Fatal(err)
					}
					b.Logf("data plane callgrind counts: %s", path)
				case *dpProfileDir != "":
					path := filepath.Join(*dpProfileDir, fmt.Sprintf("dataplane-%s-clients=%d.pprof", m, clients))
					if err := profileDataPlane(benchContext(b), e.dp.debugAddr, e.proxied(), m, clients, *dpProfileSeconds, path); err != nil {
						b.Fatal(err)
					}
					b.Logf("data plane CPU profile: %s", path)
				}
			})
		}
	}
}

// BenchmarkAllocsPerCall measures the bytes and objects the data plane
// allocates per proxied call, with its gateway and upstream pool in this
// process (see measureAllocs for how the load generator's share is taken
// out). Target: within 10% of the 5.3 KB of the hand-written HTTP stack
// (README, "Benchmarks").
func BenchmarkAllocsPerCall(b *testing.B) {
	upstreamURL, _ := startUpstream(b)
	inProcess := startInProcessGateway(b, upstreamURL)
	direct := target{url: upstreamURL, tool: directTool}
	for _, m := range modes {
		b.Run(string(m), func(b *testing.B) {
			r, err := measureAllocs(benchContext(b), direct, inProcess, m, *callsPerPoint*b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.bytes, "dp-B/call")
			b.ReportMetric(r.objects, "dp-allocs/call")
		})
	}
}
