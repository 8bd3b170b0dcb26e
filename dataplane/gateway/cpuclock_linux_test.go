package gateway

import (
	"syscall"
	"time"
	"unsafe"
)

// processCPU is this process's CPU time, all threads together (the
// scheduler clock, CLOCK_PROCESS_CPUTIME_ID), or false where unknown.
func processCPU() (time.Duration, bool) {
	const clockProcessCPUTimeID = 2
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockProcessCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
