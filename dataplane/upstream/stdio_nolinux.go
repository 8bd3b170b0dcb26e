//go:build unix && !linux

package upstream

import "syscall"

// parentDeath does nothing where there is no parent-death signal (macOS and
// the BSDs): a data plane killed there leaves its stdio servers running.
func parentDeath(*syscall.SysProcAttr) {}
