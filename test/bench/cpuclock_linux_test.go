package bench

import (
	"syscall"
	"time"
	"unsafe"
)

// processCPUClock is the CPU time of process pid in nanoseconds, all its
// threads (live or exited) together: the kernel's scheduler clock
// (CPUCLOCK_SCHED) of the process, read with clock_gettime. Unlike utime and
// stime in /proc/PID/stat it is not rounded to clock ticks.
func processCPUClock(pid int) (time.Duration, bool) {
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) from the kernel's
	// include/linux/posix-timers.h: (~pid << 3) | 2.
	clock := ^int32(pid)<<3 | 2
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, uintptr(clock), uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
