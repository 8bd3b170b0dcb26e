package gcra

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkAllow: one bucket counted in Redis on loopback (127.0.0.1:6379)
// by the Redis store, by 1 client calling after the other and by 32 at once;
// and, as the floor no client library can go under, the same EVALSHA written
// and its reply read on a bare TCP connection by one client (no deadlines,
// no pool, no parsing beyond the line ends). cpu-ns/op is this process's CPU
// per check (Redis's own is not in it).
func BenchmarkAllow(b *testing.B) {
	limit := Limit{Rate: 1e9, Burst: 1e9, Period: time.Hour}
	for _, clients := range []int{1, 32} {
		b.Run("store/clients="+strconv.Itoa(clients), func(b *testing.B) {
			s := testClient(b, "redis://127.0.0.1:6379/0")
			bk := NewBucket(limit, false)
			bk.Key = Key("gcra-bench/", "ep", "p", SubjectGlobal)
			ctx := context.Background()
			check := func(res []Result) {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err := s.Allow(cctx, []Bucket{bk}, res)
				cancel()
				if err != nil {
					b.Error(err)
				}
			}
			check(make([]Result, 1)) // loads the script
			b.ReportAllocs()
			cpu0 := cpuTime()
			if clients == 1 {
				res := make([]Result, 1)
				for b.Loop() {
					check(res)
				}
			} else {
				b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					res := make([]Result, 1)
					for pb.Next() {
						check(res)
					}
				})
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
	b.Run("bare-socket/clients=1", func(b *testing.B) {
		s := testClient(b, "redis://127.0.0.1:6379/0")
		if err := allowAll.Load(context.Background(), s.rdb).Err(); err != nil {
			b.Fatal(err)
		}
		c, err := net.Dial("tcp", "127.0.0.1:6379")
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		args := []string{"EVALSHA", allowAll.Hash(), "1", Key("gcra-bench/", "ep", "bare", SubjectGlobal), "1000000000", "1000000000", "3600", "0", "1"}
		msg := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
		for _, a := range args {
			msg = append(msg, "$"+strconv.Itoa(len(a))+"\r\n"+a+"\r\n"...)
		}
		r := bufio.NewReader(c)
		cpu0 := cpuTime()
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			// The reply: *5, then :admitted, :allowed, :remaining, :retry, :reset.
			for range 6 {
				line, err := r.ReadSlice('\n')
				if err != nil || line[0] == '-' {
					b.Fatalf("%q %v", line, err)
				}
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	})
}
