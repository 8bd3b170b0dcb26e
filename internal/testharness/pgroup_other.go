//go:build !unix

package testharness

import (
	"os"
	"os/exec"
)

// setProcessGroup does nothing where there are no Unix process groups.
func setProcessGroup(*exec.Cmd) {}

// killProcessGroup does nothing where there are no Unix process groups: the
// process itself is killed by the caller.
func killProcessGroup(*exec.Cmd) {}

func terminate(p *os.Process) error { return p.Kill() }
