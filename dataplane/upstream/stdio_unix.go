//go:build unix

package upstream

import (
	"os"
	"os/exec"
	"syscall"
)

// newProcessGroup makes cmd's process the leader of a new process group, so
// that stopping it stops the children it started too, and (Linux) has it
// signalled when the data plane dies.
func newProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	parentDeath(cmd.SysProcAttr)
}

// terminateGroup asks p's process group to stop (SIGTERM).
func terminateGroup(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGTERM) }

// killGroup kills what is left of p's process group (SIGKILL); ESRCH, when
// nothing is, is ignored.
func killGroup(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) }
