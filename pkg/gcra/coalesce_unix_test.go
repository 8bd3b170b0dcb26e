//go:build unix

package gcra

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/metamcp/metamcp/dataplane/redisconn/redistest"
)

// TestCoalescedCheckTimeout: with Redis frozen, checks queued behind one
// that is stuck on the wire each return when their own context ends, not
// when the connection's read timeout (a second) does.
func TestCoalescedCheckTimeout(t *testing.T) {
	rds := redistest.StartPrivate(t)
	s := testClient(t, rds.URL())
	b := NewBucket(Limit{Rate: 1, Burst: 100, Period: time.Hour}, false)
	b.Key = Key("gcratest-frozen/", "ep", "p", SubjectGlobal)
	res := make([]Result, 1)
	if _, err := s.Allow(context.Background(), []Bucket{b}, res); err != nil {
		t.Fatal(err)
	}
	if err := rds.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rds.Signal(syscall.SIGCONT) }()

	const callers = 16
	var wg sync.WaitGroup
	var slow, failed atomic.Int64
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := make([]Result, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := s.Allow(ctx, []Bucket{b}, res)
			if time.Since(start) > 600*time.Millisecond {
				slow.Add(1)
			}
			if err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != callers {
		t.Fatalf("%d of %d checks failed with Redis frozen", failed.Load(), callers)
	}
	if slow.Load() > 0 {
		t.Fatalf("%d checks waited past their 100ms context (by more than 500ms)", slow.Load())
	}
	if s.coalesced.Load() == 0 {
		t.Fatal("no check was queued on the autopipeliner")
	}
}
