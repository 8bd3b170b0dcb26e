package gcra

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testClient(t testing.TB, url string) *Redis {
	t.Helper()
	rdb, err := NewRedisClient(url, "gcra-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s: %v (run scripts/ensure-services.sh)", "127.0.0.1:6379", err)
	}
	return NewRedis(rdb)
}

// TestCoalescedChecksCountOnce: checks made at once by many callers ride
// the autopipeliner, and each is counted exactly once: of 1280 calls on a
// bucket with a burst of 300 (and one call an hour after), exactly 300 are
// admitted and the bucket is empty after, although 480 of them were first
// refused by another bucket of their call (which must count them nowhere).
func TestCoalescedChecksCountOnce(t *testing.T) {
	s := testClient(t, "redis://127.0.0.1:6379/0")
	ctx := context.Background()
	prefix := "gcratest-coalesce-" + time.Now().Format("150405.000000") + "/"
	shared := NewBucket(Limit{Rate: 1, Burst: 300, Period: time.Hour}, false)
	shared.Key = Key(prefix, "ep", "shared", SubjectGlobal)
	t.Cleanup(func() { _ = s.Reset(ctx, shared.Key) })

	const callers, calls = 32, 20
	var admitted, refusedByOwn atomic.Int64
	// Each phase: callers at once, calls each.
	phase := func(withOwn bool) {
		var wg sync.WaitGroup
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buckets := []Bucket{shared}
				if withOwn {
					own := NewBucket(Limit{Rate: 1, Burst: 5, Period: time.Hour}, false)
					own.Key = Key(prefix, "ep", "own", SubjectPrincipal+strconv.Itoa(c))
					defer func() { _ = s.Reset(ctx, own.Key) }()
					buckets = append(buckets, own)
				}
				res := make([]Result, len(buckets))
				for range calls {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					ok, err := s.Allow(cctx, buckets, res)
					cancel()
					if err != nil {
						t.Error(err)
						return
					}
					switch {
					case ok:
						admitted.Add(1)
					case withOwn && res[0].Allowed && !res[1].Allowed:
						refusedByOwn.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	// First each caller's own bucket (a burst of 5) refuses 15 of its 20
	// calls while the shared one has room: those must not take from it.
	phase(true)
	if n := refusedByOwn.Load(); n != callers*(calls-5) {
		t.Fatalf("%d calls refused by the callers' own buckets, want %d", n, callers*(calls-5))
	}
	// Then the shared bucket alone, until it is empty.
	phase(false)
	if s.coalesced.Load() == 0 {
		t.Fatal("no check rode the autopipeliner with 64 callers at once")
	}
	if n := admitted.Load(); n != 300 {
		t.Fatalf("%d calls admitted by a burst of 300 (%d coalesced)", n, s.coalesced.Load())
	}
	r, err := s.Peek(ctx, shared.Key, shared.Limit)
	if err != nil {
		t.Fatal(err)
	}
	if r.Allowed || r.Remaining != 0 {
		t.Fatalf("shared bucket after 300 admitted calls: %+v, want empty", r)
	}
	t.Logf("%d of %d checks coalesced", s.coalesced.Load(), 2*callers*calls)
}
