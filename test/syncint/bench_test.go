package syncint

import (
	"fmt"
	"slices"
	"testing"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// BenchmarkPropagation measures how long a committed change takes to be
// applied (and so ACKed) by every data plane: from the admin call that
// commits it to the last data plane swapping it in. The control plane runs on
// Postgres; data planes are sync clients in this process, each with its own
// gRPC stream. Reports p50 and p99 over b.N changes.
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			st, _ := openPostgres(b)
			c := startCP(b, st, newSealer(b), "127.0.0.1:0")
			tok := syncToken(b, c, "dps")
			createServer(b, c, "fs", "npx")
			dps := make([]*dp, n)
			for i := range dps {
				// The default status period, as in production.
				dps[i] = startDPWith(b, c.addr, tok, fmt.Sprintf("dp-%d", i), "", 5*time.Second)
			}
			waitRevision(b, revisionOf(b, c), dps...)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				changed := make([]<-chan struct{}, n)
				for j, d := range dps {
					changed[j] = d.cache.Changed()
				}
				start := time.Now()
				srv := &metamcpv1.Server{Name: "fs", Description: fmt.Sprintf("change %d", i),
					Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "npx",
						Env: map[string]*metamcpv1.Value{"TOKEN": {Secret: true}}}}}
				res, err := c.admin.UpdateServer(adminCtx(b), &metamcpv1.UpdateServerRequest{Server: srv})
				if err != nil {
					b.Fatal(err)
				}
				for j, ch := range changed {
					for {
						select {
						case <-ch:
						case <-time.After(30 * time.Second):
							b.Fatalf("data plane %d never applied revision %d", j, res.GetRevision())
						}
						if got, _ := dps[j].cache.Revision(); got >= res.GetRevision() {
							break
						}
						ch = dps[j].cache.Changed()
						if got, _ := dps[j].cache.Revision(); got >= res.GetRevision() {
							break
						}
					}
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
			}
		})
	}
}
