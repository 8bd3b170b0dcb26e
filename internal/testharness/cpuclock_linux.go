package testharness

import (
	"time"

	"golang.org/x/sys/unix"
)

// ProcessCPU is this process's CPU time, all threads together (the
// scheduler clock, CLOCK_PROCESS_CPUTIME_ID), or false where unknown:
// benchmarks report CPU per call with it, which wall time on a shared
// machine cannot give.
func ProcessCPU() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
