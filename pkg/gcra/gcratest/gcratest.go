// Package gcratest is the conformance suite every gcra.Store passes: the
// Redis store and the in-process one count alike.
package gcratest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/metamcp/metamcp/pkg/gcra"
)

// Run runs the suite against the stores newStore returns (a fresh, empty
// one per test, or one whose keys no other test uses).
func Run(t *testing.T, newStore func(t *testing.T) gcra.Store) {
	t.Run("BurstThenRefuse", func(t *testing.T) { testBurstThenRefuse(t, newStore(t)) })
	t.Run("RefusalCountsNowhere", func(t *testing.T) { testRefusalCountsNowhere(t, newStore(t)) })
	t.Run("Shadow", func(t *testing.T) { testShadow(t, newStore(t)) })
	t.Run("Reset", func(t *testing.T) { testReset(t, newStore(t)) })
	t.Run("PeekCountsNothing", func(t *testing.T) { testPeek(t, newStore(t)) })
	t.Run("KeysApart", func(t *testing.T) { testKeysApart(t, newStore(t)) })
	t.Run("Refill", func(t *testing.T) { testRefill(t, newStore(t)) })
	t.Run("Rate", func(t *testing.T) { testRate(t, newStore(t)) })
}

// key returns a bucket key no other test uses.
func key(t *testing.T, name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return gcra.Key("gcratest-"+hex.EncodeToString(b[:])+"/", "ep", name, gcra.SubjectGlobal)
}

func bucket(t *testing.T, name string, l gcra.Limit, shadow bool) gcra.Bucket {
	b := gcra.NewBucket(l, shadow)
	b.Key = key(t, name)
	return b
}

func allow(t *testing.T, s gcra.Store, buckets ...gcra.Bucket) (bool, []gcra.Result) {
	t.Helper()
	res := make([]gcra.Result, len(buckets))
	ok, err := s.Allow(context.Background(), buckets, res)
	if err != nil {
		t.Fatalf("Allow: %v", err)
	}
	return ok, res
}

func peek(t *testing.T, s gcra.Store, b gcra.Bucket) gcra.Result {
	t.Helper()
	r, err := s.Peek(context.Background(), b.Key, b.Limit)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	return r
}

var perHour3 = gcra.Limit{Rate: 1, Burst: 3, Period: time.Hour}

func testBurstThenRefuse(t *testing.T, s gcra.Store) {
	b := bucket(t, "burst", perHour3, false)
	for i, want := range []int{2, 1, 0} {
		ok, res := allow(t, s, b)
		if !ok || !res[0].Allowed || res[0].Remaining != want {
			t.Fatalf("call %d: admitted %v, %+v; want admitted with %d remaining", i+1, ok, res[0], want)
		}
		if res[0].RetryAfter != 0 {
			t.Fatalf("call %d: RetryAfter %s on an admitted call", i+1, res[0].RetryAfter)
		}
	}
	ok, res := allow(t, s, b)
	if ok || res[0].Allowed || res[0].Remaining != 0 {
		t.Fatalf("call 4: admitted %v, %+v; want refused", ok, res[0])
	}
	// One call per hour: the next is due in about an hour.
	if d := res[0].RetryAfter; d < 59*time.Minute || d > time.Hour {
		t.Fatalf("RetryAfter %s, want about 1h", d)
	}
	if d := res[0].ResetAfter; d < 179*time.Minute || d > 3*time.Hour {
		t.Fatalf("ResetAfter %s, want about 3h (the whole burst)", d)
	}
}

func testRefusalCountsNowhere(t *testing.T, s gcra.Store) {
	wide := bucket(t, "wide", gcra.Limit{Rate: 1, Burst: 5, Period: time.Hour}, false)
	narrow := bucket(t, "narrow", gcra.Limit{Rate: 1, Burst: 1, Period: time.Hour}, false)
	if ok, _ := allow(t, s, wide, narrow); !ok {
		t.Fatal("first call refused")
	}
	for i := range 3 {
		ok, res := allow(t, s, wide, narrow)
		if ok || !res[0].Allowed || res[1].Allowed {
			t.Fatalf("call %d: admitted %v, %+v; want refused by the narrow bucket only", i+2, ok, res)
		}
	}
	// The refusals were not counted in the wide bucket: 4 of its 5 left.
	if r := peek(t, s, wide); r.Remaining != 4 {
		t.Fatalf("wide bucket has %d remaining after one admitted call, want 4", r.Remaining)
	}
}

