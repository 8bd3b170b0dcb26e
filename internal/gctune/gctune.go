// Package gctune raises the garbage collector's heap goal while a
// process's live heap is small, so that a busy proxy with a few megabytes
// of live data collects less often.
//
// Go's default (GOGC=100) sets the next collection at twice the live heap.
// The data plane lives on a small heap (its config, sessions and buffers:
// about 8 MiB in the benchmark) and allocates about 6 KB per proxied call,
// so at 3,000 calls per second it collects two or three times a second,
// and each collection scans every goroutine's stack (with the Tuner: about
// once in two seconds, the heap goal at 39 MB for 8 MB live). Measured in
// test/bench at 32 clients, GOGC=400 cut the data plane's user-space
// instructions per call by about 10% and its CPU time per call by 4-10%,
// for about 26 MB more resident memory.
//
// A fixed GOGC=400 would also multiply a large live heap by five. Instead,
// after each collection the Tuner sets the percent that leaves a fixed
// headroom above the live heap, between 100 and 400:
//
//	percent = clamp(100 * headroom / live, 100, 400)
//
// With the default 64 MiB of headroom, a live heap up to 16 MiB gets 400,
// one of 64 MiB or more gets Go's default, and the heap goal is never more
// than 48 MiB above the default's. GOMEMLIMIT still applies on top.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultHeadroom is the headroom the data plane keeps above its live heap.
const DefaultHeadroom = 64 << 20

// The percent stays within Go's default and the value measured to help.
const (
	minPercent = 100
	maxPercent = 400
)

// Percent is the GC percent that leaves headroom bytes above a live heap
// of live bytes, between 100 and 400.
func Percent(live, headroom uint64) int {
	if live == 0 {
		return maxPercent
	}
	// Steps of 10, so that a live heap that wanders a little does not
	// change the percent at every collection.
	p := headroom * 100 / live / 10 * 10
	return int(max(minPercent, min(maxPercent, p)))
}

// A Tuner sets the GC percent after every collection. Make one with Start.
type Tuner struct {
	headroom uint64

	mu       sync.Mutex
	stopped  bool
	previous int // the percent in force before Start, restored by Stop
	percent  int // the percent the Tuner last set
	sample   []metrics.Sample
}

// sentinel is allocated per collection; its cleanup runs after the
// collection that finds it unreachable. The pointer keeps it out of the
// tiny allocator, whose batches could delay the cleanup indefinitely.
type sentinel struct {
	_ *byte
	_ [8]byte
}

// Start tunes the GC percent from now on, with headroom bytes above the
// live heap. It does nothing and returns nil when headroom is 0 or the
// environment sets GOGC (getenv is os.LookupEnv): an operator's GOGC wins.
func Start(headroom uint64, getenv func(string) (string, bool)) *Tuner {
	if headroom == 0 {
		return nil
	}
	if _, set := getenv("GOGC"); set {
		return nil
	}
	t := &Tuner{
		headroom: headroom,
		sample:   []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
	}
	t.percent = Percent(t.live(), headroom)
	t.previous = debug.SetGCPercent(t.percent)
	t.arm() // t is shared from here on
	return t
}

// Percent reports the GC percent the Tuner last set.
func (t *Tuner) Percent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.percent
}

// Stop ends the tuning and restores the percent that was in force before
// Start. A nil Tuner's Stop does nothing.
func (t *Tuner) Stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.previous)
	}
}

// arm allocates the sentinel for the next collection.
func (t *Tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *Tuner) { t.afterGC() }, t)
}

// afterGC runs on the cleanup goroutine after a collection.
func (t *Tuner) afterGC() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if p := Percent(t.live(), t.headroom); p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
	t.arm()
}

// live reads the heap the last collection marked live (0 before the first).
func (t *Tuner) live() uint64 {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return t.sample[0].Value.Uint64()
}
