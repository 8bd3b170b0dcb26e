//go:build unix

package testharness

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup puts the process in a group of its own, so that a
// terminal's Ctrl-C does not reach it and its children can be killed with it.
func setProcessGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// killProcessGroup kills whatever is left of the process's group.
func killProcessGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
