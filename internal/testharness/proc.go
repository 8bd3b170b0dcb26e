package testharness

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metamcp/metamcp/internal/syncbuf"
)

// StopTimeout bounds how long Stop waits for a process to end after SIGTERM
// before it kills the process group.
const StopTimeout = 15 * time.Second

// logLines is how much of a process's output a failed test logs.
const logLines = 100

// Proc is a process a test started, with its output captured. It is stopped
// when the test ends, and when the test failed the end of its output is
// logged.
type Proc struct {
	// Name says which process this is in failure messages.
	Name string
	// Cmd is the running command.
	Cmd *exec.Cmd
	// Output is everything the process wrote, stdout and stderr in the
	// order written; Stdout and Stderr hold each alone.
	Output, Stdout, Stderr *syncbuf.Buffer

	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// Start starts cmd in a process group of its own and returns it running. Its
// Stdout and Stderr must be unset: Start captures them. At the end of the
// test the process is stopped as Stop does, and the whole group killed so
// that no child it started outlives the test.
func Start(tb testing.TB, name string, cmd *exec.Cmd) *Proc {
	tb.Helper()
	if cmd.Stdout != nil || cmd.Stderr != nil {
		tb.Fatalf("testharness.Start %s: Stdout and Stderr must be unset", name)
	}
	p := &Proc{
		Name:   name,
		Cmd:    cmd,
		Output: &syncbuf.Buffer{},
		Stdout: &syncbuf.Buffer{},
		Stderr: &syncbuf.Buffer{},
		done:   make(chan struct{}),
	}
	cmd.Stdout = io.MultiWriter(p.Stdout, p.Output)
	cmd.Stderr = io.MultiWriter(p.Stderr, p.Output)
	setProcessGroup(cmd)
	if cmd.WaitDelay == 0 {
		// A child that inherited the output pipes must not keep Wait (and
		// with it the test) from returning once the process has ended.
		cmd.WaitDelay = 2 * time.Second
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Stop(tb)
		killProcessGroup(cmd)
		if tb.Failed() {
			tb.Logf("%s output (%v):\n%s", name, p.waitErr, Tail(p.Output.String(), logLines))
		}
	})
	return p
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is what Wait returned; valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.waitErr
}

// ExitCode is the process's exit code once it has ended: -1 when a signal
// ended it.
func (p *Proc) ExitCode() int {
	<-p.done
	return p.Cmd.ProcessState.ExitCode()
}

// Wait waits for the process to end, failing the test when it does not
// within timeout, and returns what Wait returned.
func (p *Proc) Wait(tb testing.TB, timeout time.Duration) error {
	tb.Helper()
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		tb.Fatalf("%s did not exit within %v; its output:\n%s", p.Name, timeout, Tail(p.Output.String(), logLines))
		return nil
	}
}

// Terminate sends the process SIGTERM (on Windows, which has no signals, it
// kills it), waits for it to end (failing the test after timeout) and
// returns its exit code.
func (p *Proc) Terminate(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	if !p.Exited() {
		if err := terminate(p.Cmd.Process); err != nil && !p.Exited() {
			tb.Fatalf("signal %s: %v", p.Name, err)
		}
	}
	_ = p.Wait(tb, timeout)
	return p.Cmd.ProcessState.ExitCode()
}

// Stop ends the process as an operator would, with SIGTERM, and waits for it;
// when it has not ended after StopTimeout it fails the test and kills the
// process group. Safe to call more than once and after the process ended.
func (p *Proc) Stop(tb testing.TB) {
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		_ = terminate(p.Cmd.Process)
		select {
		case <-p.done:
		case <-time.After(StopTimeout):
			tb.Errorf("%s did not stop within %v of SIGTERM; killing it", p.Name, StopTimeout)
			killProcessGroup(p.Cmd)
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
	})
}

// Kill ends the process at once with SIGKILL, as a crash would (its children
// are left to notice), and waits for it.
func (p *Proc) Kill(tb testing.TB) {
	tb.Helper()
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		tb.Fatalf("%s did not exit within %v of SIGKILL", p.Name, StopTimeout)
	}
}

// failIfExited fails the test, with the process's output, when it has ended.
func (p *Proc) failIfExited(tb testing.TB, what string) {
	tb.Helper()
	if p.Exited() {
		tb.Fatalf("%s exited (%v) before %s; its output:\n%s", p.Name, p.waitErr, what, Tail(p.Output.String(), logLines))
	}
}

// Await waits until cond holds for the process's output so far, woken by
// each write rather than on a timer; it fails the test when the process ends
// first or timeout passes. what names the awaited state in failures.
func (p *Proc) Await(tb testing.TB, what string, timeout time.Duration, cond func(output string) bool) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		// Taken before reading, so a write in between wakes the next wait.
		changed := p.Output.Changed()
		if cond(p.Output.String()) {
			return
		}
		select {
		case <-changed:
		case <-p.done:
			// The last writes may have come with the exit.
			if cond(p.Output.String()) {
				return
			}
			p.failIfExited(tb, what)
		case <-timer.C:
			tb.Fatalf("%s: no %s within %v; its output:\n%s", p.Name, what, timeout, Tail(p.Output.String(), logLines))
		}
	}
}

// AwaitMatch waits (as Await) until re matches the process's output and
// returns the first match and its submatches.
func (p *Proc) AwaitMatch(tb testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	tb.Helper()
	var m []string
	p.Await(tb, fmt.Sprintf("output matching %q", re), timeout, func(out string) bool {
		m = re.FindStringSubmatch(out)
		return m != nil
	})
	return m
}

// Leftovers waits (bounded by timeout) until no process runs with exactly
// the command line args, and returns the pids of those still running then:
// none when they all went. It reads /proc, so where there is none it finds
// nothing. It is for checking that a program stopped the children it
// started; processes of other tests with the same command line count too.
func Leftovers(timeout time.Duration, args ...string) []string {
	want := strings.Join(args, "\x00") + "\x00"
	var found []string
	_ = Poll(timeout, func() error {
		found = found[:0]
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(d, "cmdline")); err == nil && string(b) == want {
				found = append(found, filepath.Base(d))
			}
		}
		if len(found) > 0 {
			return fmt.Errorf("still running: %v", found)
		}
		return nil
	})
	return found
}
