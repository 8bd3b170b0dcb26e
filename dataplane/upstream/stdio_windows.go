package upstream

import (
	"os"
	"os/exec"
)

// Windows has no process groups to signal and no SIGTERM: a stdio server
// that does not exit when its stdin closes is terminated, after the same
// grace period as elsewhere. Processes it started itself are not stopped
// with it. This is enough for `metamcp dev` on a workstation; run data
// planes with stdio servers on Linux.

// newProcessGroup does nothing on Windows.
func newProcessGroup(*exec.Cmd) {}

// terminateGroup terminates p: Windows has nothing gentler to send it.
func terminateGroup(p *os.Process) { _ = p.Kill() }

// killGroup terminates p, if it still runs.
func killGroup(p *os.Process) { _ = p.Kill() }
