// Package nbio reads and writes TCP connections with raw system calls, so
// that the data plane's hot path does not wake the Go runtime's sysmon
// thread on every request.
//
// The net package makes each read and write on a socket through the
// runtime's blocking-syscall bookkeeping (entersyscall). That bookkeeping
// lets a call that blocks give its P to another thread. A read or write on
// a non-blocking socket never blocks, but each entry still wakes sysmon
// when it sleeps because every P was idle, and sysmon then polls every
// 20 µs until the Ps are idle again. Under a proxy's load, whose Ps go idle
// between bursts, that cycle repeats about once per request. Measured on
// the data plane at 32 clients, the sysmon thread took about 17% of the
// process's CPU time, none of it visible in a pprof profile
// (golang/go#18236 reports the same for HTTP servers).
//
// A Conn waits for readiness through the connection's syscall.RawConn,
// exactly as the net package does: deadlines, Close and the poller behave
// the same. Only the read or write itself is a raw system call.
package nbio

import "errors"

// ErrWouldBlock is TryRead's error when nothing is there to read yet.
var ErrWouldBlock = errors.New("nbio: nothing to read yet")
