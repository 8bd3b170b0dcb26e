package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 400},
		{1 * mib, 400},
		{16 * mib, 400},
		{20 * mib, 320},
		{32 * mib, 200},
		{33 * mib, 190}, // 193.9, in steps of 10
		{64 * mib, 100},
		{1 << 30, 100},
	} {
		if got := Percent(c.live, DefaultHeadroom); got != c.want {
			t.Errorf("Percent(%d MiB) = %d, want %d", c.live/mib, got, c.want)
		}
	}
}

func noGOGC(string) (string, bool) { return "", false }

func TestStartLeavesAnOperatorsGOGC(t *testing.T) {
	if tu := Start(DefaultHeadroom, func(k string) (string, bool) { return "150", k == "GOGC" }); tu != nil {
		tu.Stop()
		t.Fatal("Start tuned with GOGC set")
	}
	if tu := Start(0, noGOGC); tu != nil {
		tu.Stop()
		t.Fatal("Start tuned with no headroom")
	}
	var nilTuner *Tuner
	nilTuner.Stop() // does nothing
}

// gcPercent reads the GC percent in force.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestTunesAfterCollections holds a live heap of 32 MiB, then drops it: the
// percent follows after the next collections, and Stop restores Go's.
func TestTunesAfterCollections(t *testing.T) {
	before := gcPercent()
	tu := Start(DefaultHeadroom, noGOGC)
	if tu == nil {
		t.Fatal("Start did not tune")
	}
	waitPercent := func(want func(int) bool, what string) {
		t.Helper()
		for range 200 {
			runtime.GC()
			if p := tu.Percent(); want(p) && gcPercent() == p {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("percent %d (in force %d), want %s", tu.Percent(), gcPercent(), what)
	}
	hold := make([][]byte, 32)
	for i := range hold {
		hold[i] = make([]byte, 1<<20)
	}
	// 32 MiB held, plus the test binary's own few MiB: 170 to 200.
	waitPercent(func(p int) bool { return p >= 150 && p <= 200 }, "150-200 with 32 MiB live")
	runtime.KeepAlive(hold)
	waitPercent(func(p int) bool { return p == 400 }, "400 once the heap is small again")
	tu.Stop()
	if got := gcPercent(); got != before {
		t.Fatalf("after Stop the percent is %d, want %d", got, before)
	}
	runtime.GC() // a cleanup after Stop changes nothing
	time.Sleep(20 * time.Millisecond)
	if got := gcPercent(); got != before {
		t.Fatalf("a collection after Stop set the percent to %d, want %d", got, before)
	}
}
