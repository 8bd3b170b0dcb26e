package testharness

import (
	"fmt"
	"testing"
	"time"
)

// Poll calls cond until it returns nil or timeout passes, and returns cond's
// last error then. It polls at a bounded rate: every 10 ms at first, backing
// off to every 100 ms, so a quick change is seen quickly and a slow one does
// not spin. It suits goroutines, which must not fail a test themselves.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		time.Sleep(min(interval, left))
		interval = min(2*interval, 100*time.Millisecond)
	}
}

// Eventually waits until cond returns nil, failing the test with cond's
// last error when timeout passes first. cond says what it waits for in its
// error, as a failure message would. cond may fail the test itself (for
// instance when a process it waits on has exited).
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	if err := Poll(timeout, cond); err != nil {
		tb.Fatal(err)
	}
}
