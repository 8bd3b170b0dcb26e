//go:build !linux

package bench

import "time"

// processCPUClock is unavailable off Linux: the tick-rounded utime and stime
// are all there is.
func processCPUClock(int) (time.Duration, bool) { return 0, false }
