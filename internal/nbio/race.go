//go:build linux && race

package nbio

import "syscall"

// The race detector learns of the order a socket creates (a write in one
// goroutine, then the read of those bytes in another) from annotations in
// package syscall's Read and Write, which raw system calls skip. Without
// them, memory written before a Write and read after the peer's Read is
// reported as a race. Under -race, a Conn makes the syscall package's
// zero-length calls beside its raw ones: they move no data and carry the
// annotations.

// raceAcquire follows a raw read that returned data.
func raceAcquire(fd uintptr) { _, _ = syscall.Read(int(fd), nil) }

// raceRelease precedes a raw write.
func raceRelease(fd uintptr) { _, _ = syscall.Write(int(fd), nil) }