func testShadow(t *testing.T, s gcra.Store) {
	enforced := bucket(t, "enforced", gcra.Limit{Rate: 1, Burst: 5, Period: time.Hour}, false)
	shadow := bucket(t, "shadow", gcra.Limit{Rate: 1, Burst: 1, Period: time.Hour}, true)
	for i := range 3 {
		ok, res := allow(t, s, enforced, shadow)
		if !ok {
			t.Fatalf("call %d refused: a shadow bucket refuses nothing", i+1)
		}
		if res[1].Allowed != (i == 0) {
			t.Fatalf("call %d: shadow bucket allowed %v, want only the first", i+1, res[1].Allowed)
		}
	}
	if r := peek(t, s, enforced); r.Remaining != 2 {
		t.Fatalf("enforced bucket has %d remaining, want 2", r.Remaining)
	}
	// A refused call is counted in no shadow bucket either.
	narrow := bucket(t, "narrow", gcra.Limit{Rate: 1, Burst: 1, Period: time.Hour}, false)
	shadow2 := bucket(t, "shadow2", gcra.Limit{Rate: 1, Burst: 5, Period: time.Hour}, true)
	allow(t, s, narrow, shadow2)
	if ok, _ := allow(t, s, narrow, shadow2); ok {
		t.Fatal("second call admitted by a burst of 1")
	}
	if r := peek(t, s, shadow2); r.Remaining != 4 {
		t.Fatalf("shadow bucket has %d remaining, want 4: a refused call counts in no bucket", r.Remaining)
	}
}

func testReset(t *testing.T, s gcra.Store) {
	b := bucket(t, "reset", perHour3, false)
	for range 4 {
		allow(t, s, b)
	}
	if err := s.Reset(context.Background(), b.Key); err != nil {
		t.Fatal(err)
	}
	ok, res := allow(t, s, b)
	if !ok || res[0].Remaining != 2 {
		t.Fatalf("after Reset: admitted %v with %d remaining, want the whole burst", ok, res[0].Remaining)
	}
}

func testPeek(t *testing.T, s gcra.Store) {
	b := bucket(t, "peek", perHour3, false)
	if r := peek(t, s, b); !r.Allowed || r.Remaining != 3 || r.RetryAfter != 0 || r.ResetAfter != 0 {
		t.Fatalf("empty bucket: %+v, want allowed with 3 remaining", r)
	}
	allow(t, s, b)
	for range 5 {
		if r := peek(t, s, b); r.Remaining != 2 {
			t.Fatalf("after one call: %+v, want 2 remaining", r)
		}
	}
	allow(t, s, b)
	allow(t, s, b)
	r := peek(t, s, b)
	if r.Allowed || r.Remaining != 0 || r.RetryAfter < 59*time.Minute {
		t.Fatalf("empty burst: %+v, want refused for about an hour", r)
	}
}

func testKeysApart(t *testing.T, s gcra.Store) {
	a := bucket(t, "a", gcra.Limit{Rate: 1, Burst: 1, Period: time.Hour}, false)
	b := bucket(t, "b", gcra.Limit{Rate: 1, Burst: 1, Period: time.Hour}, false)
	allow(t, s, a)
	if ok, _ := allow(t, s, b); !ok {
		t.Fatal("a call in one bucket refused a call in another")
	}
}

func testRefill(t *testing.T, s gcra.Store) {
	// 20 a second: one call every 50ms.
	b := bucket(t, "refill", gcra.Limit{Rate: 20, Burst: 1, Period: time.Second}, false)
	allow(t, s, b)
	start := time.Now()
	ok, res := allow(t, s, b)
	if ok {
		t.Fatal("second call admitted at once with a burst of 1")
	}
	if d := res[0].RetryAfter; d <= 0 || d > 50*time.Millisecond {
		t.Fatalf("RetryAfter %s, want within 50ms", d)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if ok, _ := allow(t, s, b); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bucket did not refill within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("admitted again after %s, want about 50ms", d)
	}
}

// testRate: over a stretch of calls made faster than the rate, GCRA admits
// the burst plus one call per emission interval, whatever the calls' timing.
func testRate(t *testing.T, s gcra.Store) {
	const rate, burst = 20, 5
	b := bucket(t, "rate", gcra.Limit{Rate: rate, Burst: burst, Period: time.Second}, false)
	admitted := 0
	start := time.Now()
	last := start
	var elapsed, maxGap time.Duration
	for elapsed < 600*time.Millisecond {
		if ok, _ := allow(t, s, b); ok {
			admitted++
		}
		now := time.Now()
		maxGap = max(maxGap, now.Sub(last))
		last = now
		elapsed = now.Sub(start)
		time.Sleep(time.Millisecond)
	}
	// The stretch is measured here and counted in the store (Redis's
	// clock): one interval of slack at each end, and a slow machine's
	// longest pause between calls may cost the calls it could have made.
	want := burst + int(elapsed.Seconds()*rate)
	short := int(maxGap.Seconds()*rate) + 1
	if admitted > want+1 || admitted < want-1-short {
		t.Fatalf("admitted %d calls in %s (longest pause %s), want %d (+1, -%d)", admitted, elapsed, maxGap, want, 1+short)
	}
}
