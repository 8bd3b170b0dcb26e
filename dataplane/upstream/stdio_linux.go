//go:build linux

package upstream

import "syscall"

// parentDeath asks the kernel to kill a stdio server (SIGKILL: it may ignore
// SIGTERM, as it may ignore its closed stdin) when the data plane dies, even
// by SIGKILL, which leaves it no chance to stop the server otherwise.
// (The signal is tied to the thread that started the process; the Go
// runtime does not end its threads while the process runs, but for
// goroutines that lock one and exit without unlocking it, which this
// package never does.)
func parentDeath(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
